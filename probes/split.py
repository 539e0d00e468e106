"""Attention split (paper Fig 2a): how the last-layer [CLS] attention divides among token groups."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from harness.tokens import GROUPS
from probes.stats import ColumnStats

TWO_WAY = "register_vs_patch"
"""The paper's two-way split: p_register / (p_register + p_patch), per image."""
SPLIT_COLUMNS = (*GROUPS, TWO_WAY)
DEFAULT_BINS = 20


class SplitStats(NamedTuple):
    """Mean, std (ddof 0) and histogram counts (bins,) over images of one share."""

    mean: Tensor
    std: Tensor
    counts: Tensor


class AttentionSplit(ColumnStats):
    """Mean, std and histogram over images of the [CLS] attention mass on [CLS], registers, patches.

    `update(cls, register, patch)` takes the per-image masses (images,) of each group (each row
    summing to 1); `compute()` returns `{cls, register, patch, register_vs_patch}` -> `SplitStats`
    over all images seen: mean, std with ddof 0, and counts in `bins` equal bins of [0, 1]
    (`bin_edges`), the last bin closed on the right, as numpy.histogram counts them.

    >>> metric = AttentionSplit(bins=2)
    >>> metric.update(torch.tensor([0.1, 0.3]), torch.tensor([0.6, 0.2]), torch.tensor([0.3, 0.5]))
    >>> stats = metric.compute()["register"]
    >>> round(stats.mean.item(), 6), round(stats.std.item(), 6), stats.counts.tolist()
    (0.4, 0.2, [1.0, 1.0])
    """

    counts: Tensor

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        super().__init__(columns=len(SPLIT_COLUMNS))
        if bins < 1:
            raise ValueError(f"need at least one bin, got {bins}")
        self.add_state(
            "counts", torch.zeros(len(SPLIT_COLUMNS), bins, dtype=torch.float64), dist_reduce_fx="sum"
        )

    @property
    def bin_edges(self) -> Tensor:
        """The `bins + 1` edges of the histogram bins, 0 to 1."""
        return torch.linspace(0.0, 1.0, self.counts.shape[1] + 1, dtype=torch.float64)

    def update(self, cls: Tensor, register: Tensor, patch: Tensor) -> None:  # type: ignore[override]
        if not cls.shape == register.shape == patch.shape or cls.ndim != 1:
            raise ValueError(
                f"masses must be equal (images,) vectors, got {tuple(cls.shape)}, "
                f"{tuple(register.shape)}, {tuple(patch.shape)}"
            )
        outside_cls = register + patch
        two_way = torch.where(outside_cls > 0, register / outside_cls.clamp_min(1e-30), 0.0)
        shares = torch.stack([cls, register, patch, two_way], dim=1)
        super().update(shares)
        inner_edges = self.bin_edges[1:-1].to(self.counts.device)
        which = torch.bucketize(shares.double().clamp(0.0, 1.0), inner_edges, right=True)  # (images, columns)
        self.counts.scatter_add_(1, which.T, torch.ones_like(which.T, dtype=torch.float64))

    def compute(self) -> dict[str, SplitStats]:  # type: ignore[override]
        mean, std = super().compute()
        return {name: SplitStats(mean[i], std[i], self.counts[i]) for i, name in enumerate(SPLIT_COLUMNS)}
