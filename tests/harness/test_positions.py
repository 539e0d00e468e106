"""Position-grid resizing as the original DINOv2 (torch.hub) does it, against an independent numpy
bicubic written from the description in harness/positions.py, at 224, 336, 518 px and non-square."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from harness import load_backbone
from harness.positions import ORIGINAL_OFFSET, original_position_grid
from tests.conftest import tiny_model
from tests.harness.test_checkpoint import to_original_format

CUBIC_A = -0.75  # the cubic convolution kernel PyTorch's bicubic uses (Keys, a = -0.75)
PATCH = 14
SIDE = 37  # the released models' 518 px grid
SIZES = [
    pytest.param(224, 224, id="224"),
    pytest.param(336, 336, id="336"),
    pytest.param(518, 518, id="518"),
    pytest.param(224, 308, id="224x308"),
]


def cubic_weights(t: float) -> np.ndarray:
    """Weights of the samples at offsets -1, 0, 1, 2 from the left neighbour, t in [0, 1)."""

    def near(x: float) -> float:  # |x| <= 1
        return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A

    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


def resize_axis(values: np.ndarray, size: int, scale: float) -> np.ndarray:
    """Bicubic resampling along axis 0 to `size` samples, sample i read at (i + 0.5) / scale - 0.5 of
    the input (half-pixel centres; neighbours beyond the border repeat the border)."""
    out = np.empty((size, *values.shape[1:]))
    for i in range(size):
        x = (i + 0.5) / scale - 0.5
        left = math.floor(x)
        rows = np.clip(np.arange(left - 1, left + 3), 0, values.shape[0] - 1)
        out[i] = np.tensordot(cubic_weights(x - left), values[rows], axes=1)
    return out


def reference_grid(grid: np.ndarray, rows: int, columns: int, offset: float) -> np.ndarray:
    """The original resize: unchanged when square and of the same size; else sampled at scale factors
    (n + offset) / side (offset > 0) or at the size ratio n / side (offset 0)."""
    side = grid.shape[0]
    if rows == columns == side:
        return grid
    resized = resize_axis(grid, rows, (rows + offset) / side)
    return resize_axis(resized.transpose(1, 0, 2), columns, (columns + offset) / side).transpose(1, 0, 2)


def with_reference_positions(model: nn.Module) -> nn.Module:
    """A copy of an HF DINOv2 whose embeddings use `reference_grid` (offset 0.1) for other sizes."""
    model = copy.deepcopy(model)
    embeddings = model.embeddings
    table = embeddings.position_embeddings.detach()
    dim = table.shape[-1]

    def interpolate(tokens: Tensor, height: int, width: int) -> Tensor:
        grid = table[0, 1:].reshape(SIDE, SIDE, dim).double().numpy()
        resized = reference_grid(grid, height // PATCH, width // PATCH, ORIGINAL_OFFSET)
        return torch.cat([table[:, :1], torch.from_numpy(resized).float().reshape(1, -1, dim)], dim=1)

    embeddings.interpolate_pos_encoding = interpolate
    return model


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_grid_resize_equals_the_numpy_reference(height: int, width: int) -> None:
    grid = torch.randn(SIDE, SIDE, 8, generator=torch.Generator().manual_seed(0))
    rows, columns = height // PATCH, width // PATCH
    expected = reference_grid(grid.double().numpy(), rows, columns, ORIGINAL_OFFSET)
    got = original_position_grid(grid, rows, columns, offset=ORIGINAL_OFFSET, antialias=False)
    assert got.shape == (rows, columns, 8)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5 * np.abs(expected).max())
    # the plain size-ratio resize (transformers' Dinov2Model) is the reference with offset 0
    exact = reference_grid(grid.double().numpy(), rows, columns, 0.0)
    plain = nn.functional.interpolate(grid.permute(2, 0, 1)[None], size=(rows, columns), mode="bicubic")
    np.testing.assert_allclose(plain[0].permute(1, 2, 0).numpy(), exact, atol=1e-5 * np.abs(exact).max())


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A no-register model on the released 37 x 37 grid, saved in the original .pth layout."""
    model = tiny_model(0, False, hidden=64, heads=1, layers=2, patch=PATCH, image=SIDE * PATCH)
    with torch.no_grad():  # trained position tables are O(1), not the init's std 0.02
        model.embeddings.position_embeddings.normal_(std=1.0, generator=torch.Generator().manual_seed(5))
    path = tmp_path_factory.mktemp("original") / "dinov2_vits14_pretrain.pth"
    torch.save(to_original_format(model), path)
    return model, path


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_pth_output_equals_the_original_resize_at_every_size(
    original_checkpoint: tuple[nn.Module, Path], height: int, width: int
) -> None:
    model, path = original_checkpoint
    backbone = load_backbone(path)
    assert backbone.info.pos_interpolation == "original"
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = with_reference_positions(model)(pixel_values=pixels).pooler_output
        hf = model(pixel_values=pixels).pooler_output
    got = backbone(pixels)["output/full"]
    # float32 rounding of the resized table is all that separates them (~1e-7 of the output's scale)
    tolerance = 2e-6 * expected.abs().max().item()
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=0)
    hf_backbone = load_backbone(path, pos_interpolation="hf")
    torch.testing.assert_close(hf_backbone(pixels)["output/full"], hf, atol=tolerance, rtol=0)
    difference = (hf - expected).abs().max().item()
    if (height, width) == (518, 518):
        assert difference <= tolerance  # the released grid itself: nothing is resized
    else:
        assert difference > 20 * tolerance, difference  # transformers' resize is measurably different


