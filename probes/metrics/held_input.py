"""Top-k accuracy of a linear classifier with one part of its input held at that part's mean over
every sample (all ranks), which is known only once every sample has been seen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from common.errors import InsufficientDataError
from probes.metrics.oneshot import true_class_rank


class HeldInputAccuracy(Metric):
    """Top-k accuracy of scores W [x, h] + b where the part h of every input is replaced by its mean
    over the data: `update(partial, held, labels)` takes partial = W_x x + b (samples, classes), held
    = h (samples, held width) and labels (samples,); `compute()` adds W_h mean(h) to every kept
    partial score and returns `top{k}`. Exact under DDP: the partial scores and labels are gathered
    (`cat`; one float32 row of class scores per sample is held), the sum of h is summed in float64.

    Args:
        held_weight: W_h (classes, held width), the columns of the classifier that read h.
        top_k: the accuracies reported.
        kwargs: torchmetrics' Metric arguments.

    >>> metric = HeldInputAccuracy(torch.tensor([[1.0], [-1.0]]), top_k=(1,))
    >>> partial, held = torch.tensor([[0.0, 0.5], [0.0, 3.0]]), torch.tensor([[1.0], [3.0]])
    >>> metric.update(partial, held, torch.tensor([0, 1]))
    >>> metric.compute()["top1"].item()  # mean h = 2: scores [2, -1.5] and [2, 1]
    0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    held_weight: Tensor
    partial: list[Tensor]
    labels: list[Tensor]
    held_sum: Tensor
    count: Tensor

    def __init__(self, held_weight: Tensor, top_k: Sequence[int] = (1, 5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if held_weight.ndim != 2 or not top_k or min(top_k) < 1:
            raise ValueError(f"need held weights (classes, width) and k >= 1, got {tuple(held_weight.shape)}")
        self.top_k = tuple(top_k)
        self.register_buffer("held_weight", held_weight.detach().clone())
        self.add_state("partial", [], dist_reduce_fx="cat")
        self.add_state("labels", [], dist_reduce_fx="cat")
        self.add_state("held_sum", torch.zeros(held_weight.shape[1], dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, partial: Tensor, held: Tensor, labels: Tensor) -> None:
        if partial.shape != (labels.shape[0], self.held_weight.shape[0]) or held.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected partial scores ({labels.shape[0]}, {self.held_weight.shape[0]}) and held parts "
                f"of {labels.shape[0]} samples, got {tuple(partial.shape)} and {tuple(held.shape)}"
            )
        self.partial.append(partial.detach().float())
        self.labels.append(labels.detach().long())
        self.held_sum += held.detach().double().sum(dim=0)
        self.count += labels.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise InsufficientDataError("top-k accuracy of no sample")
        mean = self.held_sum / self.count
        scores = dim_zero_cat(self.partial).double() + self.held_weight.double() @ mean
        rank = true_class_rank(scores, dim_zero_cat(self.labels))
        return {f"top{k}": (rank < k).double().mean() for k in self.top_k}
