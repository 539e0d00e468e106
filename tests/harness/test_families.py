"""Other ViT families through their adapters (harness.families): the same decomposition, exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    ViTConfig,
    ViTModel,
)

from common.preparation import Preprocessing
from harness import BackboneInfo, DecomposingBackbone, Decomposition
from harness.decomposition import DEPTH_PREFIX
from harness.extras import Deletion, Depth
from harness.families import CLIPFamily, Dinov3Family, TimmFamily, ViTFamily, family_for
from tests.families import perturbed


def tiny_deit() -> nn.Module:
    """A seeded random transformers DeiT (distilled: [CLS], distillation token, patches) with
    non-trivial biases and tokens."""
    from transformers import DeiTConfig, DeiTModel

    config = DeiTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                        image_size=32, patch_size=4)  # fmt: skip
    torch.manual_seed(0)
    return perturbed(DeiTModel(config, add_pooling_layer=False), seed=0)


def tiny_vit(attn_implementation: str = "sdpa", qkv_bias: bool = True) -> ViTModel:
    """A seeded random transformers ViT (DINO v1's layout) with non-trivial biases."""
    config = ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=4, qkv_bias=qkv_bias,
                       attn_implementation=attn_implementation)  # fmt: skip
    torch.manual_seed(0)
    return perturbed(ViTModel(config, add_pooling_layer=False), seed=0)


def wrap(model: nn.Module, family: str, registers: int = 0) -> DecomposingBackbone:
    """`model` as the harness loads it (its family's architecture, random weights; frozen, in eval
    mode)."""
    architecture = family_for(model).architecture()
    assert architecture["num_registers"] == registers
    info = BackboneInfo(f"tiny-{family}", "random", "", **architecture, random_weights=True, family=family)
    return DecomposingBackbone(model.eval().requires_grad_(False), info)


@pytest.mark.parametrize("qkv_bias", [True, False])
@torch.no_grad()
def test_vit_output_full_is_the_models_own_cls_output(qkv_bias: bool, pixels: Tensor) -> None:
    model = tiny_vit(qkv_bias=qkv_bias)
    backbone = wrap(model, "vit")
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
    backbone = wrap(model, "vit")
    decomposition = backbone(pixels, extras=[Depth((1, 2, 3))])
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
    backbone = wrap(tiny_vit(), "vit")
    expected = backbone(pixels)
    got = backbone.compiling("eager")(pixels, torch.arange(len(pixels)), extras=[Deletion((0.25, 0.5))])
    for name, tensor in expected.items():
        assert_close(got[name], tensor, atol=1e-5 * (float(tensor.abs().max()) or 1.0), rtol=0, msg=name)
    assert got["deletion/top"].shape == (3, 2)


def test_an_unknown_model_is_named() -> None:
    every = (
        r"\(Dinov2Model, .*DINOv3ViTModel, ViTModel, DeiTModel, CLIP.*, SiglipVisionModel, "
        r".*Aimv2VisionModel, .*VisionTransformer, Eva, NaFlexVit, open_clip .*\)"
    )
    with pytest.raises(ValueError, match=r"Linear is not a supported ViT " + every):
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
    decomposition = backbone(pixels, extras=[Depth((1, 2, 3))])
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
    again = backbone.compiling("eager")(
        pixels, torch.arange(len(pixels)), extras=[Depth((1, 2, 3)), Deletion((0.5,))]
    )
    assert_close(again["output/full"], decomposition["output/full"], atol=1e-5 * scale, rtol=0)
    assert again["deletion/top"].shape == (3, 1)


def tiny_dinov3(attn_implementation: str = "sdpa", **overrides: Any) -> DINOv3ViTModel:
    """A seeded random transformers DINOv3 ViT (4 registers, RoPE, layer scale) with non-trivial
    biases, tokens and layer scales."""
    settings: dict[str, Any] = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=32,
        patch_size=4, num_register_tokens=4, attn_implementation=attn_implementation,
    )  # fmt: skip
    config = DINOv3ViTConfig(**(settings | overrides))
    torch.manual_seed(0)
    return perturbed(DINOv3ViTModel(config), seed=0)


