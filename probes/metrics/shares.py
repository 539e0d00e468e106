"""Shares in [0, 1] over samples: mean, std (merged as `ColumnStats`) and histogram counts (summed across
ranks) per column."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from probes.metrics.stats import ColumnStats

DEFAULT_BINS = 20


def share_bin_edges(bins: int = DEFAULT_BINS, device: torch.device | None = None) -> Tensor:
    """The `bins + 1` edges of equal bins of [0, 1] (float64), made on `device` (no host copy)."""
    return torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64, device=device)


def share_histogram(shares: Tensor, bins: int = DEFAULT_BINS) -> Tensor:
    """Counts (columns, bins) of (samples, columns) shares in equal bins of [0, 1], as
    `numpy.histogram` counts them (the last bin closed on the right; values outside are clamped).

    >>> share_histogram(torch.tensor([[0.0], [0.5], [1.0]]), bins=2).tolist()
    [[1.0, 2.0]]
    """
    inner_edges = share_bin_edges(bins, shares.device)[1:-1]
    which = torch.bucketize(shares.double().clamp(0.0, 1.0), inner_edges, right=True)  # samples, columns
    counts = torch.zeros(shares.shape[1], bins, dtype=torch.float64, device=shares.device)
    return counts.scatter_add_(1, which.T, torch.ones_like(which.T, dtype=torch.float64))


class ShareHistogram(ColumnStats):
    """Mean, std (ddof 0) and histogram over samples of each column of shares in [0, 1].

    `update(shares)` takes (samples, columns); `compute()` returns `{"mean", "std"}` (columns,)
    and `"counts"` (columns, bins): samples per bin of `bins` equal bins of [0, 1]
    (`bin_edges`), the last bin closed on the right, as numpy.histogram counts them.

    Args:
        columns: number of shares per sample.
        bins: histogram bins.
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).

    >>> metric = ShareHistogram(columns=1, bins=2)
    >>> metric.update(torch.tensor([[0.6], [0.2]]))
    >>> {k: [round(x, 6) for x in v.flatten().tolist()] for k, v in metric.compute().items()}
    {'mean': [0.4], 'std': [0.2], 'counts': [1.0, 1.0]}
    """

    counts: Tensor

    def __init__(self, columns: int, bins: int = DEFAULT_BINS, **kwargs: Any) -> None:
        super().__init__(columns, **kwargs)
        if bins < 1:
            raise ValueError(f"need at least one bin, got {bins}")
        self.add_state("counts", torch.zeros(columns, bins, dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def bin_edges(self) -> Tensor:
        """The `bins + 1` edges of the histogram bins, 0 to 1."""
        return share_bin_edges(self.counts.shape[1])

    def update(self, shares: Tensor) -> None:
        super().update(shares)
        self.counts += share_histogram(shares, self.counts.shape[1])

    def compute(self) -> dict[str, Tensor]:
        return {**super().compute(), "counts": self.counts}
