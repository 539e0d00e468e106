"""Top-k accuracy with one input part held at its mean over the data, against numpy, batch by batch,
cloned, pickled, after reset and across processes."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from probes.metrics import HeldInputAccuracy
from tests.probes.tester import check_metric


def test_held_input_accuracy_matches_numpy_everywhere() -> None:
    generator = np.random.default_rng(0)
    classes, samples, width = 6, 37, 5
    held_weight = generator.normal(size=(classes, width))
    partial = generator.normal(size=(samples, classes))
    held = generator.normal(size=(samples, width)) + 2.0
    labels = generator.integers(0, classes, samples)
    scores = partial + held.mean(axis=0) @ held_weight.T  # every sample's held part at the data's mean
    ranks = (-scores).argsort(axis=1)
    expected = {
        f"top{k}": float(np.mean([label in row[:k] for label, row in zip(labels, ranks, strict=True)]))
        for k in (1, 3)
    }
    batches = [
        tuple(torch.from_numpy(array[start : start + 8]) for array in (partial, held, labels))
        for start in range(0, samples, 8)
    ]
    make = functools.partial(HeldInputAccuracy, torch.from_numpy(held_weight), (1, 3))
    check_metric(make, batches, expected, atol=1e-12)


def test_wrong_shapes_are_refused() -> None:
    metric = HeldInputAccuracy(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"expected partial scores \(3, 4\)"):
        metric.update(torch.zeros(3, 5), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
