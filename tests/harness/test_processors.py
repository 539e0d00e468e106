"""A checkpoint's processor config is read by transformers' own image processor: our transform equals
the processor's output pixels for both forms of the config (the current one and the older
`feature_extractor_type` form with integer sizes, as `openai/clip-vit-*` still ship) of every
processor the transformers families use."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from harness.families import CLIPFamily, DeiTFamily, Dinov3Family, Family, ViTFamily
from harness.processors import image_processor, processor_preprocessing

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
CLIP_OLD = {
    "feature_extractor_type": "CLIPFeatureExtractor",
    "size": 224,
    "crop_size": 224,
    "do_center_crop": True,
    "do_resize": True,
    "do_normalize": True,
    "resample": 3,
    "image_mean": CLIP_MEAN,
    "image_std": CLIP_STD,
}
CLIP_NEW = {
    "image_processor_type": "CLIPImageProcessor",
    "size": {"shortest_edge": 224},
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "resample": 3,
    "image_mean": CLIP_MEAN,
    "image_std": CLIP_STD,
}
SQUARE = {"height": 224, "width": 224}
VIT_OLD = {"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "resample": 2}
DEIT_OLD = {
    "feature_extractor_type": "DeiTFeatureExtractor",
    "size": 256,
    "crop_size": 224,
    "do_center_crop": True,
    "resample": 3,
}
DEIT_NEW = {
    "image_processor_type": "DeiTImageProcessor",
    "size": {"height": 256, "width": 256},
    "crop_size": SQUARE,
    "do_center_crop": True,
}
CASES: dict[str, tuple[type[Family], dict[str, Any], str]] = {
    "clip-older-form": (CLIPFamily, CLIP_OLD, "shorter_crop"),
    "clip": (CLIPFamily, CLIP_NEW, "shorter_crop"),
    "vit-older-form": (ViTFamily, VIT_OLD, "square"),
    "vit": (ViTFamily, {"image_processor_type": "ViTImageProcessor", "size": SQUARE}, "square"),
    "vit-unnamed": (ViTFamily, {"size": SQUARE, "resample": 3}, "square"),
    "deit-older-form": (DeiTFamily, DEIT_OLD, "square_crop"),
    "deit": (DeiTFamily, DEIT_NEW, "square_crop"),
    "dinov3": (Dinov3Family, {"image_processor_type": "DINOv3ViTImageProcessor", "size": SQUARE}, "square"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_transform_equals_the_processors_own_pixels(case: str) -> None:
    family, config, resize = CASES[case]
    # 400 x 300: every crop margin is even, so no rounding of an odd margin separates the two (torchvision
    # rounds half a pixel up, as OpenAI's and DINOv2's own transforms do; transformers rounds down)
    photo = Image.fromarray(load_sample_images().images[0]).resize((400, 300), Image.Resampling.BICUBIC)
    preprocessing = processor_preprocessing(config, family.preprocessing, family.processor_type)
    assert preprocessing.resize == resize
    ours = preprocessing.transform(224)(photo)
    theirs = image_processor(config, family.processor_type)(images=photo, return_tensors="pt")[
        "pixel_values"
    ][0]
    assert ours.shape == theirs.shape == (3, 224, 224)
    # resampling kernels differ by at most a few levels of 255 (over std ~0.27: ~0.05 normalised)
    assert (ours - theirs).abs().max() < 0.06 and (ours - theirs).abs().mean() < 0.01


def test_the_older_clip_form_is_no_longer_squashed() -> None:
    """The integer `size` of `openai/clip-vit-*` is CLIP's shorter side, not a square (was: squashed)."""
    older = processor_preprocessing(CLIP_OLD, CLIPFamily.preprocessing, CLIPFamily.processor_type)
    assert older == processor_preprocessing(CLIP_NEW, CLIPFamily.preprocessing, CLIPFamily.processor_type)
    assert (older.resize, older.resize_ratio, older.interpolation) == ("shorter_crop", 1.0, "bicubic")


def test_a_config_transformers_cannot_read_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="transformers cannot read it"):
        image_processor({"image_processor_type": "NoSuchImageProcessor"})


def test_a_crop_of_no_size_is_a_value_error() -> None:
    config = {**CLIP_NEW, "crop_size": {"height": 0, "width": 0}}
    with pytest.raises(ValueError, match="sizes must be positive"):
        processor_preprocessing(config, CLIPFamily.preprocessing, CLIPFamily.processor_type)
