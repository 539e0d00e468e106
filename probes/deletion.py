"""Deletion probe (opt-in): does the attention map show what the model used? Delete the patches it
ranks highest and see how far the [CLS] output moves, against random and lowest-ranked deletions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.decomposition import DELETION_FRACTIONS, DELETION_ORDERS, DELETION_PREFIX
from probes.base import Probe, ProbeContext
from probes.metrics.stats import ColumnStats


class DeletionProbe(Probe):
    """Mean and std over images of the cosine between the pooled output with deleted patches and the
    full one, per deletion order and fraction, and the areas between the curves.

    Results: `deletion/{order}/{percent}` (mean) and `.../std` for every order of
    `DELETION_ORDERS` (top: highest last-layer [CLS] attention first; random; bottom) and fraction;
    `deletion/area/{random,bottom}_minus_top`: the area between the control's curve and the top
    curve over the deleted fraction (trapezoids from 0, where every cosine is 1). A map that shows
    what the model used makes deleting its top patches hurt most: a positive area.

    The backbone runs the extra passes (`DecomposingBackbone(..., deletion=...)`): 3 orders x
    fractions forward passes at reduced length per batch, so the probe is left out of `all`.
    """

    name = "deletion"
    needs_pixels = True  # it needs the backbone's extra passes: no replay from saved features
    opt_in = True
    FRACTIONS: ClassVar[tuple[float, ...]] = DELETION_FRACTIONS

    @staticmethod
    def result_name(order: str, fraction: float) -> str:
        """`deletion/{order}/{percent}`, e.g. `deletion/top/25`."""
        return f"deletion/{order}/{round(100 * fraction)}"

    @staticmethod
    def std_name(order: str, fraction: float) -> str:
        return f"deletion/{order}/{round(100 * fraction)}/std"

    @staticmethod
    def area_name(control: str) -> str:
        """`deletion/area/{control}_minus_top`."""
        return f"deletion/area/{control}_minus_top"

    @classmethod
    def from_context(cls, context: ProbeContext) -> DeletionProbe:
        return cls(DELETION_FRACTIONS)

    def __init__(self, fractions: Sequence[float]) -> None:
        super().__init__()
        self.fractions = tuple(fractions)
        self.metric = ColumnStats(len(DELETION_ORDERS) * len(self.fractions))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(
            torch.cat([decomposition[DELETION_PREFIX + order] for order in DELETION_ORDERS], dim=1)
        )

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()
        means = stats["mean"].view(len(DELETION_ORDERS), -1).tolist()
        stds = stats["std"].view(len(DELETION_ORDERS), -1).tolist()
        results: dict[str, float] = {}
        for order, order_means, order_stds in zip(DELETION_ORDERS, means, stds, strict=True):
            for fraction, mean, std in zip(self.fractions, order_means, order_stds, strict=True):
                results[self.result_name(order, fraction)] = mean
                results[self.std_name(order, fraction)] = std
        x = np.array([0.0, *self.fractions])
        curves = {order: np.array([1.0, *row]) for order, row in zip(DELETION_ORDERS, means, strict=True)}
        for control in ("random", "bottom"):
            gap = curves[control] - curves["top"]
            results[self.area_name(control)] = float(((gap[1:] + gap[:-1]) / 2 * np.diff(x)).sum())
        return results