@pytest.mark.parametrize(
    "overrides", [{}, {"use_gated_mlp": True, "key_bias": True}, {"num_register_tokens": 0}]
)
@torch.no_grad()
def test_dinov3_output_full_and_split_are_the_models_own(overrides: dict[str, Any], pixels: Tensor) -> None:
    """output/full is DINOv3's pooled output; every block's split is the model's own eager [CLS]
    attention row (RoPE applied to the patch keys as the model applies it); the zeroed variants sum to
    full with the bias term once."""
    model = tiny_dinov3("eager", **overrides)
    registers = model.config.num_register_tokens
    backbone = wrap(model, "dinov3", registers)
    assert isinstance(backbone.family, Dinov3Family)
    decomposition = backbone(pixels, extras=[Depth((1, 2, 3))])
    own = model(pixel_values=pixels, output_attentions=True)
    scale = float(own.pooler_output.abs().max())
    assert_close(decomposition["output/full"], own.pooler_output, atol=1e-5 * scale, rtol=0)
    assert float(decomposition.pooler_error) < 1e-5 * scale
    layout = decomposition.layout
    assert layout.num_registers == registers
    for column, attentions in enumerate(own.attentions):
        for group in ("cls", "register", "patch"):
            mass = attentions[:, :, 0, layout.slice(group)].sum(-1).mean(1)
            if group != "register" or registers:
                got = decomposition[f"{DEPTH_PREFIX}split/{group}"][:, column]
                assert_close(got, mass, atol=1e-6, rtol=0, msg=f"block {column + 1} {group}")
            if column == len(own.attentions) - 1:
                assert_close(decomposition[f"split/{group}"], mass, atol=1e-6, rtol=0)
    last = model.model.layer[-1]
    bias = last.layer_scale1.lambda1 * last.attention.o_proj.bias
    present = [g for g in ("cls", "register", "patch") if g != "register" or registers]
    groups = sum(decomposition[f"attention/{g}"] for g in present)
    full = decomposition["attention/full"]
    assert_close(groups - (len(present) - 1) * bias, full, atol=1e-5 * scale, rtol=0)


def top_deleted_mask(decomposition: Decomposition, fraction: float) -> Tensor:
    """An additive key mask (batch, 1, 1, tokens): -inf on the `fraction` of patches the [CLS] attention
    map ranks highest (what `--probe deletion` deletes first), 0 elsewhere."""
    layout = decomposition.layout
    order = decomposition["map/attention"].flatten(1).argsort(dim=1, descending=True, stable=True)
    deleted = order[:, : round(fraction * layout.num_patches)] + layout.slice("patch").start
    mask = torch.zeros(order.shape[0], 1, 1, layout.num_tokens)
    return mask.scatter_(3, deleted[:, None, None, :], float("-inf"))


@torch.no_grad()
def test_dinov3_deletion_equals_masking_the_deleted_keys(pixels: Tensor) -> None:
    """Deleting patches from a RoPE model keeps every kept patch's own rotation: the pooled output equals
    the full sequence run with the deleted patches' keys masked in every block."""
    model = tiny_dinov3("eager")
    backbone = wrap(model, "dinov3", 4)
    decomposition = backbone(pixels, torch.arange(len(pixels)), extras=[Deletion((0.5,))])
    mask = top_deleted_mask(decomposition, 0.5)
    state = model.embeddings(pixels)
    rope = model.rope_embeddings(pixels)
    for block in model.model.layer:
        state = block(state, attention_mask=mask, position_embeddings=rope)
    masked = model.norm(state)[:, 0]
    expected = nn.functional.cosine_similarity(masked, model(pixel_values=pixels).pooler_output)
    assert_close(decomposition["deletion/top"][:, 0], expected, atol=1e-5, rtol=0)
    compiled = backbone.compiling("eager")
    assert_close(
        compiled(pixels, torch.arange(len(pixels)), extras=[Deletion((0.5,))])["deletion/top"],
        decomposition["deletion/top"],
        atol=1e-5,
        rtol=0,
    )


def tiny_timm(**overrides: Any) -> nn.Module:
    """A seeded random timm VisionTransformer (dynamic image size) with non-trivial biases, tokens and
    layer scales."""
    import timm

    settings: dict[str, Any] = dict(depth=3, embed_dim=32, num_heads=4, img_size=32, patch_size=4,
                                    dynamic_img_size=True)  # fmt: skip
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, **(settings | overrides))
    return perturbed(model, seed=0)


TIMM_VARIANTS = {
    "plain": {},
    "deit3": {"init_values": 0.5, "no_embed_class": True},  # DeiT III: layer scale, no [CLS] position
    "registers": {"init_values": 0.5, "reg_tokens": 4, "fc_norm": True},
    "qk_norm": {"qk_norm": True, "qkv_bias": False},
}


