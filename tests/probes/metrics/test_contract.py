"""torchmetrics' contract for every metric of the project: its keyword arguments pass through, and
`compute()` returns a tensor or a dict of tensors (the probe layer turns them into named floats)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torchmetrics import Metric

import probes.metrics
from harness import EvaluatedImages, FeatureStore
from probes.metrics import (
    ColumnStats,
    Faithfulness,
    HeldInputAccuracy,
    HighNormToken,
    LinearCKA,
    OneShotAccuracy,
    RidgeAccuracy,
    SharedReferenceCKA,
    ShareHistogram,
    TopKAccuracy,
)


def _features(n: int = 12, dims: int = 4) -> Tensor:
    return torch.randn(n, dims, generator=torch.Generator().manual_seed(0))


def _labelled() -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    x = _features()
    return x, {"q": x + 0.1}, torch.arange(12) % 3, torch.arange(12)


EXAMPLES: dict[type[Metric], tuple[Callable[..., Metric], Callable[[], tuple[Any, ...]]]] = {
    ColumnStats: (lambda **kw: ColumnStats(4, **kw), lambda: (_features(),)),
    ShareHistogram: (lambda **kw: ShareHistogram(4, **kw), lambda: (_features().sigmoid(),)),
    LinearCKA: (lambda **kw: LinearCKA(4, **kw), lambda: (_features(), _features() * 2)),
    SharedReferenceCKA: (
        lambda **kw: SharedReferenceCKA(4, 2, **kw),
        lambda: (_features(), torch.stack([_features() * 2, _features().flip(0)])),
    ),
    OneShotAccuracy: (lambda **kw: OneShotAccuracy(["q"], episodes=2, **kw), _labelled),
    RidgeAccuracy: (lambda **kw: RidgeAccuracy(["q"], 4, 3, **kw), _labelled),
    HeldInputAccuracy: (
        lambda **kw: HeldInputAccuracy(torch.ones(3, 4), (1, 2), **kw),
        lambda: (_features(12, 3), _features(12, 4), torch.arange(12) % 3),
    ),
    HighNormToken: (
        lambda **kw: HighNormToken(4, 6, 2, **kw),
        lambda: (torch.tensor([1, 3, 5, 2]), torch.ones(4), torch.ones(4), _features(4), _features(4)),
    ),
    Faithfulness: (
        lambda **kw: Faithfulness(2, **kw),
        lambda: (
            *(_features(5) for _ in range(4)),
            torch.rand(5, 2, 2),
            torch.rand(5, 3, 4, 4),
            torch.arange(5),
        ),
    ),
    TopKAccuracy: (
        lambda **kw: TopKAccuracy(["a", "b"], (1, 2), **kw),
        lambda: (torch.stack([_features(), _features().flip(0)]), torch.arange(12) % 4),
    ),
    EvaluatedImages: (lambda **kw: EvaluatedImages(**kw), lambda: (torch.arange(5),)),
    FeatureStore: (
        lambda **kw: FeatureStore(["output/full"], **kw),
        lambda: ({"output/full": _features(5)}, torch.zeros(5), torch.arange(5)),
    ),
}


def test_every_exported_metric_is_covered() -> None:
    exported = {getattr(probes.metrics, name) for name in probes.metrics.__all__}
    metrics = {item for item in exported if isinstance(item, type) and issubclass(item, Metric)}
    assert metrics <= set(EXAMPLES), f"add an example for {metrics - set(EXAMPLES)}"


@pytest.mark.parametrize("metric_class", list(EXAMPLES), ids=lambda cls: cls.__name__)
def test_keyword_arguments_pass_through_and_compute_returns_tensors(metric_class: type[Metric]) -> None:
    make, arguments = EXAMPLES[metric_class]
    plain = make()
    metric = make(compute_on_cpu=True, sync_on_compute=False, dist_sync_on_step=False)
    assert metric.compute_on_cpu and not metric.sync_on_compute and plain.sync_on_compute
    for each in (plain, metric):
        each.update(*arguments())
        each.update(*arguments())  # after compute_on_cpu moved the list states
        result = each.compute()
        values = result.values() if isinstance(result, dict) else [result]
        assert all(isinstance(value, Tensor) for value in values), f"{metric_class.__name__}: {result!r}"
    with pytest.raises(ValueError, match="Unexpected keyword arguments"):
        make(not_a_torchmetrics_argument=1)
