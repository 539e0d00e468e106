"""Data (docs/design.md#layers): image sources as a LightningDataModule yielding batches
{pixels, label, index}; downloads in `prepare_data`, file listing in `setup`.

Importing the package imports none of them: each name below loads its submodule (torch, Lightning)
on first use, so a command's `--help` stays fast."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

_EXPORTS = {name: module for module, names in _SUBMODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """An exported name, from its submodule imported on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
