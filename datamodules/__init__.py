"""Data (docs/design.md#layers): image sources as a LightningDataModule yielding batches
{pixels, label, index}; downloads in `prepare_data`, file listing in `setup`."""

from datamodules.datamodule import DATA_SOURCES, LABELLED_SOURCES, ImageDataModule, ShardSampler
from datamodules.images import UNLABELLED, DataError, ImageFileDataset, ImageList, collate_images
from datamodules.sources import demo_images, folder_images
from datamodules.transforms import Preprocessing, evaluation_transform

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
