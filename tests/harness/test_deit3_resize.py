"""DeiT III off 224 px: timm resizes the position grid with antialiasing, DeiT's own `main.py` (another
`--input-size`) without; `--pos-interpolation original` runs DeiT's rule, checked against it written
here from its description; timm's stays the default."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone, load_backbone
from tests.harness.test_loading import tiny_timm_folder


def deit_tokens(model: nn.Module, pixels: Tensor) -> Tensor:
    """DeiT III's tokens at another input size: the patch grid's positions resized by bicubic
    interpolation to the exact new grid (align_corners False, no antialiasing) and added to the
    patches; the [CLS] token, which has no position in DeiT III, prepended."""
    patches = model.patch_embed(pixels)  # batch, rows, columns, dim (dynamic_img_size)
    batch, rows, columns, dim = patches.shape
    side = math.isqrt(model.pos_embed.shape[1])
    grid = model.pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, size=(rows, columns), mode="bicubic", align_corners=False)
    positions = grid.permute(0, 2, 3, 1).reshape(1, rows * columns, dim)
    return torch.cat([model.cls_token.expand(batch, -1, -1), patches.reshape(batch, -1, dim) + positions], 1)


@pytest.fixture(scope="module")
def deit3_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "deit3"
    model = tiny_timm_folder(folder)  # DeiT III, 2 blocks of width 32, 32 px (a 2 x 2 grid of 16 px)
    assert model.no_embed_class
    return folder


@pytest.mark.parametrize("size", [(64, 64), (96, 96), (64, 96)], ids=["64", "96", "64x96"])
def test_deit3_resizes_as_deits_own_code_when_asked(deit3_folder: Path, size: tuple[int, int]) -> None:
    original = load_backbone(deit3_folder, pos_interpolation="original")
    timm_rule = load_backbone(deit3_folder)
    assert (original.info.pos_interpolation, timm_rule.info.pos_interpolation) == ("original", "timm")
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = deit_tokens(original.model, pixels)
        ours = original.model._pos_embed(original.model.patch_embed(pixels))
        timms = timm_rule.model._pos_embed(timm_rule.model.patch_embed(pixels))
    assert_close(ours, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # antialiased bicubic (a = -0.5) is another kernel than plain bicubic (a = -0.75), upsampling too
    assert (timms - expected).abs().max() > 1e-4 * expected.abs().max()
    # the decomposition's output is the model's own under either rule
    model = original.model
    assert_close(
        original(pixels)["output/full"], model.forward_head(model.forward_features(pixels), pre_logits=True)
    )
    assert DecomposingBackbone.from_model(model).info.pos_interpolation == "original"


def test_other_timm_vits_refuse_deits_rule(tmp_path: Path) -> None:
    tiny_timm_folder(tmp_path / "vit", "vit_small_patch16_224")
    with pytest.raises(Exception, match="resize of DINOv2, DINO v1 and DeiT III"):
        load_backbone(tmp_path / "vit", pos_interpolation="original")


def test_crop_ratio_chooses_deits_own_evaluation_over_timms(tmp_path: Path) -> None:
    """Issue 20: the `fb_in1k` DeiT III tags carry timm's crop 0.9; the DeiT III README evaluates at
    `--eval-crop-ratio 1.0`. `--crop-ratio 1.0` runs DeiT's transform; results.json records what ran
    (`data.preprocessing`, `data.crop_ratio`) beside the model's own (`backbone.resize_ratio`)."""
    import json

    import evaluate
    from tests.conftest import write_photos

    tiny_timm_folder(tmp_path / "deit3", "deit3_small_patch16_224.fb_in1k")
    write_photos(tmp_path / "photos", 3, size=(80, 60))
    argv = ["--backbone", str(tmp_path / "deit3"), "--data", "folder", "--data-dir", str(tmp_path / "photos"),
            "--probe", "norms", "--resolution", "32", "--num-workers", "0"]  # fmt: skip
    runs = {}
    for name, extra in (("timm", []), ("deit", ["--crop-ratio", "1.0", "--resize", "shorter"])):
        assert evaluate.main([*argv, *extra, "--output", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert runs["timm"]["backbone"]["resize_ratio"] == pytest.approx(1 / 0.9)
    assert runs["timm"]["data"]["preprocessing"]["resize_ratio"] == pytest.approx(1 / 0.9)
    assert "crop_ratio" not in runs["timm"]["data"]
    assert runs["deit"]["backbone"]["resize_ratio"] == pytest.approx(1 / 0.9)  # the model's own
    assert (runs["deit"]["data"]["crop_ratio"], runs["deit"]["data"]["resize"]) == (1.0, "shorter")
    assert runs["deit"]["data"]["preprocessing"]["resize_ratio"] == 1.0
    assert runs["deit"]["results"] != runs["timm"]["results"]  # another crop, other pixels


def test_a_crop_ratio_out_of_range_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import evaluate

    argv = ["--backbone", "random:dinov2_vits14", "--crop-ratio", "1.2", "--output", str(tmp_path / "run")]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert "--crop-ratio must lie in (0, 1], got 1.2" in err and "Traceback" not in err
