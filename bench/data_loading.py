"""Images/s decoded and transformed by the data pipeline, per loader worker, on real JPEGs.

    python bench/data_loading.py [--images 96] [--size 640x480] [--workers 0,1,2]

Writes JPEGs cut from scikit-learn's sample photos to a temporary folder, then times a full
pass of the evaluation pipeline (decode, EXIF, RGB, resize 256 bicubic, crop 224, normalise,
collate) with each worker count, after one warm-up pass; and the same with JPEG draft
decoding switched off, to show what it saves on large photos.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images
from torch.utils.data import DataLoader

from common.preparation import DINOV2_EVALUATION
from datamodules import ImageFileDataset, collate_images, evaluation_transform, folder_images


def write_jpegs(folder: Path, count: int, width: int, height: int) -> None:
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] // 4), rng.integers(0, photo.shape[1] // 4)
        crop = Image.fromarray(photo[top:, left:]).resize((width, height), Image.Resampling.BICUBIC)
        crop.save(folder / f"{i:05d}.jpg", quality=90)


def images_per_second(dataset: ImageFileDataset, workers: int, batch_size: int = 16) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_images,
                        persistent_workers=workers > 0)  # fmt: skip
    for _ in loader:  # warm-up: worker start, file cache
        pass
    started = time.perf_counter()
    count = sum(len(batch["index"]) for batch in loader)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", default="640x480", help="width x height of the JPEGs")
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(Path(folder), args.images, width, height)
        images = folder_images(Path(folder))
        transform = evaluation_transform(224)
        drafted = ImageFileDataset(images, transform, min_side=DINOV2_EVALUATION.shorter_side(224))
        full = ImageFileDataset(images, transform)
        for workers in (int(w) for w in args.workers.split(",")):
            fast, slow = images_per_second(drafted, workers), images_per_second(full, workers)
            per_worker = fast / max(workers, 1)
            print(
                f"{args.images} JPEGs {width}x{height}, {workers} workers: {fast:.1f} images/s "
                f"({per_worker:.1f} per worker); without JPEG draft {slow:.1f} images/s ({fast / slow:.2f}x)"
            )


if __name__ == "__main__":
    main()
