"""DINO v1 in transformers' layout (`facebook/dino-vit*`, family vit) resizes its position grid as
DINO's own `interpolate_pos_encoding` does when asked (`--pos-interpolation original`), and by default
for the released checkpoints; checked against DINO's rule written here from its description."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close
from transformers import ViTConfig, ViTModel

from harness import load_backbone


def dino_embeddings(model: ViTModel, pixels: Tensor) -> Tensor:
    """DINO v1's `prepare_tokens`: patch embeddings, [CLS] prepended, positions added; the position
    grid (side x side) resized by bicubic interpolation at scale factors ((rows + 0.1) / side,
    (columns + 0.1) / side) when the grid differs (DINO's `interpolate_pos_encoding`)."""
    embeddings = model.embeddings
    patches = embeddings.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)  # batch, n, dim
    tokens = torch.cat([embeddings.cls_token.expand(pixels.shape[0], -1, -1), patches], dim=1)
    positions = embeddings.position_embeddings
    side, dim = math.isqrt(positions.shape[1] - 1), positions.shape[-1]
    patch = model.config.patch_size
    rows, columns = pixels.shape[-2] // patch, pixels.shape[-1] // patch
    if rows * columns == side * side and rows == columns:
        return tokens + positions
    grid = positions[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(
        grid, scale_factor=((rows + 0.1) / side, (columns + 0.1) / side), mode="bicubic"
    )
    return tokens + torch.cat([positions[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ViT-S/16-shaped DINO v1 (2 blocks) saved under its release's name, 224 px grid."""
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                       image_size=224, patch_size=16)  # fmt: skip
    model = ViTModel(config, add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_()  # a grid whose resize shows
    folder = tmp_path_factory.mktemp("models") / "dino-vits16"
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("size", [(320, 320), (480, 480), (320, 480)], ids=["320", "480", "320x480"])
def test_dino_v1_resizes_as_dinos_own_code(dino_folder: Path, size: tuple[int, int]) -> None:
    backbone = load_backbone(dino_folder)  # named as the release: DINO's rule by default
    assert backbone.info.pos_interpolation == "original"
    model = backbone.model
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = model.embeddings(pixels, interpolate_pos_encoding=True)
        expected = dino_embeddings(model, pixels)
        transformers_rule = load_backbone(dino_folder, pos_interpolation="hf").model.embeddings(
            pixels, interpolate_pos_encoding=True
        )
    assert_close(ours, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # transformers' own resize (no offset) is another function of the grid off 224 px
    assert (transformers_rule - expected).abs().max() > 1e-2 * expected.abs().max()
    full = backbone(pixels)["output/full"]
    assert_close(full, model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0])


def test_other_vits_keep_transformers_resize(dino_folder: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "my-vit"
    renamed.mkdir()
    for file in dino_folder.iterdir():
        (renamed / file.name).write_bytes(file.read_bytes())
    assert load_backbone(renamed).info.pos_interpolation == "hf"
    assert load_backbone(renamed, pos_interpolation="original").info.pos_interpolation == "original"


def test_from_model_records_the_resize_the_model_runs(dino_folder: Path) -> None:
    """A DINO v1 handed in as loaded by transformers runs transformers' resize, and is recorded so;
    the tool's own load of it runs DINO's, and wrapping that model again records DINO's."""
    from transformers import AutoModel

    from harness import DecomposingBackbone

    plain = AutoModel.from_pretrained(dino_folder, add_pooling_layer=False)
    assert DecomposingBackbone.from_model(plain).info.pos_interpolation == "hf"
    loaded = load_backbone(dino_folder).model
    assert DecomposingBackbone.from_model(loaded).info.pos_interpolation == "original"