@pytest.mark.parametrize("variant", TIMM_VARIANTS)
@torch.no_grad()
def test_timm_output_full_split_and_every_block(variant: str, pixels: Tensor) -> None:
    """A timm ViT's pre-logits output is output/full; every block's split is the [CLS] softmax computed
    here from its fused qkv projection (q_norm / k_norm applied); the zeroed variants sum to full with
    the bias term once; hidden/cls starts after norm_pre."""
    model = tiny_timm(**TIMM_VARIANTS[variant])
    registers = model.num_reg_tokens
    backbone = wrap(model, "timm", registers)
    decomposition = backbone(pixels, extras=[Depth((1, 2, 3))])
    expected = model.forward_head(model.forward_features(pixels), pre_logits=True)
    scale = float(expected.abs().max())
    assert_close(decomposition["output/full"], expected, atol=1e-5 * scale, rtol=0)
    assert float(decomposition.pooler_error) < 1e-5 * scale
    state = model.norm_pre(model._pos_embed(model.patch_embed(pixels)))
    assert_close(decomposition["hidden/cls"][:, 0], state[:, 0])
    layout = decomposition.layout
    present = [g for g in ("cls", "register", "patch") if g != "register" or registers]
    for column, block in enumerate(model.blocks):
        attention = block.attn
        qkv = attention.qkv(block.norm1(state)).unflatten(-1, (3, attention.num_heads, -1))
        query, keys = attention.q_norm(qkv[:, :1, 0]), attention.k_norm(qkv[:, :, 1])
        weights = torch.einsum("bqhd,bkhd->bhqk", query, keys).mul(attention.scale).softmax(-1)[:, :, 0]
        for group in present:
            mass = weights[:, :, layout.slice(group)].sum(-1).mean(1)
            got = decomposition[f"{DEPTH_PREFIX}split/{group}"][:, column]
            assert_close(got, mass, atol=1e-6, rtol=0, msg=f"block {column + 1} {group}")
        state = block(state)
    last = model.blocks[-1]
    gamma = last.ls1.gamma if hasattr(last.ls1, "gamma") else 1.0
    bias = gamma * last.attn.proj.bias
    groups = sum(decomposition[f"attention/{g}"] for g in present)
    full = decomposition["attention/full"]
    assert_close(groups - (len(present) - 1) * bias, full, atol=1e-5 * scale, rtol=0)


@torch.no_grad()
def test_timm_deletion_equals_masking_and_compiled_blocks_agree(pixels: Tensor) -> None:
    model = tiny_timm(**TIMM_VARIANTS["registers"])
    backbone = wrap(model, "timm", 4)
    decomposition = backbone(pixels, torch.arange(len(pixels)), extras=[Deletion((0.25,))])
    mask = top_deleted_mask(decomposition, 0.25)
    masked = model.forward_head(model.forward_features(pixels, attn_mask=mask), pre_logits=True)
    own = model.forward_head(model.forward_features(pixels), pre_logits=True)
    expected = nn.functional.cosine_similarity(masked, own)
    assert_close(decomposition["deletion/top"][:, 0], expected, atol=1e-5, rtol=0)
    again = backbone.compiling("eager")(pixels, torch.arange(len(pixels)), extras=[Deletion((0.25,))])
    for name, tensor in decomposition.items():
        assert_close(again[name], tensor, atol=1e-5 * (float(tensor.abs().max()) or 1.0), rtol=0, msg=name)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"global_pool": "max"}, "pools with 'max'"),
        ({"global_pool": "avg", "pool_include_prefix": True}, "a mean that takes the prefix tokens in"),
        ({"block_fn": "ResPostBlock"}, "ResPostBlock blocks"),
    ],
)
def test_timm_models_the_decomposition_cannot_read_are_named(overrides: dict[str, Any], problem: str) -> None:
    from timm.models.vision_transformer import ResPostBlock

    if overrides.get("block_fn") == "ResPostBlock":
        overrides = {"block_fn": ResPostBlock}
    with pytest.raises(ValueError, match=f"VisionTransformer \\(.*{problem}.*\\) is not a supported ViT"):
        family_for(tiny_timm(**overrides))


