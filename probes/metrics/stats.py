"""Mean and standard deviation per column over all samples, merged exactly across batches and ranks.

Each rank keeps its count, mean and centred sum of squares (M2) per column in float64; batches and
ranks are combined with Chan et al.'s parallel formula, which never subtracts two large sums, so a
std of nearly constant values keeps its digits whatever the batch sizes or the number of ranks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


def _column_stats_update(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """n, per-column mean and centred sum of squares (float64) of (samples, columns) values."""
    values = values.double()
    count = values.new_full((), float(values.shape[0]))  # made on the device: torch.tensor would copy
    mean = values.mean(0) if values.shape[0] else values.new_zeros(values.shape[1])
    return count, mean, (values - mean).square().sum(0)


def merge_moments(counts: Tensor, means: Tensor, m2s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Count, mean and M2 of the union of groups, from each group's (groups,), (groups, columns) and
    (groups, columns): mean = sum n_k mean_k / n, M2 = sum M2_k + sum n_k (mean_k - mean)^2."""
    n = counts.sum()
    weights = (counts / n.clamp_min(1)).unsqueeze(1)
    mean = (weights * means).sum(0)
    m2 = m2s.sum(0) + (counts.unsqueeze(1) * (means - mean).square()).sum(0)
    return n, mean, m2


def _column_stats_compute(n: Tensor, mean: Tensor, m2: Tensor) -> dict[str, Tensor]:
    """Mean and population standard deviation (ddof 0) per column."""
    return {"mean": mean, "std": (m2 / n).sqrt()}


def column_stats(values: Tensor) -> dict[str, Tensor]:
    """Mean and std (ddof 0) of each column of (samples, columns) values, in float64.

    >>> {k: v.tolist() for k, v in column_stats(torch.tensor([[1.0, 0.0], [3.0, 2.0]])).items()}
    {'mean': [2.0, 1.0], 'std': [1.0, 1.0]}
    """
    return _column_stats_compute(*_column_stats_update(values))


class ColumnStats(Metric):
    """Mean and std (ddof 0) over samples of each column of (samples, columns) values.

    `update(values)` takes (samples, columns); `compute()` returns `{"mean", "std"}`, each
    (columns,) float64, over every sample seen on every rank. Each state holds one row per rank
    (its count, mean and M2), gathered and merged with `merge_moments` in `compute`.

    Args:
        columns: number of columns.
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).

    >>> metric = ColumnStats(2)
    >>> metric.update(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))
    >>> {k: v.tolist() for k, v in metric.compute().items()}
    {'mean': [2.0, 1.0], 'std': [1.0, 1.0]}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    mean: Tensor
    m2: Tensor

    def __init__(self, columns: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if columns < 1:
            raise ValueError(f"need at least one column, got {columns}")
        self.columns = columns
        self.add_state("n", torch.zeros(1, dtype=torch.float64), dist_reduce_fx="cat")
        self.add_state("mean", torch.zeros(1, columns, dtype=torch.float64), dist_reduce_fx="cat")
        self.add_state("m2", torch.zeros(1, columns, dtype=torch.float64), dist_reduce_fx="cat")

    def update(self, values: Tensor) -> None:
        if values.ndim != 2 or values.shape[1] != self.columns:
            raise ValueError(f"expected (samples, {self.columns}) values, got {tuple(values.shape)}")
        count, mean, m2 = _column_stats_update(values)
        # every row held so far (one, or several after torchmetrics' forward/merge_state) and the batch
        n, merged_mean, merged_m2 = merge_moments(
            torch.cat([self.n.view(-1), count.view(1)]),
            torch.cat([self.mean.view(-1, self.columns), mean.view(1, -1)]),
            torch.cat([self.m2.view(-1, self.columns), m2.view(1, -1)]),
        )
        self.n, self.mean, self.m2 = n.view(1), merged_mean.view(1, -1), merged_m2.view(1, -1)

    def compute(self) -> dict[str, Tensor]:
        # one row before synchronisation, one per rank after it
        per_rank = self.n.view(-1), self.mean.view(-1, self.columns), self.m2.view(-1, self.columns)
        return _column_stats_compute(*merge_moments(*per_rank))
