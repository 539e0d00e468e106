"""Per-sample cosine of a partial vector to the full one, with a bounded gallery of the extremes (Fig 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import cosine_similarity
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from common.errors import InsufficientDataError
from probes.metrics.rows import (
    add_row_states,
    append_rows,
    first_of_each_index,
    gathered_rows,
    is_empty,
    row_state,
)

_ROWS = ("index", "cosine", "other_cosine")
_GALLERY = ("index", "cosine", "map", "image")


def _unchanged(images: Tensor) -> Tensor:
    return images


def _gallery_state(name: str) -> str:
    return f"gallery/{name}"


def rank_rows(cosine: Tensor, index: Tensor) -> Tensor:
    """Positions that sort rows by ascending cosine, ties by ascending dataset index (a total order,
    so every rank and every split of the data agree)."""
    by_index = torch.argsort(index, stable=True)
    return by_index[torch.argsort(cosine[by_index], stable=True)]


def extremes(cosine: Tensor, index: Tensor, k: int) -> Tensor:
    """Positions of the k lowest and the k highest rows (`rank_rows` order), each once."""
    order = rank_rows(cosine, index)
    if order.numel() <= 2 * k:
        return order
    return torch.cat([order[:k], order[-k:]])


class Faithfulness(Metric):
    """Per image, the cosine between a partial output and the full one, and a gallery of extremes.

    `update(full, part, other_full, other_part, maps, images, indices)`: the full and partial
    vectors (images, hidden) of the ranking readout and of a second readout, the attention maps
    (images, h, w), the images (images, ...) and their dataset indices. Only the `gallery_size`
    lowest- and highest-cosine images seen so far are kept with their maps and pixels, so memory
    stays fixed, and only each batch's own extremes are passed through `to_image` (e.g.
    normalised pixels to uint8); no update reads anything back from the device. After
    synchronisation the global extremes are chosen among every rank's candidates (a global extreme
    is always a candidate of its own rank).

    `compute()` returns a dict of tensors: `index`, `cosine`, `other_cosine`, one per distinct
    dataset index, in index order; and the gallery, images ordered by cosine, the least faithful
    first (ascending), then the most faithful (descending): `gallery/index` (2k,),
    `gallery/cosine` (2k,), `gallery/map` (2k, h, w), `gallery/image` (2k, ...) and
    `gallery/least` (0-dim: how many rows are least faithful).

    Args:
        gallery_size: how many of the least and of the most faithful images to keep.
        to_image: turns a batch of the images `update` gets into what the gallery keeps.
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    index: list[Tensor]

    def __init__(
        self, gallery_size: int = 6, to_image: Callable[[Tensor], Tensor] = _unchanged, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if gallery_size < 1:
            raise ValueError(f"gallery_size must be at least 1, got {gallery_size}")
        self.gallery_size = gallery_size
        self.to_image = to_image
        add_row_states(self, _ROWS)
        add_row_states(self, [_gallery_state(name) for name in _GALLERY])

    def update(
        self,
        full: Tensor,
        part: Tensor,
        other_full: Tensor,
        other_part: Tensor,
        maps: Tensor,
        images: Tensor,
        indices: Tensor,
    ) -> None:
        if not full.shape[0] == maps.shape[0] == images.shape[0] == indices.shape[0] or maps.ndim != 3:
            raise ValueError(
                f"expected (images, h, w) maps and one image, map and index per vector, got "
                f"{tuple(full.shape)}, {tuple(maps.shape)}, {tuple(images.shape)}, {tuple(indices.shape)}"
            )
        indices = indices.long()
        cosine = cosine_similarity(full.double(), part.double(), dim=-1)
        other_cosine = cosine_similarity(other_full.double(), other_part.double(), dim=-1)
        append_rows(self, {"index": indices, "cosine": cosine, "other_cosine": other_cosine})
        # this batch's own extremes (a global extreme is always one of its batch's), then the
        # extremes among them and the kept candidates: index tensors of known size, so nothing is
        # read back from the device
        chosen = extremes(cosine, indices, self.gallery_size)
        entering = {"index": indices[chosen], "cosine": cosine[chosen], "map": maps[chosen].float()}
        entering["image"] = self.to_image(images[chosen])
        # the candidates kept so far, on this batch's device (compute_on_cpu moves them after update)
        candidates = {
            name: torch.cat([*(t.to(cosine.device) for t in row_state(self, _gallery_state(name))),
                             entering[name]])
            for name in _GALLERY
        }  # fmt: skip
        keep = extremes(candidates["cosine"], candidates["index"], self.gallery_size)
        for name in _GALLERY:
            row_state(self, _gallery_state(name))[:] = [candidates[name][keep]]

    def compute(self) -> dict[str, Tensor]:
        if is_empty(self.index):
            raise InsufficientDataError("the maps probe saw no image")
        rows = gathered_rows(self, _ROWS)
        gallery = {name: dim_zero_cat(row_state(self, _gallery_state(name))) for name in _GALLERY}
        distinct = first_of_each_index(gallery["index"])
        gallery = {name: tensor[distinct] for name, tensor in gallery.items()}
        order = rank_rows(gallery["cosine"], gallery["index"])
        k = min(self.gallery_size, order.numel() // 2)
        chosen = torch.cat([order[:k], order[k:].flip(0)[: self.gallery_size]])
        chosen_rows = {_gallery_state(name): tensor[chosen] for name, tensor in gallery.items()}
        return {**rows, **chosen_rows, _gallery_state("least"): torch.tensor(k)}
