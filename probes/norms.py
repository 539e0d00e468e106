"""Norms probe (paper Fig 5a): L2 norm of each contribution to the [CLS] output, over images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from probes.base import Probe, ProbeContext
from probes.metrics.stats import ColumnStats


class NormsProbe(Probe):
    """Mean and std over images of ||v|| for every variant v (patch, register, cls, skip, full...).

    Results: `norm/{readout}/{variant}` (mean) and `norm/{readout}/{variant}/std`; the paper's
    panel compares `norm/attention/patch` with `norm/attention/skip`.

    Args:
        variants: the `{readout}/{variant}` names the backbone produces.
    """

    name = "norms"

    @staticmethod
    def result_name(variant: str) -> str:
        """`norm/{readout}/{variant}`: the mean norm over images."""
        return f"norm/{variant}"

    @staticmethod
    def std_name(variant: str) -> str:
        return f"norm/{variant}/std"

    @classmethod
    def from_context(cls, context: ProbeContext) -> NormsProbe:
        return cls(context.variants)

    def __init__(self, variants: Sequence[str]) -> None:
        super().__init__()
        self.variants = tuple(variants)
        self.metric = ColumnStats(len(self.variants))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        norms = torch.stack([decomposition[v].double().norm(dim=-1) for v in self.variants], dim=1)
        self.metric.update(norms)

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()
        results = {}
        for column, variant in enumerate(self.variants):
            results[self.result_name(variant)] = stats["mean"][column].item()
            results[self.std_name(variant)] = stats["std"][column].item()
        return results
