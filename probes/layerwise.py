"""Layerwise probe (paper Fig 5b): how early the [CLS] token points where it ends up."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from harness.decomposition import HIDDEN_CLS_COSINE
from probes.base import Probe, ProbeContext
from probes.metrics.stats import ColumnStats


class LayerwiseProbe(Probe):
    """Cosine similarity of the [CLS] hidden state after each layer to the last layer's [CLS] output.

    Reads `hidden/cls_cosine` (images, layers + 1), the cosine of `hidden/cls` after each layer to
    the last one: index 0 is the embedding output, index l the output of block l (before the
    final norm), so the last column is 1 by construction.
    Results: `layerwise/{l}` (mean over images) and `layerwise/{l}/std` for l = 0..layers.

    Args:
        num_layers: blocks of the backbone.
    """

    name = "layerwise"

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
        super().__init__()
        self.num_layers = num_layers
        self.metric = ColumnStats(num_layers + 1)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        cosines = decomposition[HIDDEN_CLS_COSINE]  # images, layers + 1
        if cosines.shape[1] != self.num_layers + 1:
            raise ValueError(f"expected {self.num_layers + 1} [CLS] states per image, got {cosines.shape[1]}")
        self.metric.update(cosines)

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()
        results = {}
        for layer in range(self.num_layers + 1):
            results[self.result_name(layer)] = stats["mean"][layer].item()
            results[self.std_name(layer)] = stats["std"][layer].item()
        return results
