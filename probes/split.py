"""Attention split (paper Fig 2a): how the last-layer [CLS] attention divides among token groups."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from harness.tokens import GROUPS

TWO_WAY = "register_vs_patch"
"""The paper's two-way split: p_register / (p_register + p_patch), per image."""


def _attention_split_update(masses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """n, per-column sums and sums of squares (float64) of (images, columns) masses."""
    masses = masses.double()
    return (
        torch.tensor(masses.shape[0], dtype=torch.float64, device=masses.device),
        masses.sum(0),
        masses.square().sum(0),
    )


def _attention_split_compute(n: Tensor, sums: Tensor, squares: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population standard deviation (ddof 0) per column."""
    mean = sums / n
    variance = (squares / n - mean.square()).clamp_min(0.0)
    return mean, variance.sqrt()


class AttentionSplit(Metric):
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

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    sums: Tensor
    squares: Tensor

    def __init__(self) -> None:
        super().__init__()
        columns = len(GROUPS) + 1
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(columns, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", torch.zeros(columns, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, cls: Tensor, register: Tensor, patch: Tensor) -> None:
        if not cls.shape == register.shape == patch.shape or cls.ndim != 1:
            raise ValueError(
                f"masses must be equal (images,) vectors, got {tuple(cls.shape)}, "
                f"{tuple(register.shape)}, {tuple(patch.shape)}"
            )
        outside_cls = register + patch
        two_way = torch.where(outside_cls > 0, register / outside_cls.clamp_min(1e-30), 0.0)
        n, sums, squares = _attention_split_update(torch.stack([cls, register, patch, two_way], dim=1))
        self.n += n
        self.sums += sums
        self.squares += squares

    def compute(self) -> dict[str, tuple[Tensor, Tensor]]:
        mean, std = _attention_split_compute(self.n, self.sums, self.squares)
        return {name: (mean[i], std[i]) for i, name in enumerate((*GROUPS, TWO_WAY))}
