"""Data (docs/design.md#layers): image sources as a LightningDataModule yielding batches
{pixels, label, index}; downloads in `prepare_data`, file listing in `setup`.

Importing the package imports none of them: each name below loads its submodule (torch, Lightning)
on first use, so a command's `--help` stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from datamodules.choices import DATA_SOURCES, LABELLED_SOURCES
    from datamodules.datamodule import ImageDataModule, ShardSampler
    from datamodules.images import UNLABELLED, DataError, ImageFileDataset, ImageList, collate_images
    from datamodules.sources import demo_images, folder_images
    from datamodules.transforms import Preprocessing, evaluation_transform

_SUBMODULES: dict[str, tuple[str, ...]] = {
    "choices": ("DATA_SOURCES", "LABELLED_SOURCES"),
    "datamodule": ("ImageDataModule", "ShardSampler"),
    "images": ("UNLABELLED", "DataError", "ImageFileDataset", "ImageList", "collate_images"),
    "sources": ("demo_images", "folder_images"),
    "transforms": ("Preprocessing", "evaluation_transform"),
}
"""Submodule -> the names the package exports from it."""

__all__ = [
    "DATA_SOURCES",
    "LABELLED_SOURCES",
    "UNLABELLED",
    "DataError",
    "ImageDataModule",
    "ImageFileDataset",
    "ImageList",
    "Preprocessing",
    "ShardSampler",
    "collate_images",
    "demo_images",
    "evaluation_transform",
    "folder_images",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _SUBMODULES)
