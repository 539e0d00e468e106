"""Layerwise probe (paper Fig 5b): how early the [CLS] token points where it ends up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from harness.decomposition import HIDDEN_CLS_COSINE
from probes.base import ColumnStatsProbe, ProbeContext
from probes.plotting import run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class LayerwiseProbe(ColumnStatsProbe):
    """Cosine similarity of the [CLS] hidden state after each layer to the last layer's [CLS] output.

    Reads `hidden/cls_cosine` (images, layers + 1), the cosine of `hidden/cls` after each layer to
    the last one: index 0 is the embedding output, index l the output of block l (before the
    final norm), so the last column is 1 by construction.

    Results: `layerwise/{l}` (mean over images) and `layerwise/{l}/std` for l = 0..layers.

    Args:
        num_layers: blocks of the backbone.
    """

    name = "layerwise"
    needs_cls = True  # hidden/cls
    position = 60
    under_interventions = "decomposition"

    @staticmethod
    def result_name(layer: int) -> str:
        """`layerwise/{layer}`: the mean cosine over images (0 = embeddings)."""
        return f"layerwise/{layer}"

    @staticmethod
    def std_name(layer: int) -> str:
        return f"layerwise/{layer}/std"

    @classmethod
    def from_context(cls, context: ProbeContext) -> LayerwiseProbe:
        return cls(context.info.num_layers)

    def __init__(self, num_layers: int) -> None:
        super().__init__([(self.result_name(layer), self.std_name(layer)) for layer in range(num_layers + 1)])
        self.num_layers = num_layers

    def columns(self, decomposition: Mapping[str, Tensor]) -> Tensor:
        cosines = decomposition[HIDDEN_CLS_COSINE]  # images, layers + 1
        if cosines.shape[1] != self.num_layers + 1:
            raise ValueError(f"expected {self.num_layers + 1} [CLS] states per image, got {cosines.shape[1]}")
        return cosines

    @classmethod
    def layers_of(cls, run: RunView) -> list[int]:
        """The layers (0 = embeddings) with a layerwise result, in order."""
        return [layer for layer in range(run.num_layers + 1) if cls.result_name(layer) in run.results]

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Fig 5b: cosine of the [CLS] state after each layer to the last layer's [CLS]."""
        layers = cls.layers_of(run)
        if not layers:
            return {}
        means = [run.results[cls.result_name(layer)] for layer in layers]
        stds = [run.results[cls.std_name(layer)] for layer in layers]
        figure, axis = subplots(figsize=(5, 3.6))
        axis.errorbar(layers, means, yerr=stds, marker="o", markersize=3, capsize=2)
        axis.set_xlabel("layer (0 = embeddings)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("cosine to last-layer [CLS] (mean ± std)")
        axis.set_ylim(-1.05, 1.05)
        axis.set_title(f"[CLS] across layers (Fig 5b)\n{run_title(run)}", fontsize=10)
        figure.tight_layout()
        return {"layerwise.png": figure}

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Fig 5b across models: one curve per model over relative depth (models differ in depth)."""
        curves = [(c, cls.layers_of(c.run)) for c in compared]
        if not any(layers for _, layers in curves):
            return {}
        figure, axis = subplots(figsize=(6, 4))
        for c, layers in curves:
            if layers:
                depth = np.array(layers) / max(layers)
                means = [c.run.results[cls.result_name(layer)] for layer in layers]
                axis.plot(depth, means, marker="o", markersize=3, label=f"{c.label} ({max(layers)} layers)")
        axis.set_xlabel("relative depth (layer / number of layers; 0 = embeddings)")
        axis.set_ylabel("cosine to last-layer [CLS] (mean)")
        axis.set_ylim(-1.05, 1.05)
        axis.legend(fontsize=7)
        axis.set_title("[CLS] across layers per model (Fig 5b)", fontsize=10)
        figure.tight_layout()
        return {"compare_layerwise.png": figure}
