"""Mean and standard deviation per column over all samples, from float64 sums reduced across ranks."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


def _column_stats_update(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """n, per-column sums and sums of squares (float64) of (samples, columns) values."""
    values = values.double()
    count = torch.tensor(float(values.shape[0]), dtype=torch.float64, device=values.device)
    return count, values.sum(0), values.square().sum(0)


def _column_stats_compute(n: Tensor, sums: Tensor, squares: Tensor) -> dict[str, Tensor]:
    """Mean and population standard deviation (ddof 0) per column."""
    mean = sums / n
    variance = (squares / n - mean.square()).clamp_min(0.0)
    return {"mean": mean, "std": variance.sqrt()}


def column_stats(values: Tensor) -> dict[str, Tensor]:
    """Mean and std (ddof 0) of each column of (samples, columns) values, in float64.

    >>> {k: v.tolist() for k, v in column_stats(torch.tensor([[1.0, 0.0], [3.0, 2.0]])).items()}
    {'mean': [2.0, 1.0], 'std': [1.0, 1.0]}
    """
    return _column_stats_compute(*_column_stats_update(values))


class ColumnStats(Metric):
    """Mean and std (ddof 0) over samples of each column of (samples, columns) values.

    `update(values)` takes (samples, columns); `compute()` returns `{"mean", "std"}`, each
    (columns,) float64, over every sample seen on every rank.

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
    sums: Tensor
    squares: Tensor

    def __init__(self, columns: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if columns < 1:
            raise ValueError(f"need at least one column, got {columns}")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(columns, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", torch.zeros(columns, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        if values.ndim != 2 or values.shape[1] != self.sums.shape[0]:
            raise ValueError(f"expected (samples, {self.sums.shape[0]}) values, got {tuple(values.shape)}")
        n, sums, squares = _column_stats_update(values)
        self.n += n
        self.sums += sums
        self.squares += squares

    def compute(self) -> dict[str, Tensor]:
        return _column_stats_compute(self.n, self.sums, self.squares)
