from __future__ import annotations

import pytest
import torch

from probes import EvaluatedImages, FeatureStore


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
    assert [t.item() for t in metric.compute()] == [3, 1]
