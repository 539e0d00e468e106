from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from harness import EvaluatedImages, FeatureStore
from harness.records import one_row_per_index
from probes.metrics.rows import first_of_each_index
from tests.probes.tester import check_metric


def test_feature_store_orders_by_index_and_drops_repeats() -> None:
    store = FeatureStore(["output/full"])
    store.update({"output/full": torch.tensor([[3.0], [1.0]])}, torch.tensor([0, 1]), torch.tensor([3, 1]))
    store.update({"output/full": torch.tensor([[1.5], [0.0]])}, torch.tensor([1, 0]), torch.tensor([1, 0]))
    result = store.compute()
    assert result["index"].tolist() == [0, 1, 3]
    assert result["label"].tolist() == [0, 1, 0]
    assert result["output/full"].flatten().tolist() == [0.0, 1.0, 3.0]


def test_feature_store_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="no image was stored"):
        FeatureStore(["x"]).compute()


def test_evaluated_images_counts_repeats() -> None:
    metric = EvaluatedImages()
    metric.update(torch.tensor([0, 1, 2]))
    metric.update(torch.tensor([2]))
    assert {name: t.item() for name, t in metric.compute().items()} == {"distinct": 3, "repeated": 1}


def test_feature_store_tester_everywhere() -> None:
    rng = np.random.default_rng(2)
    indices = rng.permutation(40)[:23]
    features = rng.normal(size=(23, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=23)
    batches = [
        ({"output/patch": torch.from_numpy(features[s : s + 5])}, torch.from_numpy(labels[s : s + 5]),
         torch.from_numpy(indices[s : s + 5]))
        for s in range(0, 23, 5)
    ]  # fmt: skip
    order = np.argsort(indices)
    reference = {"index": indices[order], "label": labels[order], "output/patch": features[order]}
    check_metric(functools.partial(FeatureStore, ["output/patch"]), batches, reference, atol=0)
    check_metric(EvaluatedImages, [(b[2],) for b in batches], {"distinct": 23, "repeated": 0}, atol=0)


def test_one_row_per_index_agrees_with_the_metrics_deduplication() -> None:
    """The harness's records and the metrics deduplicate by index the same way (first row, index order)."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        indices = torch.from_numpy(rng.integers(0, 12, size=int(rng.integers(1, 30))))
        assert one_row_per_index(indices).tolist() == first_of_each_index(indices).tolist()
