"""`Preprocessing`: one value for how a backbone's images are prepared, and its evaluation transform."""

from __future__ import annotations

import pytest
from PIL import Image
from sklearn.datasets import load_sample_images
from torch.testing import assert_close
from torchvision import transforms

from common.preparation import DINOV2_EVALUATION, Preprocessing

BICUBIC, BILINEAR = transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.BILINEAR


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(load_sample_images().images[1])  # 427 x 640


def by_hand(resize: list[object], mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    return transforms.Compose([*resize, transforms.ToTensor(), transforms.Normalize(mean, std)])


CASES = [
    pytest.param(DINOV2_EVALUATION, 224, [transforms.Resize(256, BICUBIC), transforms.CenterCrop(224)],
                 id="dinov2-shorter-crop"),
    pytest.param(Preprocessing((0.5,) * 3, (0.5,) * 3, "square", "bilinear", 1.0), 56,
                 [transforms.Resize((56, 56), BILINEAR)], id="vit-square"),
    pytest.param(Preprocessing(resize="square_crop", resize_ratio=288 / 224), 224,
                 [transforms.Resize((288, 288), BICUBIC), transforms.CenterCrop(224)], id="deit-square-crop"),
    pytest.param(Preprocessing(resize_ratio=1 / 0.9), 112,  # timm: floor(112 / 0.9) = 124
                 [transforms.Resize(124, BICUBIC), transforms.CenterCrop(112)], id="timm-crop-pct"),
]  # fmt: skip


@pytest.mark.parametrize(("preprocessing", "resolution", "resize"), CASES)
def test_transform_is_the_resize_crop_and_normalisation_it_names(
    preprocessing: Preprocessing, resolution: int, resize: list[object], photo: Image.Image
) -> None:
    pixels = preprocessing.transform(resolution)(photo)
    assert pixels.shape == (3, resolution, resolution)
    assert_close(pixels, by_hand(resize, preprocessing.mean, preprocessing.std)(photo), atol=0, rtol=0)


def test_lists_read_from_json_are_the_same_value() -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # as results.json holds them
    read = Preprocessing(mean, std, "shorter_crop", "bicubic", 256 / 224)  # type: ignore[arg-type]
    assert read == DINOV2_EVALUATION and hash(read) == hash(DINOV2_EVALUATION)
    assert read.mean == (0.485, 0.456, 0.406)


def test_bad_settings_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="unknown resize 'pad'"):
        Preprocessing(resize="pad")
    with pytest.raises(ValueError, match="interpolation 'nearest'"):
        Preprocessing(interpolation="nearest")
    with pytest.raises(ValueError, match=r"3 positive stds, got .*\(0.0, 1.0, 1.0\)"):
        Preprocessing(std=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="resolution must be positive, got 0"):
        DINOV2_EVALUATION.transform(0)


def test_a_crop_ratio_is_the_side_before_the_crop(photo: Image.Image) -> None:
    """`chosen(crop_ratio=r)`: the resized side is resolution / r (floor, as DeiT's
    `int(input_size / ratio)` and timm's `floor(size / crop_pct)`); DeiT III's own evaluation of an
    `fb_in1k` model (timm's crop 0.9) is `--eval-crop-ratio 1.0`: Resize(224), CenterCrop(224)."""
    timm_default = Preprocessing(resize_ratio=1 / 0.9)
    deit = by_hand(
        [transforms.Resize(224, BICUBIC), transforms.CenterCrop(224)], timm_default.mean, timm_default.std
    )
    assert_close(timm_default.chosen(crop_ratio=1.0).transform(224)(photo), deit(photo), atol=0, rtol=0)
    assert timm_default.transform(224)(photo).shape == (3, 224, 224)
    assert (
        timm_default.shorter_side(224) == 248
        and timm_default.chosen(crop_ratio=0.875).shorter_side(224) == 256
    )
    squashed = Preprocessing(resize="square", resize_ratio=1.0)
    assert squashed.chosen(crop_ratio=1.0) == squashed
    assert (
        squashed.chosen(crop_ratio=0.8).resize == "square_crop"
        and squashed.chosen(crop_ratio=0.8).shorter_side(64) == 80
    )
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"crop ratio must lie in \(0, 1\]"):
            timm_default.chosen(crop_ratio=bad)


def test_a_chosen_resize_is_the_authors_transform_over_the_ports(photo: Image.Image) -> None:
    """DeiT's processor in transformers squashes the whole image to 256 x 256 before the crop; DeiT's
    own `main.py` resizes the shorter side to int(224 / 0.875) = 256: `--resize shorter --crop-ratio
    0.875`. And the other way: DINOv2's shorter side, squashed."""
    processor = Preprocessing(resize="square_crop", resize_ratio=256 / 224)
    deit = by_hand(
        [transforms.Resize(256, BICUBIC), transforms.CenterCrop(224)], processor.mean, processor.std
    )
    assert_close(processor.chosen("shorter", 0.875).transform(224)(photo), deit(photo), atol=0, rtol=0)
    assert processor.chosen("shorter").resize_ratio == processor.resize_ratio  # the crop kept
    squashed = DINOV2_EVALUATION.chosen("square")
    by_square = by_hand(
        [transforms.Resize((256, 256), BICUBIC), transforms.CenterCrop(224)], squashed.mean, squashed.std
    )
    assert_close(squashed.transform(224)(photo), by_square(photo), atol=0, rtol=0)
    assert DINOV2_EVALUATION.chosen() is DINOV2_EVALUATION
    with pytest.raises(ValueError, match="unknown resize 'pad'; choose from shorter, square"):
        DINOV2_EVALUATION.chosen("pad")
