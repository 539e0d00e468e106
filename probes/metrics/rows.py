"""Per-sample row states: appended per batch, concatenated across ranks, deduplicated by dataset index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def state_key(name: str) -> str:
    """A row name as a state attribute (which may not hold '/')."""
    return name.replace("/", "__")


def first_of_each_index(indices: Tensor) -> Tensor:
    """Positions that put `indices` in ascending order, keeping the first copy of a repeated index.

    >>> first_of_each_index(torch.tensor([5, 2, 5, 0])).tolist()
    [3, 1, 0]
    """
    order = torch.argsort(indices, stable=True)
    sorted_indices = indices[order]
    first = torch.ones_like(sorted_indices, dtype=torch.bool)
    first[1:] = sorted_indices[1:] != sorted_indices[:-1]
    return order[first]


def is_empty(state: list[Tensor] | Tensor) -> bool:
    """A "cat" state is a list before synchronisation and one tensor after it."""
    return len(state) == 0 if isinstance(state, list) else state.numel() == 0


def add_row_states(metric: Metric, names: Sequence[str]) -> None:
    """One "cat" state per name: per-sample rows, concatenated from every rank when synchronised."""
    for name in names:
        metric.add_state(state_key(name), [], dist_reduce_fx="cat")


def row_state(metric: Metric, name: str) -> list[Tensor]:
    """A state made by `add_row_states`: a list before synchronisation, one tensor after it."""
    return cast(list[Tensor], getattr(metric, state_key(name)))


def append_rows(metric: Metric, rows: Mapping[str, Tensor]) -> None:
    """Append one batch of rows to the states made by `add_row_states`."""
    for name, values in rows.items():
        row_state(metric, name).append(values)


def gathered_rows(metric: Metric, names: Sequence[str]) -> dict[str, Tensor]:
    """The rows of `names` (a metric with an "index" row state): one per distinct dataset index,
    in index order."""
    keep = first_of_each_index(dim_zero_cat(row_state(metric, "index")))
    return {name: dim_zero_cat(row_state(metric, name))[keep] for name in names}
