"""Split probe (paper Fig 2a): mean, std and histogram of the per-image [CLS] attention split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from harness import GROUPS, split_names
from probes.base import Probe, ProbeContext
from probes.metrics.shares import ShareHistogram

TWO_WAY = "register_vs_patch"
"""The paper's two-way split: p_register / (p_register + p_patch), per image."""


class SplitProbe(Probe):
    """Head-averaged [CLS] attention mass on [CLS], registers and patches, and the paper's two-way split.

    Results: `split/{cls,register,patch,register_vs_patch}/{mean,std}` over images (std ddof 0).
    Arrays: `split/{column}/histogram` (images per bin of 20 equal bins of [0, 1]) and
    `split/bin_edges`.
    """

    name = "split"
    COLUMNS: ClassVar[tuple[str, ...]] = (*GROUPS, TWO_WAY)
    STATS: ClassVar[tuple[str, ...]] = ("mean", "std")
    BIN_EDGES: ClassVar[str] = "split/bin_edges"

    @staticmethod
    def result_name(column: str, stat: str) -> str:
        """`split/{column}/{stat}`, column in `COLUMNS`, stat in `STATS`."""
        return f"split/{column}/{stat}"

    @staticmethod
    def histogram_name(column: str) -> str:
        return f"split/{column}/histogram"

    @classmethod
    def from_context(cls, context: ProbeContext) -> SplitProbe:
        return cls()

    def __init__(self) -> None:
        super().__init__()
        self.metric = ShareHistogram(columns=len(self.COLUMNS))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        cls, register, patch = (decomposition[name] for name in split_names())  # images, each
        if not cls.shape == register.shape == patch.shape or cls.ndim != 1:
            raise ValueError(
                f"split masses must be equal (images,) vectors, got {tuple(cls.shape)}, "
                f"{tuple(register.shape)}, {tuple(patch.shape)}"
            )
        outside_cls = register + patch
        two_way = torch.where(outside_cls > 0, register / outside_cls.clamp_min(1e-30), 0.0)
        self.metric.update(torch.stack([cls, register, patch, two_way], dim=1))

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()
        return {
            self.result_name(column, stat): stats[stat][position].item()
            for position, column in enumerate(self.COLUMNS)
            for stat in self.STATS
        }

    def arrays(self) -> dict[str, Tensor]:
        counts = self.metric.compute()["counts"]
        arrays = {self.histogram_name(column): counts[i] for i, column in enumerate(self.COLUMNS)}
        return {**arrays, self.BIN_EDGES: self.metric.bin_edges}
