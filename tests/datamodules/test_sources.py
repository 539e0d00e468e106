from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules import (
    UNLABELLED,
    DataError,
    ImageDataModule,
    ImageFileDataset,
    ShardSampler,
    collate_images,
    demo_images,
    evaluation_transform,
    folder_images,
)
from tests.conftest import write_photos


def test_demo_images_ship_with_the_packages() -> None:
    images = demo_images()
    assert len(images.files) >= 10 and all(path.is_file() for path in images.files)
    assert set(images.labels) == {UNLABELLED} and not images.labelled


def test_folder_labels_from_sub_folders(tmp_path: Path) -> None:
    write_photos(tmp_path / "zebra", 2)
    write_photos(tmp_path / "ant" / "deeper", 3)
    images = folder_images(tmp_path)
    assert images.class_names == ("ant", "zebra")
    assert sorted(images.labels) == [0, 0, 0, 1, 1]
    for path, label in zip(images.files, images.labels, strict=True):
        assert path.relative_to(tmp_path).parts[0] == images.class_names[label]


def test_loose_files_make_the_folder_unlabelled(tmp_path: Path) -> None:
    write_photos(tmp_path / "cats", 2)
    write_photos(tmp_path, 1)
    images = folder_images(tmp_path)
    assert len(images.files) == 3 and set(images.labels) == {UNLABELLED}


def test_missing_and_empty_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        folder_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files"):
        folder_images(tmp_path)


def test_transform_gives_the_evaluation_crop() -> None:
    from PIL import Image

    pixels = evaluation_transform(224)(Image.new("RGB", (640, 480), (255, 0, 0)))
    assert pixels.shape == (3, 224, 224)
    assert pixels[0].mean().item() == pytest.approx((1 - 0.485) / 0.229, abs=1e-4)


def test_square_crop_squashes_then_crops() -> None:
    """DeiT's processor (and timm's "squash"): the whole image to a square of resolution x ratio, then
    the centre crop; here against PIL's own resize and crop of a non-square photo."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from datamodules import Preprocessing

    photo = Image.fromarray(load_sample_images().images[0])  # 427 x 640
    settings = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "square_crop", "bilinear", 64 / 56)
    pixels = evaluation_transform(56, settings)(photo)
    squashed = photo.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=None)
    expected = torch.tensor(list(squashed.crop((4, 4, 60, 60)).getdata()), dtype=torch.float32) / 255
    expected = expected.T.reshape(3, 56, 56)
    assert pixels.shape == (3, 56, 56) and settings.shorter_side(56) == 64
    assert (pixels - expected).abs().max() < 2.5 / 255  # PIL's and torchvision's antialiasing round apart


def test_unreadable_files_are_skipped_without_shifting_indices(tmp_path: Path) -> None:
    write_photos(tmp_path, 3)
    (tmp_path / "photo_001.jpg").write_bytes(b"\xff\xd8 truncated")
    images = folder_images(tmp_path)
    batch = collate_images([ImageFileDataset(images, evaluation_transform(28))[i] for i in range(3)])
    assert batch["index"].tolist() == [0, 2]
    assert batch["pixels"].shape == (2, 3, 28, 28)
    assert batch["skipped"][0][0] == 1 and "photo_001.jpg" in batch["skipped"][0][1]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_image_once(world_size: int) -> None:
    shards = [list(ShardSampler(10, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))


def listed(datamodule: ImageDataModule) -> ImageDataModule:
    """What Lightning does before a run: prepare_data (downloads), then setup (lists the files)."""
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def test_limit_is_a_seeded_subset(tmp_path: Path) -> None:
    write_photos(tmp_path, 10)
    first = listed(ImageDataModule("folder", tmp_path, limit=4, seed=3)).images.files
    again = listed(ImageDataModule("folder", tmp_path, limit=4, seed=3)).images.files
    other = listed(ImageDataModule("folder", tmp_path, limit=4, seed=4)).images.files
    assert first == again and len(first) == 4 and first != other
    assert torch.tensor([f.name for f in first].index(sorted(f.name for f in first)[0])) == 0


def test_every_source_through_the_data_module(tmp_path: Path) -> None:
    from tests.datamodules.test_imagenet import devkit_layout

    write_photos(tmp_path / "coco" / "val2017", 3)
    coco = listed(ImageDataModule("coco", tmp_path / "coco"))
    assert len(coco.images.files) == 3 and not coco.images.labelled
    imagenet = listed(ImageDataModule("imagenet", devkit_layout(tmp_path / "imagenet"), per_class=1))
    assert sorted(imagenet.images.labels) == [0, 1, 2] and imagenet.describe()["num_classes"] == 3
    with pytest.raises(DataError, match="--download is only for --data coco"):
        ImageDataModule("folder", tmp_path, download=True)
    with pytest.raises(DataError, match="--data imagenet needs --data-dir"):
        ImageDataModule("imagenet")


def test_higher_resolution_scales_the_resize() -> None:
    from PIL import Image

    from common.preparation import DINOV2_EVALUATION

    shorter = DINOV2_EVALUATION.shorter_side
    assert shorter(224) == 256 and shorter(448) == 512 and shorter(518) == 592
    pixels = evaluation_transform(448)(Image.new("RGB", (1000, 700)))
    assert pixels.shape == (3, 448, 448)
