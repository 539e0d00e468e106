"""COCO: the images of ROOT/val2017 (or train2017); no annotations needed, no labels."""

from __future__ import annotations

import os
from pathlib import Path

from datamodules.download import download_and_extract
from datamodules.images import UNLABELLED, DataError, ImageList, list_image_files

COCO_ARCHIVES: dict[str, tuple[str, str]] = {
    "val": ("http://images.cocodataset.org/zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80"),
}
"""split -> (url, md5) of the official image archive."""


def default_coco_root() -> Path:
    """Where `--download` puts COCO: $CLS_DECOUPLING_CACHE/coco, else ~/.cache/cls-decoupling/coco."""
    cache = os.environ.get("CLS_DECOUPLING_CACHE") or Path.home() / ".cache" / "cls-decoupling"
    return Path(cache) / "coco"


def coco_images(root: Path, split: str = "val") -> ImageList:
    """Every image of ROOT/<split>2017, unlabelled (run folders of this tool left out)."""
    folder = root / f"{split}2017"
    if not folder.is_dir():
        raise DataError(
            f"no COCO image folder {folder} (looked for ROOT/{split}2017/; --download fetches val2017)"
        )
    listing = list_image_files(folder)
    if not listing.files:
        raise DataError(f"{folder} holds no image files")
    return ImageList(listing.files, (UNLABELLED,) * len(listing.files), run_folders=listing.run_folders)


def download_coco(root: Path, split: str = "val") -> Path:
    """Fetch and extract the official archive of `split` into ROOT/<split>2017 (resumable, verified)."""
    if split not in COCO_ARCHIVES:
        raise DataError(f"--download fetches COCO {', '.join(COCO_ARCHIVES)}; {split!r} has no archive here")
    url, md5 = COCO_ARCHIVES[split]
    extracted = download_and_extract(url, md5, root / f".{split}2017.download")
    target = root / f"{split}2017"
    if not target.exists():
        (extracted / f"{split}2017").rename(target)  # the archive holds one folder of that name
    return root
