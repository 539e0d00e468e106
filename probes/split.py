"""Attention split (paper Fig 2a): how the last-layer [CLS] attention divides among token groups."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.tokens import GROUPS
from probes.stats import ColumnStats

TWO_WAY = "register_vs_patch"
"""The paper's two-way split: p_register / (p_register + p_patch), per image."""


class AttentionSplit(ColumnStats):
    """Mean and std over images of the [CLS] attention mass on [CLS], registers and patches.

    `update(cls, register, patch)` takes the per-image masses (images,) of each group (each row
    summing to 1); `compute()` returns a dict `{cls, register, patch, register_vs_patch}` ->
    (mean, std) over all images seen, std with ddof 0.

    >>> metric = AttentionSplit()
    >>> metric.update(torch.tensor([0.1, 0.3]), torch.tensor([0.6, 0.2]), torch.tensor([0.3, 0.5]))
    >>> mean, std = metric.compute()["register"]
    >>> round(mean.item(), 6), round(std.item(), 6)
    (0.4, 0.2)
    """

    def __init__(self) -> None:
        super().__init__(columns=len(GROUPS) + 1)

    def update(self, cls: Tensor, register: Tensor, patch: Tensor) -> None:  # type: ignore[override]
        if not cls.shape == register.shape == patch.shape or cls.ndim != 1:
            raise ValueError(
                f"masses must be equal (images,) vectors, got {tuple(cls.shape)}, "
                f"{tuple(register.shape)}, {tuple(patch.shape)}"
            )
        outside_cls = register + patch
        two_way = torch.where(outside_cls > 0, register / outside_cls.clamp_min(1e-30), 0.0)
        super().update(torch.stack([cls, register, patch, two_way], dim=1))

    def compute(self) -> dict[str, tuple[Tensor, Tensor]]:  # type: ignore[override]
        mean, std = super().compute()
        return {name: (mean[i], std[i]) for i, name in enumerate((*GROUPS, TWO_WAY))}
