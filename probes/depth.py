"""Depth probe (`--layers`): where in depth the [CLS] update stops being built from the patches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from harness.decomposition import DEPTH_PREFIX, depth_quantities
from probes.base import Probe, ProbeContext
from probes.metrics.stats import ColumnStats


class DepthProbe(Probe):
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
    needs_layers = True

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
        super().__init__()
        if not layers:
            raise ValueError("the depth probe needs decomposed layers (--layers)")
        self.layers, self.quantities = tuple(layers), tuple(quantities)
        self.metric = ColumnStats(len(self.layers) * len(self.quantities))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        # one (images, quantities x layers) matrix, quantity-major: one ColumnStats update per batch
        self.metric.update(torch.cat([decomposition[DEPTH_PREFIX + q] for q in self.quantities], dim=1))

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()
        means, stds = stats["mean"].tolist(), stats["std"].tolist()
        results = {}
        for position, (quantity, layer) in enumerate(
            (quantity, layer) for quantity in self.quantities for layer in self.layers
        ):
            results[self.result_name(layer, quantity)] = means[position]
            results[self.std_name(layer, quantity)] = stds[position]
        return results
