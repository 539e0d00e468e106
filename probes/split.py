"""Split probe (paper Fig 2a): mean, std and histogram of the per-image [CLS] attention split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from harness import split_names
from harness.tokens import split_groups
from probes.base import Probe, ProbeContext
from probes.metrics.shares import ShareHistogram

TWO_WAY = "register_vs_patch"
"""The paper's two-way split: p_register / (p_register + p_patch), per image."""


class SplitProbe(Probe):
    """Head-averaged [CLS] attention mass on [CLS], registers and patches (and a distilled model's
    distillation token), and the paper's two-way split.

    Results: `split/{cls,register,patch,register_vs_patch}/{mean,std}` over images (std ddof 0),
    and `split/distillation/{mean,std}` for a distilled model.
    Arrays: `split/{column}/histogram` (images per bin of 20 equal bins of [0, 1]) and
    `split/bin_edges`.

    Args:
        num_distillation: distillation tokens of the model (its own column when there is one).
    """

    name = "split"

    @staticmethod
    def columns_for(num_distillation: int = 0) -> tuple[str, ...]:
        """The columns of a model with `num_distillation` distillation tokens: its `split_groups`,
        then the two-way split."""
        return (*split_groups(num_distillation), TWO_WAY)

    COLUMNS: ClassVar[tuple[str, ...]] = columns_for(0)
    """The columns of every model; a distilled model's probe adds `distillation`."""
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
        return cls(context.info.num_distillation)

    def __init__(self, num_distillation: int = 0) -> None:
        super().__init__()
        self.names = split_names(num_distillation)
        self.columns = self.columns_for(num_distillation)
        self.metric = ShareHistogram(columns=len(self.columns))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        masses = {name: decomposition[name] for name in self.names}  # images, each
        shapes = {tuple(mass.shape) for mass in masses.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"split masses must be equal (images,) vectors, got {sorted(shapes)}")
        register, patch = masses["split/register"], masses["split/patch"]
        outside_cls = register + patch
        two_way = torch.where(outside_cls > 0, register / outside_cls.clamp_min(1e-30), 0.0)
        self.metric.update(torch.stack([*masses.values(), two_way], dim=1))

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()
        return {
            self.result_name(column, stat): stats[stat][position].item()
            for position, column in enumerate(self.columns)
            for stat in self.STATS
        }

    def arrays(self) -> dict[str, Tensor]:
        counts = self.metric.compute()["counts"]
        arrays = {self.histogram_name(column): counts[i] for i, column in enumerate(self.columns)}
        return {**arrays, self.BIN_EDGES: self.metric.bin_edges}
