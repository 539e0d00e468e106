"""Weights that do not fit their model are refused in one line on every loading route (a
save_pretrained folder, a timm folder, an original .pth): nothing random hides inside a run that
records `random_weights: false`. Weights that fit load to the model's own numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.testing import assert_close
from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

from harness import load_backbone
from harness.errors import CheckpointFormatError, UnknownBackboneError
from tests.conftest import tiny_model
from tests.harness.test_checkpoint import to_original_format
from tests.harness.test_loading import tiny_timm_folder

State = dict[str, Tensor]
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def rewritten(folder: Path, change: Callable[[State], State]) -> Path:
    """`folder` with its model.safetensors replaced by `change` of its tensors."""
    weights = folder / "model.safetensors"
    save_file(change(load_file(str(weights))), str(weights), metadata={"format": "pt"})
    return folder


def dinov2_folder(folder: Path) -> Path:
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(**SMALL, image_size=28, patch_size=14)).save_pretrained(folder)
    return folder


def vit_state() -> State:
    """Tensors of another architecture (a ViT: layernorm_before, intermediate.dense) of the same width."""
    vit = ViTModel(ViTConfig(**SMALL, image_size=28, patch_size=14), add_pooling_layer=False)
    return {name: tensor.contiguous() for name, tensor in vit.state_dict().items()}


HF_CASES = {
    "missing": (lambda s: {k: v for k, v in s.items() if "layer.1." not in k}, "missing encoder.layer.1."),
    "wrapper-prefix": (lambda s: {f"backbone.{k}": v for k, v in s.items()}, "named under 'backbone.'"),
    "other-architecture": (lambda s: vit_state(), "unexpected layers.0.attention.k_proj.bias"),
    "wrong-shape": (
        lambda s: {**s, "encoder.layer.0.mlp.fc1.weight": torch.zeros(65, 32)},
        "of another shape encoder.layer.0.mlp.fc1.weight (checkpoint [65, 32], model [128, 32])",
    ),
}


@pytest.mark.parametrize("case", HF_CASES, ids=list(HF_CASES))
def test_a_folder_whose_weights_do_not_fit_is_refused(case: str, tmp_path: Path) -> None:
    change, message = HF_CASES[case]
    folder = rewritten(dinov2_folder(tmp_path / case), change)
    with pytest.raises(CheckpointFormatError, match=r"its weights do not fit|wrapper") as refused:
        load_backbone(folder)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_truncated_weight_file_is_one_line(tmp_path: Path) -> None:
    folder = dinov2_folder(tmp_path / "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointFormatError, match="cannot read its weights"):
        load_backbone(folder)


def test_what_a_family_leaves_out_on_purpose_is_no_misfit(tmp_path: Path) -> None:
    """A ViT saved with its tanh pooler loads without it (the pooler is not the readout), to the
    model's own numbers."""
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(**SMALL, image_size=28, patch_size=14)).eval()  # with the pooler
    vit.save_pretrained(tmp_path / "vit")
    loaded = load_backbone(tmp_path / "vit")
    pixels = torch.randn(2, 3, 28, 28)
    assert_close(loaded(pixels)["output/full"], vit(pixel_values=pixels).last_hidden_state[:, 0])


TIMM_CASES = {
    "missing": (
        lambda s: {k: v for k, v in s.items() if "blocks.1." not in k},
        'Missing key(s) in state_dict: "blocks.1.',
    ),
    "wrong-shape": (
        lambda s: {**s, "blocks.0.mlp.fc1.weight": torch.zeros(7, 32)},
        "size mismatch for blocks.0.mlp.fc1.weight",
    ),
}


@pytest.mark.parametrize("case", TIMM_CASES, ids=list(TIMM_CASES))
def test_a_timm_folder_whose_weights_do_not_fit_is_refused(case: str, tmp_path: Path) -> None:
    change, message = TIMM_CASES[case]
    tiny_timm_folder(tmp_path / case)
    with pytest.raises(CheckpointFormatError, match="its weights do not fit") as refused:
        load_backbone(rewritten(tmp_path / case, change))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    weights = tmp_path / case / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(UnknownBackboneError, match=r"timm cannot load it: .*header"):
        load_backbone(tmp_path / case)


PTH_CASES = {
    "wrong-shape": (lambda s: {**s, "blocks.0.attn.proj.weight": torch.zeros(32, 31)}, "size mismatch"),
    "missing": (lambda s: {k: v for k, v in s.items() if not k.startswith("blocks.1.mlp.")}, "missing ["),
}


@pytest.mark.parametrize("case", PTH_CASES, ids=list(PTH_CASES))
def test_a_pth_whose_tensors_do_not_fit_is_refused(case: str, tmp_path: Path) -> None:
    change, message = PTH_CASES[case]
    path = tmp_path / f"{case}.pth"
    torch.save(change(to_original_format(tiny_model(0, False, hidden=32, heads=2))), path)
    with pytest.raises(CheckpointFormatError, match="does not match a DINOv2 model") as refused:
        load_backbone(path, num_heads=2)
    assert message in str(refused.value) and "\n" not in str(refused.value)
