"""What the harness records per image across ranks: which images were evaluated, and their features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from common.errors import InsufficientDataError


def one_row_per_index(indices: Tensor) -> Tensor:
    """Positions of one row per distinct index (its first row), in ascending index order.

    >>> one_row_per_index(torch.tensor([5, 2, 5, 0])).tolist()
    [3, 1, 0]
    """
    distinct, inverse = torch.unique(indices, return_inverse=True)
    positions = torch.arange(indices.numel(), device=indices.device)
    first = torch.full_like(distinct, indices.numel())
    return first.scatter_reduce(0, inverse, positions, reduce="amin")


class EvaluatedImages(Metric):
    """Dataset indices of the images seen: `compute()` returns `{"distinct", "repeated"}` counts.

    >>> metric = EvaluatedImages()
    >>> metric.update(torch.tensor([3, 1])); metric.update(torch.tensor([1, 0]))
    >>> {name: count.item() for name, count in metric.compute().items()}
    {'distinct': 3, 'repeated': 1}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    indices: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("indices", [], dist_reduce_fx="cat")

    def update(self, indices: Tensor) -> None:
        self.indices.append(indices.long())

    def compute(self) -> dict[str, Tensor]:
        indices = dim_zero_cat(self.indices) if len(self.indices) else torch.zeros(0, dtype=torch.long)
        distinct = torch.unique(indices).numel()
        return {"distinct": torch.tensor(distinct), "repeated": torch.tensor(indices.numel() - distinct)}


class FeatureStore(Metric):
    """Per-image tensors (variants, splits) with their index and label, one row per image.

    `update(tensors, labels, indices)` appends a batch; `compute()` returns `index`, `label`
    and every stored name, gathered from all ranks, one row per distinct dataset index, in
    index order (float32 features).

    Args:
        names: the per-image tensors to keep (e.g. every variant and split).
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = tuple(names)
        for name in ("index", "label", *self.names):
            self.add_state(_state_key(name), [], dist_reduce_fx="cat")

    def update(self, tensors: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        rows = {"index": indices.long(), "label": labels.long()}
        rows |= {name: tensors[name].float() for name in self.names}
        for name, values in rows.items():
            self._rows(name).append(values)

    def compute(self) -> dict[str, Tensor]:
        if not len(self._rows("index")):
            raise InsufficientDataError("no image was stored")
        keep = one_row_per_index(dim_zero_cat(self._rows("index")))
        return {name: dim_zero_cat(self._rows(name))[keep] for name in ("index", "label", *self.names)}

    def _rows(self, name: str) -> list[Tensor]:
        return cast(list[Tensor], getattr(self, _state_key(name)))


def _state_key(name: str) -> str:
    return name.replace("/", "__")
