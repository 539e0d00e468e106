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


def add_row_states(metric: Metric, names: Sequence[str]) -> None:
    """One "cat" state per name: per-image rows, concatenated from every rank when synchronised."""
    for name in names:
        metric.add_state(module_key(name), [], dist_reduce_fx="cat")


def _row_state(metric: Metric, name: str) -> list[Tensor]:
    """A state made by `add_row_states`: a list before synchronisation, one tensor after it."""
    return cast(list[Tensor], getattr(metric, module_key(name)))


def append_rows(metric: Metric, rows: Mapping[str, Tensor]) -> None:
    """Append one batch of rows to the states made by `add_row_states`."""
    for name, values in rows.items():
        _row_state(metric, name).append(values)


def gathered_rows(metric: Metric, names: Sequence[str]) -> dict[str, Tensor]:
    """The rows of `names` (a metric with an "index" row state): one per distinct dataset index,
    in index order."""
    keep = first_of_each_index(dim_zero_cat(_row_state(metric, "index")))
    return {name: dim_zero_cat(_row_state(metric, name))[keep] for name in names}


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
        add_row_states(self, ("index", "label", *self.names))

    def update(self, tensors: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        append_rows(self, {"index": indices.long(), "label": labels.long()})
        append_rows(self, {name: tensors[name].float() for name in self.names})

    def compute(self) -> dict[str, Tensor]:
        if is_empty(self.index):
            raise ValueError("no image was stored")
        return gathered_rows(self, ("index", "label", *self.names))
