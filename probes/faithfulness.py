"""Faithfulness of attention maps (paper Fig 4): does the patch-only output point where the full one does?"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.functional import cosine_similarity
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from probes.base import module_key
from probes.features import add_row_states, append_rows, first_of_each_index, gathered_rows, is_empty

_ROWS = ("index", "cosine", "other_cosine")
_GALLERY = ("index", "cosine", "map", "image")


class Gallery(NamedTuple):
    """Images of a run ordered by cosine: `least` faithful first (ascending), then `most` (descending).

    Attributes:
        indices: dataset indices (2k,).
        cosines: their cosines (2k,).
        maps: their attention maps over patches (2k, grid_height, grid_width).
        images: their pixels as uint8 (2k, 3, height, width).
        least: how many of the rows are the least faithful images (the rest are the most faithful).
    """

    indices: Tensor
    cosines: Tensor
    maps: Tensor
    images: Tensor
    least: int


def _gallery_state(name: str) -> str:
    return module_key(f"gallery/{name}")


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
    (images, h, w), the images as uint8 (images, 3, H, W) and their dataset indices. Only the
    `gallery_size` lowest- and highest-cosine images seen so far are kept with their maps and
    pixels, so memory stays fixed; after synchronisation the global extremes are chosen among
    every rank's candidates (a global extreme is always a candidate of its own rank).

    `compute()` returns `(rows, gallery)`: `rows` = {index, cosine, other_cosine}, one per
    distinct dataset index, in index order; `gallery` a `Gallery`.

    Args:
        gallery_size: how many of the least and of the most faithful images to keep.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    index: list[Tensor]

    def __init__(self, gallery_size: int = 6) -> None:
        super().__init__()
        if gallery_size < 1:
            raise ValueError(f"gallery_size must be at least 1, got {gallery_size}")
        self.gallery_size = gallery_size
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
        if images.dtype != torch.uint8 or images.ndim != 4 or maps.ndim != 3:
            raise ValueError(
                f"expected uint8 (images, 3, H, W) pixels and (images, h, w) maps, got {images.dtype} "
                f"{tuple(images.shape)} and {tuple(maps.shape)}"
            )
        indices = indices.long()
        cosine = cosine_similarity(full.double(), part.double(), dim=-1)
        other_cosine = cosine_similarity(other_full.double(), other_part.double(), dim=-1)
        append_rows(self, {"index": indices, "cosine": cosine, "other_cosine": other_cosine})
        candidates = {"index": indices, "cosine": cosine, "map": maps.float(), "image": images}
        for name in _GALLERY:
            kept = getattr(self, _gallery_state(name))
            if kept:
                candidates[name] = torch.cat([kept[0], candidates[name]])
        keep = extremes(candidates["cosine"], candidates["index"], self.gallery_size)
        for name in _GALLERY:
            setattr(self, _gallery_state(name), [candidates[name][keep]])

    def compute(self) -> tuple[dict[str, Tensor], Gallery]:
        if is_empty(self.index):
            raise ValueError("the maps probe saw no image")
        rows = gathered_rows(self, _ROWS)
        gallery = {name: dim_zero_cat(getattr(self, _gallery_state(name))) for name in _GALLERY}
        distinct = first_of_each_index(gallery["index"])
        gallery = {name: tensor[distinct] for name, tensor in gallery.items()}
        order = rank_rows(gallery["cosine"], gallery["index"])
        k = min(self.gallery_size, order.numel() // 2)
        chosen = torch.cat([order[:k], order[k:].flip(0)[: self.gallery_size]])
        chosen_rows = {name: tensor[chosen] for name, tensor in gallery.items()}
        return rows, Gallery(
            chosen_rows["index"], chosen_rows["cosine"], chosen_rows["map"], chosen_rows["image"], least=k
        )
