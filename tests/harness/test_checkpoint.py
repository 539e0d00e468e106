"""Original-format DINOv2 checkpoints (keys as in facebookresearch/dinov2) load to the same numbers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import load_backbone
from harness.errors import CheckpointFormatError
from tests.conftest import ARCHITECTURES, tiny_model, wrap


def to_original_format(model: nn.Module, chunks: int = 0) -> dict[str, Tensor]:
    """The state dict dinov2's `DinoVisionTransformer` would hold for this HF model."""
    hf = model.state_dict()
    config = model.config
    state = {
        "cls_token": hf["embeddings.cls_token"],
        "mask_token": hf["embeddings.mask_token"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    if "embeddings.register_tokens" in hf:
        state["register_tokens"] = hf["embeddings.register_tokens"]
    per_chunk = -(-config.num_hidden_layers // chunks) if chunks else 0
    for i in range(config.num_hidden_layers):
        src = f"encoder.layer.{i}."
        dst = f"blocks.{i // per_chunk}.{i}." if chunks else f"blocks.{i}."
        for kind in ("weight", "bias"):
            state[f"{dst}attn.qkv.{kind}"] = torch.cat(
                [hf[f"{src}attention.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0
            )
            state[f"{dst}attn.proj.{kind}"] = hf[f"{src}attention.o_proj.{kind}"]
            state[f"{dst}norm1.{kind}"] = hf[f"{src}norm1.{kind}"]
            state[f"{dst}norm2.{kind}"] = hf[f"{src}norm2.{kind}"]
            if config.use_swiglu_ffn:
                state[f"{dst}mlp.w12.{kind}"] = torch.cat(
                    [hf[f"{src}mlp.gate_proj.{kind}"], hf[f"{src}mlp.up_proj.{kind}"]], dim=0
                )
                state[f"{dst}mlp.w3.{kind}"] = hf[f"{src}mlp.down_proj.{kind}"]
            else:
                state[f"{dst}mlp.fc1.{kind}"] = hf[f"{src}mlp.fc1.{kind}"]
                state[f"{dst}mlp.fc2.{kind}"] = hf[f"{src}mlp.fc2.{kind}"]
        state[f"{dst}ls1.gamma"] = hf[f"{src}layer_scale1.lambda1"]
        state[f"{dst}ls2.gamma"] = hf[f"{src}layer_scale2.lambda1"]
    return {k: v.clone() for k, v in state.items()}


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_original_checkpoint_gives_the_same_outputs(registers: int, swiglu: bool, tmp_path: Path) -> None:
    # width 128 = 2 heads of 64, as every DINOv2 model has
    model = tiny_model(registers, swiglu, hidden=128, heads=2, layers=3, patch=4, image=32)
    path = tmp_path / "dinov2_test_pretrain.pth"
    torch.save(to_original_format(model), path)
    loaded = load_backbone(path, pos_interpolation="hf")  # the conversion alone; resizing: test_positions
    assert loaded.info.source == "checkpoint"
    assert (loaded.info.num_registers, loaded.info.swiglu, loaded.info.num_layers) == (registers, swiglu, 3)
    assert loaded.info.num_heads == 2 and loaded.info.patch_size == 4
    pixels = torch.randn(2, 3, 32, 36)
    assert_close(loaded.model(pixel_values=pixels).pooler_output, model(pixel_values=pixels).pooler_output)
    expected, got = wrap(model)(pixels), loaded(pixels)
    for name in expected:
        assert_close(got[name], expected[name], msg=name)


def test_chunked_training_checkpoint_with_teacher_wrapper(tmp_path: Path) -> None:
    model = tiny_model(4, True, hidden=64, heads=1, layers=4)
    state = {f"backbone.{k}": v for k, v in to_original_format(model, chunks=2).items()}
    state["dino_head.mlp.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "train.pth"
    torch.save({"teacher": state}, path)
    loaded = load_backbone(path)
    pixels = torch.randn(1, 3, 32, 32)
    assert_close(loaded.model(pixel_values=pixels).pooler_output, model(pixel_values=pixels).pooler_output)


def test_heads_override_for_narrow_test_models(tmp_path: Path) -> None:
    model = tiny_model(0, False, hidden=32, heads=4)
    path = tmp_path / "narrow.pth"
    torch.save(to_original_format(model), path)
    with pytest.raises(CheckpointFormatError, match="width 32 is narrower than one head of 64"):
        load_backbone(path)
    pixels = torch.randn(1, 3, 32, 32)
    loaded = load_backbone(path, num_heads=4, pos_interpolation="hf")
    assert_close(loaded.model(pixel_values=pixels).pooler_output, model(pixel_values=pixels).pooler_output)


def test_foreign_and_broken_files_are_refused(tmp_path: Path) -> None:
    state = to_original_format(tiny_model(0, False, hidden=64, heads=1))
    state["blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointFormatError, match=r"unexpected tensor 'blocks\.0\.attn\.extra'"):
        load_backbone(tmp_path / "extra.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointFormatError, match="no 'cls_token' tensor"):
        load_backbone(tmp_path / "other.pth")
    torch.save(
        {"teacher": {}, "args": Path("an object a weights-only load refuses")}, tmp_path / "pickled.pth"
    )
    with pytest.raises(
        CheckpointFormatError, match=r"cannot read .* as a weights-only torch checkpoint: \S"
    ) as refused:
        load_backbone(tmp_path / "pickled.pth")
    assert "\n" not in str(refused.value)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="cannot read"):
        load_backbone(tmp_path / "garbage.pth")


@pytest.mark.parametrize("wrapper", ["bare", "teacher"])
def test_dino_v1_and_ibot_checkpoints_load_as_plain_vits(wrapper: str, tmp_path: Path) -> None:
    """DINO v1 / iBOT checkpoints (the same `blocks.N.attn.qkv` layout, no layer scale; training
    checkpoints wrap the teacher with `backbone.` and carry a head) give timm's ViT of the same weights,
    an independent implementation, and are recorded as family dino."""
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, embed_dim=128,
                                  num_heads=2, img_size=32, patch_size=8, num_classes=0).eval()  # fmt: skip
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith("bias") or "token" in name or "pos_embed" in name:
                parameter.add_(0.5 * torch.randn_like(parameter))
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    state["masked_embed"] = torch.zeros(1, 128)  # iBOT's mask token
    if wrapper == "teacher":
        state = {f"backbone.{k}": v for k, v in state.items()} | {"head.last_layer.weight": torch.zeros(2, 2)}
        # as main_dino.py / main_ibot.py save it: student and teacher, the optimiser, the loss's
        # center, the epoch and the command-line arguments (an argparse.Namespace)
        state = {"student": {f"module.{k}": v for k, v in state.items()}, "teacher": state,
                 "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, "epoch": 100,
                 "dino_loss": {"center": torch.zeros(1, 2)},
                 "args": argparse.Namespace(arch="vit_small", patch_size=8, out_dim=2)}  # fmt: skip
    path = tmp_path / "dino_deitsmall8_pretrain.pth"
    torch.save(state, path)
    loaded = load_backbone(path)
    info = loaded.info
    assert (info.family, info.num_layers, info.num_heads, info.patch_size) == ("dino", 2, 2, 8)
    assert info.pos_interpolation == "original"
    assert info.preprocessing.resize_ratio == 256 / 224  # DINO's evaluation
    pixels = torch.randn(2, 3, 32, 32)  # the native grid: no position resize on either side
    with torch.no_grad():
        expected = reference(pixels)
    decomposition = loaded(pixels)
    assert_close(decomposition["output/full"], expected, atol=1e-5 * float(expected.abs().max()), rtol=0)
