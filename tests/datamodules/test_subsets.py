from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from datamodules.images import UNLABELLED, DataError, ImageList
from datamodules.subsets import limit_images, per_class_images


def make_images(counts: dict[int, int]) -> ImageList:
    labels = tuple(label for label, count in counts.items() for _ in range(count))
    return ImageList(
        tuple(Path(f"{i:04d}.jpg") for i in range(len(labels))), labels, tuple(f"c{c}" for c in counts)
    )


def test_limit_is_stratified_seeded_and_ordered() -> None:
    images = make_images({0: 60, 1: 30, 2: 10})
    subset = limit_images(images, 20, seed=1)
    assert Counter(subset.labels) == {0: 12, 1: 6, 2: 2}
    assert list(subset.files) == sorted(subset.files)  # dataset order kept
    assert limit_images(images, 20, seed=1) == subset and limit_images(images, 20, seed=2) != subset
    remainders = limit_images(make_images({0: 5, 1: 5, 2: 5}), 4, seed=0)
    assert sorted(Counter(remainders.labels).values()) == [1, 1, 2]


def test_limit_unlabelled_and_above_size() -> None:
    images = ImageList(tuple(Path(f"{i}.jpg") for i in range(10)), (UNLABELLED,) * 10)
    assert len(limit_images(images, 3, seed=0).files) == 3
    assert limit_images(images, 50, seed=0) is images


def test_per_class() -> None:
    subset = per_class_images(make_images({0: 6, 1: 2, 2: 9}), 3, seed=0)
    assert Counter(subset.labels) == {0: 3, 1: 2, 2: 3}
    with pytest.raises(DataError, match="needs labelled data"):
        per_class_images(ImageList((Path("a.jpg"),), (UNLABELLED,)), 1, seed=0)
    with pytest.raises(DataError, match="--per-class must be positive"):
        per_class_images(make_images({0: 2}), 0, seed=0)
