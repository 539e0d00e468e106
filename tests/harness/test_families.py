"""Other ViT families through their adapters (harness.families): the same decomposition, exact."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close
from transformers import CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTModel

from harness import BackboneInfo, DecomposingBackbone
from harness.decomposition import DEPTH_PREFIX
from harness.families import CLIPFamily, ViTFamily, family_for


def tiny_vit(attn_implementation: str = "sdpa", qkv_bias: bool = True) -> ViTModel:
    """A seeded random transformers ViT (DINO v1's layout) with non-trivial biases."""
    config = ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=4, qkv_bias=qkv_bias,
                       attn_implementation=attn_implementation)  # fmt: skip
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "token" in name:
                parameter.add_(0.5 * torch.randn_like(parameter))
    return model


def wrap_vit(model: ViTModel) -> DecomposingBackbone:
    config = model.config
    info = BackboneInfo("tiny-vit", "random", "", config.hidden_size, config.num_hidden_layers,
                        config.num_attention_heads, 0, config.patch_size, False, True)  # fmt: skip
    return DecomposingBackbone(model, info)


@pytest.mark.parametrize("qkv_bias", [True, False])
@torch.no_grad()
def test_vit_output_full_is_the_models_own_cls_output(qkv_bias: bool, pixels: Tensor) -> None:
    model = tiny_vit(qkv_bias=qkv_bias)
    backbone = wrap_vit(model)
    assert isinstance(backbone.family, ViTFamily)
    decomposition = backbone(pixels)  # 32 x 40: position embeddings interpolated, as the model does
    expected = model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]
    scale = float(expected.abs().max())
    assert_close(decomposition["output/full"], expected, atol=1e-5 * scale, rtol=0)
    assert float(decomposition.pooler_error) < 1e-5 * scale
    assert not any(name.startswith(("attention/register", "output/register")) for name in decomposition)
    bias = model.layers[-1].attention.o_proj.bias  # gamma = 1: the bias term is the bias
    groups = decomposition["attention/cls"] + decomposition["attention/patch"]
    assert_close(groups - bias, decomposition["attention/full"], atol=1e-5 * scale, rtol=0)


def block_states(model: ViTModel, pixels: Tensor) -> list[Tensor]:
    """The embeddings and every block's output, run block by block through transformers' modules."""
    states = [model.embeddings(pixels, interpolate_pos_encoding=True)]
    for block in model.layers:
        states.append(block(states[-1]))
    return states


def cls_attention_weights(block: nn.Module, block_input: Tensor) -> Tensor:
    """The block's eager softmax of the [CLS] query over all keys (batch, heads, tokens), from its own
    q/k projections."""
    attention = block.attention
    normed = block.layernorm_before(block_input)
    batch, tokens, _ = normed.shape
    query = attention.q_proj(normed[:, :1]).view(batch, 1, -1, attention.head_dim).transpose(1, 2)
    keys = attention.k_proj(normed).view(batch, tokens, -1, attention.head_dim).transpose(1, 2)
    return ((query @ keys.transpose(-1, -2)) * attention.scaling).softmax(-1)[:, :, 0]


@torch.no_grad()
def test_vit_split_is_its_own_attention_and_every_block_decomposes(pixels: Tensor) -> None:
    model = tiny_vit()
    backbone = wrap_vit(model)
    backbone.decompose_layers([1, 2, 3])
    decomposition = backbone(pixels)
    states = block_states(model, pixels)
    layout = decomposition.layout
    scale = float(states[-1].abs().max())
    for column, block in enumerate(model.layers):
        weights = cls_attention_weights(block, states[column])
        for group in ("cls", "patch"):
            mass = weights[:, :, layout.slice(group)].sum(-1).mean(1)
            assert_close(decomposition[f"{DEPTH_PREFIX}split/{group}"][:, column], mass, atol=1e-6, rtol=0)
        skip_cosine = nn.functional.cosine_similarity(
            states[column][:, 0] + block.mlp(block.layernorm_after(states[column][:, 0])),
            states[column + 1][:, 0],
        )
        assert_close(decomposition[f"{DEPTH_PREFIX}cosine/skip"][:, column], skip_cosine, atol=1e-5, rtol=0)
    assert_close(decomposition["split/patch"], decomposition[f"{DEPTH_PREFIX}split/patch"][:, -1])
    assert float(decomposition.pooler_error) < 1e-5 * scale  # every block's rebuilt [CLS] output too


