"""Top-k accuracy of several score sets against scikit-learn's top_k_accuracy_score."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score

from probes.metrics import TopKAccuracy
from tests.probes.tester import check_metric


def test_topk_matches_scikit_learn_everywhere() -> None:
    generator = np.random.default_rng(0)
    num_classes, samples, names = 7, 45, ("full", "patch", "skip")
    scores = generator.normal(size=(len(names), samples, num_classes))
    labels = generator.integers(0, num_classes, samples)
    expected = {
        f"{name}/top{k}": top_k_accuracy_score(labels, scores[row], k=k, labels=range(num_classes))
        for row, name in enumerate(names)
        for k in (1, 5)
    }
    batches = [
        (torch.from_numpy(scores[:, start : start + 8]), torch.from_numpy(labels[start : start + 8]))
        for start in range(0, samples, 8)
    ]
    check_metric(functools.partial(TopKAccuracy, names, (1, 5)), batches, expected, atol=1e-12)


def test_wrong_shapes_are_refused() -> None:
    metric = TopKAccuracy(["a", "b"])
    with pytest.raises(ValueError, match=r"expected scores \(2, samples, classes\)"):
        metric.update(torch.zeros(3, 4, 5), torch.zeros(4, dtype=torch.long))
