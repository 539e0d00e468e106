"""Image sources as a dataset of {pixels, label, index}; images that cannot be decoded become counted
skips. A source (`ImageSource`) is a list of images by position: the files of a folder (`ImageList`)
or the rows of a Hugging Face dataset (`datamodules.huggingface.DatasetImages`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from common.errors import UserError
from common.run_folders import is_output_folder, lock_name, locked_folders

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
UNLABELLED = -1


class DataError(UserError):
    """A data directory that is missing, empty, or in a layout the loader does not recognise."""


_Source = TypeVar("_Source", bound="ImageSource")


class ImageSource(Protocol):
    """Images by position (0 .. len - 1, the dataset index), with their labels (`UNLABELLED` when
    there are none) and class names; nothing is decoded before `load`. The subsets, the loader and
    `ImageDataModule.describe` read a source only through this."""

    @property
    def labels(self) -> tuple[int, ...]: ...

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def run_folders(self) -> tuple[Path, ...]:
        """Run folders of this tool left out of the listing (logged and recorded)."""
        ...

    @property
    def labelled(self) -> bool: ...

    def __len__(self) -> int: ...

    def subset(self: _Source, positions: Sequence[int]) -> _Source:
        """The images at `positions`, in that order (their positions become 0, 1, ...)."""
        ...

    def load(self, position: int, min_side: int = 0) -> Image.Image:
        """The image at `position` as 8-bit RGB (`load_rgb`); raises when it cannot be decoded."""
        ...

    def name(self, position: int) -> str:
        """What the image at `position` is called in a skip reason and faithfulness.csv."""
        ...

    def describe(self) -> dict[str, Any]:
        """What results.json's `data` block records of the source beyond the common keys."""
        ...


@dataclass(frozen=True)
class ImageList:
    """Files of a dataset with their labels (`UNLABELLED` when there are none) and class names, and
    the run folders of this tool the listing left out (`list_image_files`)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...] = field(default=())
    run_folders: tuple[Path, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.files) != len(self.labels):
            raise ValueError(f"{len(self.files)} files but {len(self.labels)} labels")

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, positions: Sequence[int]) -> ImageList:
        return ImageList(
            tuple(self.files[i] for i in positions),
            tuple(self.labels[i] for i in positions),
            self.class_names,
            self.run_folders,
        )

    def load(self, position: int, min_side: int = 0) -> Image.Image:
        return load_rgb(self.files[position], min_side)

    def name(self, position: int) -> str:
        return str(self.files[position])

    def describe(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class FileListing:
    """The image files under a folder, and the run folders of this tool left out of the listing."""

    files: tuple[Path, ...]
    run_folders: tuple[Path, ...] = ()


def list_image_files(root: Path) -> FileListing:
    """Every image file under `root`, recursively, in sorted order (hidden files skipped; symbolic
    links to files followed, to folders not), leaving out every run or comparison folder of this tool
    below `root` (`common.run_folders`), finished or not: their figures are not data.

    Raises:
        DataError: `root` itself is such a folder.
    """
    files: list[Path] = []
    run_folders: list[Path] = []
    locked: set[Path] = set()  # folders whose output lock their parent holds
    for folder, subfolders, names in os.walk(root):  # top-down: a parent is seen before its folders
        here = Path(folder)
        lock = _lock_beside(root) if here == root else here in locked
        is_run = is_output_folder({*subfolders, *names}, locked=lock)
        if is_run and here == root:
            raise DataError(
                f"{root} is a run or comparison folder of this tool, not a folder of images; "
                "point --data-dir (or --train-dir) at the images"
            )
        if is_run:
            run_folders.append(here)
            subfolders.clear()  # nothing below it is listed
            continue
        locked.update(here / name for name in locked_folders(names))
        files.extend(
            here / name
            for name in names
            if Path(name).suffix.lower() in IMAGE_SUFFIXES
            and not name.startswith(".")
            and (here / name).is_file()
        )
    return FileListing(tuple(sorted(files)), tuple(sorted(run_folders)))


def _lock_beside(folder: Path) -> bool:
    """Whether the parent of `folder` holds its output lock (as `output_lock` names it: resolved)."""
    resolved = folder.resolve()
    return (resolved.parent / lock_name(resolved.name)).is_file()


def load_rgb(path: Path | IO[bytes], min_side: int = 0) -> Image.Image:
    """Decode an image (a file, or its encoded bytes as a binary stream) as 8-bit RGB, with its EXIF
    rotation applied.

    With `min_side`, JPEGs are decoded at the smallest DCT scale whose shorter side still covers
    it (5x faster on 2000 x 1500 photos; pixels differ slightly from a full decode followed by
    the bicubic resize, so it is opt-in). CMYK, grayscale, palette and
    RGBA images are converted (transparency composited on white); 16-bit and float images are
    scaled to 8 bits rather than clipped.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if min_side and image.format == "JPEG":
                image.draft("RGB", (min_side, min_side))
            return as_rgb(image)


def as_rgb(image: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB, with its EXIF rotation applied (`load_rgb`'s conversions)."""
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / peak * 255.0, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class ImageFileDataset(Dataset[dict[str, Any]]):
    """Samples `{"pixels", "label", "index"}` of a source; an image that cannot be decoded gives
    `{"index", "error"}`."""

    def __init__(
        self, images: ImageSource, transform: Callable[[Image.Image], Tensor], min_side: int = 0
    ) -> None:
        self.images = images
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            pixels = self.transform(self.images.load(index, self.min_side))
        except Exception as error:  # any decoder failure is a counted skip, never a crash
            return {"index": index, "error": f"{self.images.name(index)}: {type(error).__name__}: {error}"}
        return {"pixels": pixels, "label": self.images.labels[index], "index": index}


def collate_images(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decodable samples; list the others under "skipped" as (index, reason)."""
    good = [s for s in samples if "pixels" in s]
    return {
        "pixels": torch.stack([s["pixels"] for s in good]) if good else torch.empty(0, 3, 1, 1),
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "index": torch.tensor([s["index"] for s in good], dtype=torch.long),
        "skipped": [(s["index"], s["error"]) for s in samples if "pixels" not in s],
    }