@torch.no_grad()
def test_vit_deletion_and_compiled_blocks(pixels: Tensor) -> None:
    backbone = wrap_vit(tiny_vit())
    expected = backbone(pixels)
    backbone.enable_deletion((0.25, 0.5))
    backbone.compile_blocks("eager")
    got = backbone(pixels)
    for name, tensor in expected.items():
        assert_close(got[name], tensor, atol=1e-5 * (float(tensor.abs().max()) or 1.0), rtol=0, msg=name)
    assert got["deletion/top"].shape == (3, 2)


def test_an_unknown_model_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"Linear is not a supported ViT \(Dinov2Model, .*ViTModel, CLIPVisionModel\)"
    ):
        family_for(nn.Linear(2, 2))


def tiny_clip() -> CLIPVisionModel:
    """A seeded random transformers CLIP image tower with non-trivial biases."""
    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=64, image_size=32, patch_size=4)  # fmt: skip
    torch.manual_seed(0)
    model = CLIPVisionModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "embedding" in name:
                parameter.add_(0.5 * torch.randn_like(parameter))
    return model


@torch.no_grad()
def test_clip_output_full_split_and_every_block(pixels: Tensor) -> None:
    """CLIP's pooled output (post_layernorm of [CLS]) is output/full; every block's split is the [CLS]
    softmax of its own q/k projections after pre_layrnorm; deletion and compiled blocks agree."""
    model = tiny_clip()
    info = BackboneInfo("tiny-clip", "random", "", 32, 3, 4, 0, 4, False, True, family="clip")
    backbone = DecomposingBackbone(model, info)
    assert isinstance(backbone.family, CLIPFamily)
    backbone.decompose_layers([1, 2, 3])
    decomposition = backbone(pixels)
    expected = model(pixel_values=pixels, interpolate_pos_encoding=True).pooler_output
    scale = float(expected.abs().max())
    assert_close(decomposition["output/full"], expected, atol=1e-5 * scale, rtol=0)
    assert float(decomposition.pooler_error) < 1e-5 * scale
    bias = model.encoder.layers[-1].self_attn.out_proj.bias
    groups = decomposition["attention/cls"] + decomposition["attention/patch"]
    assert_close(groups - bias, decomposition["attention/full"], atol=1e-5 * scale, rtol=0)
    state = model.pre_layrnorm(model.embeddings(pixels, interpolate_pos_encoding=True))
    assert_close(decomposition["hidden/cls"][:, 0], state[:, 0])  # the sequence entering block 1
    layout = decomposition.layout
    for column, block in enumerate(model.encoder.layers):
        attention = block.self_attn
        normed = block.layer_norm1(state)
        batch, tokens, _ = normed.shape
        query = attention.q_proj(normed[:, :1]).view(batch, 1, -1, attention.head_dim).transpose(1, 2)
        keys = attention.k_proj(normed).view(batch, tokens, -1, attention.head_dim).transpose(1, 2)
        weights = ((query @ keys.transpose(-1, -2)) * attention.scale).softmax(-1)[:, :, 0]
        mass = weights[:, :, layout.slice("patch")].sum(-1).mean(1)
        assert_close(decomposition[f"{DEPTH_PREFIX}split/patch"][:, column], mass, atol=1e-6, rtol=0)
        state = block(state, None)
    backbone.enable_deletion((0.5,))
    backbone.compile_blocks("eager")
    again = backbone(pixels)
    assert_close(again["output/full"], decomposition["output/full"], atol=1e-5 * scale, rtol=0)
    assert again["deletion/top"].shape == (3, 1)