def test_register_models_resize_the_same_way_either_way(tmp_path: Path) -> None:
    model = tiny_model(4, True, hidden=64, heads=1, layers=2, patch=PATCH, image=SIDE * PATCH)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(to_original_format(model), path)
    pixels = torch.randn(1, 3, 224, 308, generator=torch.Generator().manual_seed(2))
    original, hf = load_backbone(path), load_backbone(path, pos_interpolation="hf")
    expected = hf(pixels)["output/full"]
    torch.testing.assert_close(
        original(pixels)["output/full"], expected, atol=1e-6 * expected.abs().max().item(), rtol=0
    )


def test_defaults_by_source_and_the_choice_survives_a_copy(tmp_path: Path) -> None:
    tiny_model(0, False).save_pretrained(tmp_path / "folder")
    assert load_backbone(tmp_path / "folder").info.pos_interpolation == "hf"
    assert (
        load_backbone(tmp_path / "folder", pos_interpolation="original").info.pos_interpolation == "original"
    )
    backbone = load_backbone("random:tiny")
    assert backbone.info.pos_interpolation == "original"
    copied = copy.deepcopy(backbone)
    pixels = torch.randn(1, 3, 56, 70, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(copied(pixels)["output/full"], backbone(pixels)["output/full"])
    with torch.no_grad():
        copied.model.embeddings.position_embeddings.mul_(2)  # the copy resizes its own table
    assert not torch.allclose(copied(pixels)["output/full"], backbone(pixels)["output/full"])
    with pytest.raises(ValueError, match="unknown position interpolation"):
        load_backbone("random:tiny", pos_interpolation="nearest")


def test_the_original_resize_survives_pickle_and_torch_save(tmp_path: Path) -> None:
    import pickle

    backbone = load_backbone("random:tiny")
    pixels = torch.randn(1, 3, 56, 70, generator=torch.Generator().manual_seed(4))
    restored = pickle.loads(pickle.dumps(backbone))
    torch.save(backbone, tmp_path / "backbone.pt")
    loaded = torch.load(tmp_path / "backbone.pt", weights_only=False)
    for other in (restored, loaded):
        assert type(other.model.embeddings) is type(backbone.model.embeddings)
        torch.testing.assert_close(other(pixels)["output/full"], backbone(pixels)["output/full"])
