"""Deletion probe (opt-in): does the attention map show what the model used? Delete the patches it
ranks highest and see how far the [CLS] output moves, against random and lowest-ranked deletions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.extras.deletion import DELETION_FRACTIONS, DELETION_ORDERS, DELETION_PREFIX, Deletion
from probes.base import ColumnStatsProbe, ProbeContext
from probes.plotting import run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = {"top": "#d62728", "random": "#7f7f7f", "bottom": "#1f77b4"}
Curves = dict[str, tuple[list[float], list[float], list[float]]]
"""order -> (deleted fractions from 0, mean cosines from 1, stds from 0)."""


class DeletionProbe(ColumnStatsProbe):
    """Mean and std over images of the cosine between the pooled output with deleted patches and the
    full one, per deletion order and fraction, and the areas between the curves.

    Results: `deletion/{order}/{percent}` (mean) and `.../std` for every order of
    `DELETION_ORDERS` (top: highest last-layer [CLS] attention first; random; bottom) and fraction;
    `deletion/area/{random,bottom}_minus_top`: the area between the control's curve and the top
    curve over the deleted fraction (trapezoids from 0, where every cosine is 1). A map that shows
    what the model used makes deleting its top patches hurt most: a positive area.

    The backbone runs the deletion passes (`extras`: `harness.extras.Deletion`): 3 orders x fractions
    forward passes at reduced length per batch, so the probe is left out of `all`.
    """

    name = "deletion"
    position = 120
    needs_pixels = True  # it needs the backbone's extra passes: no replay from saved features
    opt_in = True
    under_interventions = "deletion"
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
        return cls(DELETION_FRACTIONS, context.seed)

    def __init__(self, fractions: Sequence[float], seed: int = 0) -> None:
        names = [(self.result_name(o, f), self.std_name(o, f)) for o in DELETION_ORDERS for f in fractions]
        super().__init__(names)
        self.fractions, self.seed = tuple(fractions), seed

    def extras(self) -> tuple[Deletion, ...]:
        return (Deletion(self.fractions, self.seed),)

    def columns(self, decomposition: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([decomposition[DELETION_PREFIX + order] for order in DELETION_ORDERS], dim=1)

    def compute(self) -> dict[str, float]:
        results = super().compute()
        curves = self.curves(results, self.fractions)
        x = np.array(curves["top"][0])
        for control in ("random", "bottom"):
            gap = np.array(curves[control][1]) - np.array(curves["top"][1])
            results[self.area_name(control)] = float(((gap[1:] + gap[:-1]) / 2 * np.diff(x)).sum())
        return results

    @classmethod
    def curves(cls, results: Mapping[str, float], fractions: Sequence[float] = DELETION_FRACTIONS) -> Curves:
        """Every order's curve of the deletion results among `results` (at those of `fractions` they
        hold); empty without them."""
        fractions = [f for f in fractions if cls.result_name("top", f) in results]
        if not fractions:
            return {}
        return {
            order: (
                [0.0, *fractions],
                [1.0, *(results[cls.result_name(order, f)] for f in fractions)],
                [0.0, *(results[cls.std_name(order, f)] for f in fractions)],
            )
            for order in DELETION_ORDERS
        }

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """The deletion test: cosine of the output without the deleted patches to the full one, over the
        share deleted, for the map's top patches, random ones and its bottom ones."""
        curves = cls.curves(run.results)
        if not curves:
            return {}
        figure, axis = subplots(figsize=(5.5, 3.8))
        for order, (x, mean, std) in curves.items():
            label = "random (seeded)" if order == "random" else f"{order} of the attention map"
            axis.errorbar(x, mean, yerr=std, marker="o", markersize=3, capsize=2, color=COLOURS[order],
                          label=label)  # fmt: skip
        area = run.results[cls.area_name("random")]
        axis.set_xlabel("share of patches deleted (keys masked in every layer)")
        axis.set_ylabel("cosine to the full [CLS] output")
        axis.legend(fontsize=8)
        title = f"Does the map show what the model used? area random - top {area:+.3f}\n{run_title(run)}"
        axis.set_title(title, fontsize=10)
        figure.tight_layout()
        return {"deletion.png": figure}

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """The deletion test per model: the top-of-map curve (solid) and the random control (dashed)."""
        curves = [(c, cls.curves(c.run.results)) for c in compared]
        if not any(found for _, found in curves):
            return {}
        figure, axis = subplots(figsize=(6.5, 4))
        for index, (c, found) in enumerate(curves):
            if not found:
                continue
            colour = f"C{index % 10}"
            area = c.run.results[cls.area_name("random")]
            x, top, _ = found["top"]
            axis.plot(
                x, top, marker="o", markersize=3, color=colour, label=f"{c.label}: top (area {area:+.3f})"
            )
            x, random, _ = found["random"]
            axis.plot(x, random, linestyle="--", color=colour, linewidth=1)
        axis.set_xlabel("share of patches deleted")
        axis.set_ylabel("cosine to the full [CLS] output")
        axis.legend(fontsize=7)
        axis.set_title("Deleting the map's top patches (solid) vs random ones (dashed)", fontsize=10)
        figure.tight_layout()
        return {"compare_deletion.png": figure}
