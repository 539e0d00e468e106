"""Maps probe (paper Fig 4): attention maps and, per image, how faithful they are to the output."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, to_uint8_image
from harness.decomposition import ATTENTION_MAP, PIXELS
from probes.base import Probe, ProbeContext
from probes.metrics.faithfulness import Faithfulness

READOUTS = ("attention", "output")
"""Cosines are measured at both readouts; the gallery ranks images by the first."""


def summarise(cosine: Tensor) -> dict[str, float]:
    """Mean, std (ddof 0), median (numpy's), min, max and share of negative values of per-image cosines."""
    return {
        "mean": cosine.mean().item(),
        "std": cosine.std(correction=0).item() if cosine.numel() > 1 else 0.0,
        "median": torch.quantile(cosine, 0.5).item(),
        "min": cosine.min().item(),
        "max": cosine.max().item(),
        "negative_share": (cosine < 0).double().mean().item(),
    }


class MapsProbe(Probe):
    """Cosine between `{readout}/patch` and `{readout}/full` per image, and the maps of the extremes.

    Results: `maps/{attention,output}/patch/{mean,std,median,min,max,negative_share}` over images.
    Arrays: `maps/index` with `maps/{attention,output}/patch` (one cosine per image, index order),
    and the gallery ranked by `attention/patch`: `maps/gallery/{index,cosine,map,image}` (least
    faithful first, ascending, then most faithful, descending) and `maps/gallery/least` (how many
    rows are least faithful).

    Args:
        gallery_size: least and most faithful images kept for the gallery.
    """

    name = "maps"
    needs_pixels = True
    READOUTS: ClassVar[tuple[str, ...]] = READOUTS
    STATS: ClassVar[tuple[str, ...]] = ("mean", "std", "median", "min", "max", "negative_share")
    INDEX: ClassVar[str] = "maps/index"
    GALLERY: ClassVar[tuple[str, ...]] = ("index", "cosine", "map", "image", "least")

    @staticmethod
    def result_name(readout: str, stat: str) -> str:
        """`maps/{readout}/patch/{stat}`, stat in `STATS`."""
        return f"maps/{readout}/patch/{stat}"

    @staticmethod
    def cosine_name(readout: str) -> str:
        """`maps/{readout}/patch`: the array of per-image cosines (in `INDEX` order)."""
        return f"maps/{readout}/patch"

    @staticmethod
    def gallery_name(part: str) -> str:
        """`maps/gallery/{part}`, part in `GALLERY`."""
        return f"maps/gallery/{part}"

    @classmethod
    def from_context(cls, context: ProbeContext) -> MapsProbe:
        return cls(mean=context.info.image_mean, std=context.info.image_std)

    def __init__(
        self,
        gallery_size: int = 6,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        # the gallery's pixels back to uint8 with the normalisation the backbone's family used
        to_image = functools.partial(to_uint8_image, mean=tuple(mean), std=tuple(std))
        self.metric = Faithfulness(gallery_size, to_image=to_image)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        ranking, other = (
            (decomposition[f"{readout}/full"], decomposition[f"{readout}/patch"]) for readout in READOUTS
        )
        self.metric.update(*ranking, *other, decomposition[ATTENTION_MAP], decomposition[PIXELS], indices)

    def compute(self) -> dict[str, float]:
        rows = self._rows()
        results = {}
        for readout, column in zip(READOUTS, ("cosine", "other_cosine"), strict=True):
            for stat, value in summarise(rows[column]).items():
                results[self.result_name(readout, stat)] = value
        return results

    def arrays(self) -> dict[str, Tensor]:
        rows = self._rows()
        cosines = {
            self.cosine_name(r): rows[c] for r, c in zip(READOUTS, ("cosine", "other_cosine"), strict=True)
        }
        gallery = {self.gallery_name(part): rows[f"gallery/{part}"] for part in self.GALLERY}
        return {self.INDEX: rows["index"], **cosines, **gallery}

    def _rows(self) -> dict[str, Tensor]:
        """The metric's results with per-image rows kept 1-D (torchmetrics squeezes one-element
        results to 0-dim, so a run of one image would lose its row axis)."""
        rows = self.metric.compute()
        return {
            name: value if name == "gallery/least" else torch.atleast_1d(value)
            for name, value in rows.items()
        }
