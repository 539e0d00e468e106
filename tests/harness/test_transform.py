"""`DecomposingBackbone.transform(resolution)` is what the command line's data module feeds that
backbone: the same tensors from the same photos, for a DINOv2, a CLIP with a processor config and a
timm model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torch.testing import assert_close
from transformers import CLIPVisionConfig, CLIPVisionModel

from cls_decoupling.cli.options import prepare_for
from datamodules import ImageDataModule
from harness import DecomposingBackbone, load_backbone
from tests.harness.test_loading import tiny_timm_folder


def dinov2(folder: Path) -> DecomposingBackbone:
    return load_backbone("random:tiny_reg")  # patch 14; DINOv2's evaluation transform


def clip_with_processor(folder: Path) -> DecomposingBackbone:
    """A saved CLIP image tower whose processor config differs from CLIP's default (its mean / std,
    bilinear, the shorter side to 64 / 56 of the crop)."""
    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, image_size=56, patch_size=14)  # fmt: skip
    CLIPVisionModel(config).save_pretrained(folder)
    processor = {"image_processor_type": "CLIPImageProcessor", "image_mean": [0.48, 0.46, 0.41],
                 "image_std": [0.27, 0.26, 0.28], "resample": 2, "do_center_crop": True,
                 "size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 56}}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    backbone = load_backbone(folder)
    preprocessing = backbone.info.preprocessing
    assert (preprocessing.mean, preprocessing.interpolation, preprocessing.resize_ratio) == (
        (0.48, 0.46, 0.41),
        "bilinear",
        64 / 56,
    )
    return backbone


def timm_folder(folder: Path) -> DecomposingBackbone:
    tiny_timm_folder(folder)  # DeiT III's pretrained config: crop_pct 1.0, bicubic; patch 16
    return load_backbone(folder)


BACKBONES = [
    pytest.param(dinov2, 56, id="dinov2"),
    pytest.param(clip_with_processor, 56, id="clip-processor-config"),
    pytest.param(timm_folder, 64, id="timm"),
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Image.Image], Path]:
    """scikit-learn's sample photos as PIL images, and a folder holding them as lossless PNGs."""
    folder = tmp_path_factory.mktemp("photos")
    images = [Image.fromarray(photo) for photo in load_sample_images().images]
    for number, image in enumerate(images):
        image.save(folder / f"photo_{number}.png")
    return images, folder


@pytest.mark.parametrize(("make", "resolution"), BACKBONES)
def test_transform_is_what_the_data_module_feeds_the_backbone(
    make: Callable[[Path], DecomposingBackbone],
    resolution: int,
    photos: tuple[list[Image.Image], Path],
    tmp_path: Path,
) -> None:
    images, folder = photos
    backbone = make(tmp_path / "model")
    datamodule = ImageDataModule("folder", folder, resolution=resolution, batch_size=2, num_workers=0)
    prepare_for(datamodule, backbone)  # as the command line prepares the data for the backbone
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["index"].tolist() == list(range(len(images)))  # photo_0.png, photo_1.png in order
    ours = torch.stack([backbone.transform(resolution)(image) for image in images])
    assert ours.shape == (len(images), 3, resolution, resolution)
    assert_close(ours, batch["pixels"], atol=0, rtol=0)


def test_a_resolution_the_patches_do_not_tile_is_refused() -> None:
    backbone = load_backbone("random:tiny")
    with pytest.raises(ValueError, match="resolution 50 is not a positive multiple of the patch size 14"):
        backbone.transform(50)
