"""The LightningDataModule every data source goes through."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Sampler

from datamodules.images import DataError, ImageFileDataset, ImageList, collate_images
from datamodules.sources import demo_images, folder_images
from datamodules.transforms import DEFAULT_RESOLUTION, evaluation_transform

DATA_SOURCES: dict[str, Callable[[Path | None], ImageList]] = {
    "demo": lambda data_dir: demo_images(),
    "folder": lambda data_dir: folder_images(_require_dir(data_dir, "folder")),
}
"""`--data` choices of this version."""


class ShardSampler(Sampler[int]):
    """Rank r of w gets dataset positions r, r + w, r + 2w, ...: every image exactly once, no padding.

    (Lightning's DistributedSampler pads ranks by repeating images, which would count them twice.)

    >>> list(ShardSampler(5, rank=1, world_size=2))
    [1, 3]
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.positions = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


class ImageDataModule(L.LightningDataModule):
    """Images of one source, transformed for evaluation, sharded across ranks without repeats.

    Args:
        source: a key of `DATA_SOURCES` ("demo", "folder").
        data_dir: the folder to read, for sources that need one.
        resolution: side of the centre crop in pixels.
        batch_size: images per batch and rank.
        num_workers: loader processes; None picks min(8, CPUs - 1).
        limit: evaluate only this many images, chosen with `seed` from the file list.
        seed: seed of the `limit` subset.
    """

    def __init__(
        self,
        source: str,
        data_dir: Path | None = None,
        resolution: int = DEFAULT_RESOLUTION,
        batch_size: int = 32,
        num_workers: int | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if source not in DATA_SOURCES:
            raise DataError(f"unknown data source {source!r}; choose from {', '.join(DATA_SOURCES)}")
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self.source = source
        self.data_dir = data_dir
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = (
            num_workers if num_workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))
        )
        self.limit = limit
        self.seed = seed
        self.images = self._list_images()

    def _list_images(self) -> ImageList:
        images = DATA_SOURCES[self.source](self.data_dir)
        if self.limit is not None and self.limit < len(images.files):
            chosen = sorted(random.Random(self.seed).sample(range(len(images.files)), self.limit))
            images = images.subset(chosen)
        return images

    def setup(self, stage: str) -> None:
        self.dataset = ImageFileDataset(self.images, evaluation_transform(self.resolution))

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(self.dataset), rank, world_size),
            num_workers=self.num_workers,
            collate_fn=collate_images,
            pin_memory=trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator),
            persistent_workers=self.num_workers > 0,
        )

    def describe(self) -> dict[str, Any]:
        """Data facts for results.json."""
        return {
            "source": self.source,
            "data_dir": str(self.data_dir.resolve()) if self.data_dir else None,
            "files": len(self.images.files),
            "labelled": self.images.labelled,
            "num_classes": len(self.images.class_names),
            "resolution": self.resolution,
            "limit": self.limit,
            "seed": self.seed,
        }


def _require_dir(data_dir: Path | None, source: str) -> Path:
    if data_dir is None:
        raise DataError(f"--data {source} needs --data-dir DIR")
    return data_dir
