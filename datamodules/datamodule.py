"""The LightningDataModule every data source goes through."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Sampler

from common.preparation import DINOV2_EVALUATION, RESIZE_CHOICES, Preprocessing
from datamodules.choices import DATA_SOURCES, SPLITS
from datamodules.coco import coco_images, default_coco_root, download_coco
from datamodules.huggingface import check_dataset_location, hf_images
from datamodules.imagenet import imagenet_images
from datamodules.images import DataError, ImageFileDataset, ImageList, ImageSource, collate_images
from datamodules.sources import demo_images, folder_images
from datamodules.subsets import limit_images, per_class_images
from datamodules.transforms import DEFAULT_RESOLUTION

log = logging.getLogger(__name__)


def check_source(
    source: str, data_dir: Path | None, split: str | None = None, download: bool = False
) -> None:
    """Refuse, before anything is listed or downloaded, options a source cannot take."""
    if source not in DATA_SOURCES:
        raise DataError(f"unknown data source {source!r}; choose from {', '.join(DATA_SOURCES)}")
    if download and source != "coco":
        raise DataError(f"--download is only for --data coco, not {source}")
    if split is not None and source in ("coco", "imagenet") and split not in SPLITS:
        raise DataError(f"--split {split}: {source} has the splits {', '.join(SPLITS)}")
    if source in ("folder", "imagenet"):
        folder = _require_dir(data_dir, source)
        if not folder.is_dir():
            raise DataError(f"data directory {folder} does not exist or is not a directory")
    if source == "hf":
        check_dataset_location(_require_dir(data_dir, source))


def check_hf_options(
    source: str, image_column: str | None, label_column: str | None, streaming: bool,
    limit: int | None, per_class: int | None,
) -> None:  # fmt: skip
    """Refuse the options of a Hugging Face dataset without one, and what a stream cannot do."""
    given = {"--image-column": image_column, "--label-column": label_column, "--streaming": streaming or None}
    named = [option for option, value in given.items() if value is not None]
    if named and source != "hf":
        verb = "read" if len(named) > 1 else "reads"
        raise DataError(f"{', '.join(named)} {verb} a Hugging Face dataset: add --data hf (not {source})")
    if streaming and limit is None:
        raise DataError(
            "--streaming reads the first --limit N rows of the stream (it has no length): add --limit"
        )
    if streaming and per_class is not None:
        raise DataError("--per-class chooses among all of a class's images, which a stream cannot: drop one")


def list_source_images(source: str, data_dir: Path | None, split: str, coco_root: Path) -> ImageList:
    """The file list (and labels) of a data source, before any image is decoded."""
    if source == "demo":
        return demo_images()
    if source == "folder":
        return folder_images(_require_dir(data_dir, source))
    if source == "coco":
        return coco_images(coco_root, split)
    if source == "imagenet":
        return imagenet_images(_require_dir(data_dir, source), split)
    raise DataError(f"unknown data source {source!r}; choose from {', '.join(DATA_SOURCES)}")


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

    Follows Lightning's contract: `prepare_data` (once per node) downloads, `setup` (on every rank)
    lists the files, deterministically, so every rank holds the same list, and builds the dataset.
    The constructor only checks the options (and that the folders exist), so a bad option fails
    before anything is loaded.

    Args:
        source: one of `DATA_SOURCES`.
        data_dir: the folder to read (COCO: defaults to the download cache; hf: a saved dataset,
            parquet file, dataset folder or dataset name, `datamodules.huggingface.hf_images`).
        split: "val" (default) or "train" (COCO, ImageNet); hf: the dataset's own split name (default
            "validation" if it has one, else its only split).
        download: fetch COCO's images in `prepare_data` (resumable, checksummed).
        resolution: side of the centre crop in pixels.
        batch_size: images per batch and rank.
        num_workers: loader processes; None picks min(8, CPUs - 1).
        limit: evaluate only this many images, chosen with `seed` (stratified by class).
        per_class: evaluate only this many images of each class, chosen with `seed`.
        fast_jpeg: decode large JPEGs at a reduced DCT scale (faster, not bit-identical to
            DINOv2's transform; off by default).
        seed: seed of the subsets.
        preprocessing: how images are prepared (DINOv2's evaluation by default; `prepare_for` in
            the command line sets the backbone's).
        image_column, label_column: hf: the columns read (default: the `Image` column, the
            `ClassLabel` column; see `hf_images`).
        streaming: hf: read the dataset as a stream, its first `limit` rows (in its order, not a
            seeded subset; `per_class` refused).
        resize, crop_ratio: the resize ("shorter" or "square") and the crop's share of the resized
            side, over what `preprocessing` says (`Preprocessing.chosen`; e.g. crop 1.0 for DeiT III's
            own evaluation); None: as it says.

    Raises:
        DataError: an unknown source, a missing folder, or an option the source cannot take.
    """

    def __init__(
        self,
        source: str,
        data_dir: Path | None = None,
        split: str | None = None,
        download: bool = False,
        resolution: int = DEFAULT_RESOLUTION,
        batch_size: int = 32,
        num_workers: int | None = None,
        limit: int | None = None,
        per_class: int | None = None,
        seed: int = 0,
        fast_jpeg: bool = False,
        preprocessing: Preprocessing = DINOV2_EVALUATION,
        resize: str | None = None,
        crop_ratio: float | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        streaming: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1 or resolution < 1:
            raise DataError(f"batch size and resolution must be positive, got {batch_size} and {resolution}")
        if crop_ratio is not None and not 0 < crop_ratio <= 1:
            raise DataError(f"--crop-ratio must lie in (0, 1], got {crop_ratio}")
        if resize is not None and resize not in RESIZE_CHOICES:
            raise DataError(f"--resize must be one of {', '.join(RESIZE_CHOICES)}, got {resize!r}")
        if seed < 0:
            raise DataError(f"--seed must be 0 or more, got {seed}")
        check_source(source, data_dir, split, download)
        check_hf_options(source, image_column, label_column, streaming, limit, per_class)
        self.source = source
        self.data_dir = data_dir
        self.split = split if split is not None or source == "hf" else SPLITS[0]
        self.download = download
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = (
            num_workers if num_workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))
        )
        self.limit = limit
        self.per_class = per_class
        self.seed = seed
        self.fast_jpeg = fast_jpeg
        self.preprocessing = preprocessing
        self.resize = resize
        self.crop_ratio = crop_ratio
        self.image_column = image_column
        self.label_column = label_column
        self.streaming = streaming
        self._images: ImageSource | None = None

    @property
    def preparation(self) -> Preprocessing:
        """How the images are prepared: `preprocessing`, with the resize and crop ratio chosen."""
        return self.preprocessing.chosen(self.resize, self.crop_ratio)

    @property
    def images(self) -> ImageSource:
        """The images, labels and class names evaluated (listed in `setup`)."""
        if self._images is None:
            raise RuntimeError("the images are listed in setup(); call prepare_data() and setup() first")
        return self._images

    @property
    def class_names(self) -> tuple[str, ...]:
        """Classes of the data (empty when unlabelled); known after `setup`."""
        return self.images.class_names

    def prepare_data(self) -> None:
        """Download what `download` asks for, and convert a Hugging Face dataset's parquet files to its
        cache (Lightning calls this once per node, before `setup`, where every rank then reads it)."""
        if self.download:
            download_coco(self._coco_root(), self.split or SPLITS[0])
        if self.source == "hf" and not self.streaming:
            self._listed()

    def setup(self, stage: str) -> None:
        """List the files (the same list on every rank: sorted, subsets seeded) and build the dataset."""
        if self._images is None:
            images = self._listed()
            if images.run_folders:
                log.warning(
                    "left out %d run folder(s) of this tool found among the data (their figures are not "
                    "images): %s",
                    len(images.run_folders),
                    ", ".join(str(folder) for folder in images.run_folders),
                )
            if self.per_class is not None:
                images = per_class_images(images, self.per_class, self.seed)
            if self.limit is not None:
                if self.limit > len(images):
                    log.warning(
                        "--limit %d: the data has only %d images; all are used", self.limit, len(images)
                    )
                images = limit_images(images, self.limit, self.seed)
            self._images = images
        self.dataset = ImageFileDataset(
            self.images,
            self.preparation.transform(self.resolution),
            # decode big JPEGs no smaller than this family's resize needs
            min_side=self.preparation.shorter_side(self.resolution) if self.fast_jpeg else 0,
        )

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
        """Data facts for results.json (`skipped_run_folders` only when some were left out; hf: the
        split read and `hf`, the dataset, its kind, split, columns and streaming, `hf_images`)."""
        run_folders = [str(folder.resolve()) for folder in self.images.run_folders]
        where = self.data_dir
        description = {
            "source": self.source,
            # a dataset name (hf) is no path here
            "data_dir": None if where is None else str(where.resolve() if where.exists() else where),
            "split": self.split,
            "files": len(self.images),
            **({"skipped_run_folders": run_folders} if run_folders else {}),
            "labelled": self.images.labelled,
            "num_classes": len(self.images.class_names),
            "class_names": list(self.images.class_names),
            "resolution": self.resolution,
            "limit": self.limit,
            "per_class": self.per_class,
            "fast_jpeg": self.fast_jpeg,
            "resize": self.resize,
            "crop_ratio": self.crop_ratio,
            "preprocessing": dataclasses.asdict(self.preparation),
            "seed": self.seed,
        }
        description.update(self.images.describe())  # hf: the split read, and `hf` (dataset, columns)
        return description

    def _listed(self) -> ImageSource:
        """The source's images, before any subset (a stream: its first `limit` rows)."""
        if self.source == "hf":
            return hf_images(
                str(_require_dir(self.data_dir, self.source)), self.split, self.image_column,
                self.label_column, self.streaming, take=self.limit,
            )  # fmt: skip
        return list_source_images(self.source, self.data_dir, self.split or SPLITS[0], self._coco_root())

    def _coco_root(self) -> Path:
        return self.data_dir if self.data_dir is not None else default_coco_root()


def _require_dir(data_dir: Path | None, source: str) -> Path:
    if data_dir is None:
        raise DataError(f"--data {source} needs --data-dir DIR")
    return data_dir
