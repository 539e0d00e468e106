"""Depth probe (`--layers`): where in depth the [CLS] update stops being built from the patches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from harness import GROUPS
from harness.decomposition import DEPTH_PREFIX, depth_quantities
from harness.extras.depth import Depth
from probes.base import ColumnStatsProbe, ProbeContext
from probes.plotting import run_title, subplots, variant_colour
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class DepthProbe(ColumnStatsProbe):
    """Mean and std over images of every per-layer quantity at every chosen block.

    Results: `depth/layer{l}/{quantity}` (mean) and `.../std` for block l (1-based) and
    every quantity of `harness.decomposition.depth_quantities`: the attention split
    (`split/{group}`), the contribution norms (`norm/{group}`, `norm/skip`) and the cosine of each
    variant's output readout to the block's [CLS] output (`cosine/{variant}`). The last block's
    entries complement (never replace) the last-layer names of the other probes.

    Args:
        layers: the decomposed blocks, ascending (the columns of `depth/{quantity}`).
        quantities: the per-layer quantities of the backbone.
    """

    name = "depth"
    position = 100
    needs_layers = True
    needs_cls = True  # each block's [CLS] update

    @staticmethod
    def result_name(layer: int, quantity: str) -> str:
        """`depth/layer{l}/{quantity}`: the mean over images at block l."""
        return f"depth/layer{layer}/{quantity}"

    @staticmethod
    def std_name(layer: int, quantity: str) -> str:
        return f"depth/layer{layer}/{quantity}/std"

    @classmethod
    def from_context(cls, context: ProbeContext) -> DepthProbe:
        info = context.info
        return cls(context.layers, depth_quantities(info.num_registers, info.num_distillation))

    def __init__(self, layers: Sequence[int], quantities: Sequence[str]) -> None:
        if not layers:
            raise ValueError("the depth probe needs decomposed layers (--layers)")
        # quantity-major columns: one (images, quantities x layers) matrix, one update per batch
        columns = [(quantity, layer) for quantity in quantities for layer in layers]
        super().__init__([(self.result_name(layer, q), self.std_name(layer, q)) for q, layer in columns])
        self.layers, self.quantities = tuple(layers), tuple(quantities)

    def extras(self) -> tuple[Depth, ...]:
        return (Depth(self.layers),)

    def columns(self, decomposition: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([decomposition[DEPTH_PREFIX + q] for q in self.quantities], dim=1)

    @classmethod
    def layers_of(cls, run: RunView) -> list[int]:
        """The blocks (1-based) with depth results, in order."""
        return [
            layer for layer in range(1, run.num_layers + 1)
            if cls.result_name(layer, "split/patch") in run.results
        ]  # fmt: skip

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Per block: the [CLS] attention split, each contribution's norm against the skip's, and the
        cosine of each variant's readout to the block's [CLS] output (one line per group)."""
        layers = cls.layers_of(run)
        if not layers:
            return {}
        groups = [g for g in GROUPS if cls.result_name(layers[0], f"split/{g}") in run.results]
        figure, axes = subplots(1, 3, figsize=(13, 3.8))

        def over_depth(quantity: str) -> list[float]:
            return [run.results[cls.result_name(layer, quantity)] for layer in layers]

        for group in groups:
            colour = variant_colour(group)
            axes[0].plot(layers, over_depth(f"split/{group}"), marker="o", markersize=3,
                         color=colour, label=group)  # fmt: skip
            axes[1].plot(layers, list(np.divide(over_depth(f"norm/{group}"), over_depth("norm/skip"))),
                         marker="o", markersize=3, color=colour, label=group)  # fmt: skip
        for variant in (*groups, "skip"):
            axes[2].plot(layers, over_depth(f"cosine/{variant}"), marker="o", markersize=3,
                         color=variant_colour(variant), label=variant)  # fmt: skip
        labels = (
            "[CLS] attention mass (mean)",
            "||contribution|| / ||skip|| (means)",
            "cosine to block output",
        )
        for axis, label in zip(axes, labels, strict=True):
            axis.set_xlabel("block")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_ylabel(label)
            axis.legend(fontsize=7)
        axes[0].set_ylim(-0.02, 1.02)
        axes[2].set_ylim(-1.05, 1.05)
        figure.suptitle(f"Where in depth is [CLS] built from the patches?\n{run_title(run)}", fontsize=10)
        figure.tight_layout()
        return {"depth.png": figure}

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """The depth probe across models over relative depth: the patch share of the [CLS] attention,
        the patch contribution's norm against the skip's, and the cosine of the patch-only readout to
        each block's output; one curve per model."""
        curves = [(c, cls.layers_of(c.run)) for c in compared]
        if not any(layers for _, layers in curves):
            return {}
        panels = (
            ("split/patch", "[CLS] attention mass on patches"),
            ("norm/patch", "||patch contribution|| / ||skip||"),
            ("cosine/patch", "cosine of patch readout to block output"),
        )
        figure, axes = subplots(1, len(panels), figsize=(14, 4))
        for c, layers in curves:
            if not layers:
                continue
            depth = np.array(layers) / c.run.num_layers

            def means(quantity: str, run: RunView = c.run, layers: list[int] = layers) -> np.ndarray:
                return np.array([run.results[cls.result_name(layer, quantity)] for layer in layers])

            values = (means("split/patch"), means("norm/patch") / means("norm/skip"), means("cosine/patch"))
            for axis, curve in zip(axes, values, strict=True):
                axis.plot(
                    depth, curve, marker="o", markersize=3, label=f"{c.label} ({c.run.num_layers} blocks)"
                )
        for axis, (_, label) in zip(axes, panels, strict=True):
            axis.set_xlabel("relative depth (block / number of blocks)")
            axis.set_ylabel(label)
            axis.legend(fontsize=7)
        figure.suptitle("Where in depth is [CLS] built from the patches? (per model)", fontsize=10)
        figure.tight_layout()
        return {"compare_depth.png": figure}