@torch.no_grad()
def test_clip_projection_is_a_third_readout(pixels: Tensor) -> None:
    """With CLIP's visual_projection, projection/full is the model's own image embedding and every
    projection/{variant} is the projection of output/{variant}."""
    from transformers import CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, image_size=32, patch_size=4,
                              projection_dim=24)  # fmt: skip
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(config).eval()
    backbone = wrap(model, "clip")
    assert backbone.info.projection_dim == 24
    decomposition = backbone(pixels)
    embeds = model(pixel_values=pixels, interpolate_pos_encoding=True).image_embeds
    assert_close(decomposition["projection/full"], embeds, atol=1e-5 * float(embeds.abs().max()), rtol=0)
    projected = [v for v in decomposition.variants if v.startswith("projection/")]
    assert len(projected) == len([v for v in decomposition.variants if v.startswith("output/")]) == 6
    for name in projected:
        output = decomposition[name.replace("projection/", "output/")]
        assert_close(decomposition[name], output @ model.visual_projection.weight.T, msg=name)
    assert "projection/full" not in wrap(tiny_clip(), "clip")(pixels)


@torch.no_grad()
def test_a_distilled_deit_has_its_own_distillation_group(pixels: Tensor) -> None:
    """DeiT's distillation token (position 1) is its own group: its split share is the [CLS] softmax mass
    on it from the block's own q/k projections, its zeroed variant is the attention output from its
    value alone, and [CLS] + distillation + patch shares sum to 1."""
    model = tiny_deit()
    backbone = wrap(model, "deit")
    assert backbone.info.num_distillation == 1
    decomposition = backbone(pixels, extras=[Depth((1, 2, 3))])
    layout = decomposition.layout
    assert layout.groups == ("cls", "distillation", "patch") and layout.slice("distillation") == slice(1, 2)
    expected = model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]
    scale = float(expected.abs().max())
    assert_close(decomposition["output/full"], expected, atol=1e-5 * scale, rtol=0)
    assert float(decomposition.pooler_error) < 1e-5 * scale
    state = model.embeddings(pixels, interpolate_pos_encoding=True)
    for column, block in enumerate(model.layers):
        weights = cls_attention_weights(block, state)
        for group in layout.groups:
            mass = weights[:, :, layout.slice(group)].sum(-1).mean(1)
            got = decomposition[f"{DEPTH_PREFIX}split/{group}"][:, column]
            assert_close(got, mass, atol=1e-6, rtol=0, msg=f"block {column + 1} {group}")
        if column < len(model.layers) - 1:
            state = block(state)
    values = model.layers[-1].attention.v_proj(model.layers[-1].layernorm_before(state))
    heads = weights.shape[1]
    per_head = values[:, 1].view(-1, heads, 32 // heads) * weights[:, :, 1:2]  # the distillation token alone
    own = model.layers[-1].attention.o_proj(per_head.flatten(1))
    assert_close(decomposition["attention/distillation"], own, atol=1e-5 * scale, rtol=0)
    total = sum(decomposition[f"split/{g}"] for g in ("cls", "distillation", "register", "patch"))
    assert_close(total, torch.ones_like(total))
    assert {"output/distillation", "output/distillation_renorm"} <= set(decomposition.variants)


def test_timm_preprocessing_follows_its_pretrained_config() -> None:
    """timm's pretrained config decides the preparation: crop_pct -> the resize ratio, "center" ->
    shorter side then crop, "squash" -> a square then crop; mean/std and interpolation as given."""
    center = TimmFamily(tiny_timm(pretrained_cfg_overlay={"crop_pct": 0.875, "interpolation": "bilinear"}))
    # vit_small_patch16_224's default tag (augreg) normalises with mean / std 0.5
    assert center.preparation() == Preprocessing(
        (0.5,) * 3, (0.5,) * 3, "shorter_crop", "bilinear", 1 / 0.875
    )
    squash = TimmFamily(tiny_timm(pretrained_cfg_overlay={"crop_pct": 0.9, "crop_mode": "squash"}))
    settings = squash.preparation()
    assert settings.resize == "square_crop"
    assert settings.resize_ratio == pytest.approx(1 / 0.9)


@pytest.mark.parametrize(
    "overlay", [{"crop_pct": 0.9, "interpolation": "bilinear"}, {"crop_pct": 0.95, "crop_mode": "squash"}]
)
def test_timm_images_are_prepared_as_timms_own_transform(overlay: dict[str, Any]) -> None:
    """The preparation read from a timm model's pretrained config gives the pixels of timm's own
    evaluation transform (`resolve_data_config` + `create_transform`) on a real, non-square photo."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform, resolve_data_config

    model = tiny_timm(pretrained_cfg_overlay=overlay | {"input_size": (3, 224, 224)})
    ours = TimmFamily(model).preparation()
    photo = Image.fromarray(load_sample_images().images[1])
    timms = create_transform(**resolve_data_config({}, model=model))
    assert_close(ours.transform(224)(photo), timms(photo), atol=1e-6, rtol=0)
