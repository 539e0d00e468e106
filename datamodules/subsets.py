"""Seeded subsets chosen from a source's labels (`ImageSource`), before any image is decoded."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from datamodules.images import DataError, ImageSource

_Source = TypeVar("_Source", bound=ImageSource)


def limit_images(images: _Source, limit: int, seed: int) -> _Source:
    """`limit` images chosen with `seed`; stratified by class when labelled.

    Labelled: each class gets its proportional share (largest remainders break ties, then class
    order), drawn at random within the class. Positions keep dataset order.

    >>> from pathlib import Path
    >>> from datamodules.images import ImageList
    >>> images = ImageList(tuple(Path(f"{i}.jpg") for i in range(6)), (0, 0, 0, 0, 1, 1), ("a", "b"))
    >>> [images.labels[i] for i in range(6) if images.files[i] in limit_images(images, 3, 0).files]
    [0, 0, 1]
    """
    if limit < 1:
        raise DataError(f"--limit must be positive, got {limit}")
    if limit >= len(images):
        return images
    rng = np.random.default_rng(seed)
    if not images.labelled:
        return images.subset(sorted(rng.choice(len(images), size=limit, replace=False).tolist()))
    labels = np.asarray(images.labels)
    classes, counts = np.unique(labels, return_counts=True)
    shares = limit * counts / counts.sum()
    quota = np.floor(shares).astype(int)
    for position in np.argsort(-(shares - quota), kind="stable")[: limit - quota.sum()]:
        quota[position] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == label), size=take, replace=False)
        for label, take in zip(classes, quota, strict=True)
    ]
    return images.subset(sorted(np.concatenate(chosen).tolist()))


def per_class_images(images: _Source, per_class: int, seed: int) -> _Source:
    """`per_class` images of every class (all of a smaller class), chosen with `seed`."""
    if per_class < 1:
        raise DataError(f"--per-class must be positive, got {per_class}")
    if not images.labelled:
        raise DataError("--per-class needs labelled data (classes); this source has none")
    rng = np.random.default_rng(seed)
    labels = np.asarray(images.labels)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        chosen.append(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return images.subset(sorted(np.concatenate(chosen).tolist()))
