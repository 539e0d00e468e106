"""Per-image records gathered across ranks and deduplicated by dataset index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from probes.base import module_key


def first_of_each_index(indices: Tensor) -> Tensor:
    """Positions that put `indices` in ascending order, keeping the first copy of a repeated index."""
    order = torch.argsort(indices, stable=True)
    sorted_indices = indices[order]
    first = torch.ones_like(sorted_indices, dtype=torch.bool)
    first[1:] = sorted_indices[1:] != sorted_indices[:-1]
    return order[first]


def is_empty(state: list[Tensor] | Tensor) -> bool:
    """A "cat" state is a list before synchronisation and one tensor after it."""
    return len(state) == 0 if isinstance(state, list) else state.numel() == 0


class EvaluatedImages(Metric):
    """Dataset indices of the images seen: `compute()` returns (distinct count, repeated count).

    >>> metric = EvaluatedImages()
    >>> metric.update(torch.tensor([3, 1])); metric.update(torch.tensor([1, 0]))
    >>> [t.item() for t in metric.compute()]
    [3, 1]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    indices: list[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("indices", [], dist_reduce_fx="cat")

    def update(self, indices: Tensor) -> None:
        self.indices.append(indices.long())

    def compute(self) -> tuple[Tensor, Tensor]:
        if is_empty(self.indices):
            return torch.tensor(0), torch.tensor(0)
        indices = dim_zero_cat(self.indices)
        distinct = torch.unique(indices).numel()
        return torch.tensor(distinct), torch.tensor(indices.numel() - distinct)


class FeatureStore(Metric):
    """Per-image tensors (variants, splits) with their index and label, one row per image.

    `update(tensors, labels, indices)` appends a batch; `compute()` returns `index`, `label`
    and every stored name, gathered from all ranks, one row per distinct dataset index, in
    index order (float32 features).

    Args:
        names: the per-image tensors to keep (e.g. every variant and split).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    index: list[Tensor]
    label: list[Tensor]

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        for state in ("index", "label", *map(module_key, self.names)):
            self.add_state(state, [], dist_reduce_fx="cat")

    def update(self, tensors: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.index.append(indices.long())
        self.label.append(labels.long())
        for name in self.names:
            self._rows(name).append(tensors[name].float())

    def compute(self) -> dict[str, Tensor]:
        if is_empty(self.index):
            raise ValueError("no image was stored")
        index = dim_zero_cat(self.index)
        keep = first_of_each_index(index)
        result = {"index": index[keep], "label": dim_zero_cat(self.label)[keep]}
        for name in self.names:
            result[name] = dim_zero_cat(self._rows(name))[keep]
        return result

    def _rows(self, name: str) -> list[Tensor]:
        return cast(list[Tensor], getattr(self, module_key(name)))
