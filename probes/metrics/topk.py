"""Top-k accuracy of several score sets at once, counted on the device without reading anything back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from common.errors import InsufficientDataError
from probes.metrics.oneshot import true_class_rank


class TopKAccuracy(Metric):
    """Top-k accuracy of each of several named score sets for the same samples.

    `update(scores, labels)`: scores (sets, samples, classes) in the order of `names`, labels
    (samples,). The counts of correct samples are summed in one (sets, len(top_k)) float64 state,
    so an update is a few kernels and no host-device synchronisation (torchmetrics'
    MulticlassAccuracy validates and bins its inputs on the host). `compute()` returns
    `{name}/top{k}` per name and k: the share of samples whose true class ranks among the k
    highest scores.

    Args:
        names: the score sets.
        top_k: the accuracies reported.
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).

    >>> metric = TopKAccuracy(["a"], top_k=(1, 2))
    >>> metric.update(torch.tensor([[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]]), torch.tensor([2, 0]))
    >>> {name: value.item() for name, value in metric.compute().items()}
    {'a/top1': 0.5, 'a/top2': 1.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    count: Tensor

    def __init__(self, names: Sequence[str], top_k: Sequence[int] = (1, 5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not names or not top_k or min(top_k) < 1:
            raise ValueError(f"need at least one name and k >= 1, got {list(names)} and {list(top_k)}")
        self.names, self.top_k = tuple(names), tuple(top_k)
        self.add_state("correct", torch.zeros(len(self.names), len(self.top_k), dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: Tensor, labels: Tensor) -> None:
        if scores.ndim != 3 or scores.shape[0] != len(self.names) or scores.shape[1] != labels.shape[0]:
            raise ValueError(
                f"expected scores ({len(self.names)}, samples, classes) for {labels.shape[0]} labels, "
                f"got {tuple(scores.shape)}"
            )
        rank = true_class_rank(scores, labels.long().expand(scores.shape[0], -1))
        hits = torch.stack([(rank < k).sum(dim=1) for k in self.top_k], dim=-1)  # no host-made tensor
        self.correct += hits.double()
        self.count += labels.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise InsufficientDataError("top-k accuracy of no sample")
        accuracy = self.correct / self.count
        return {
            f"{name}/top{k}": accuracy[row, column]
            for row, name in enumerate(self.names)
            for column, k in enumerate(self.top_k)
        }
