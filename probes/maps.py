"""Maps probe (paper Fig 4): attention maps and, per image, how faithful they are to the output."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, to_uint8_image
from harness.decomposition import ATTENTION_MAP, PIXELS
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.faithfulness import Faithfulness
from probes.plotting import colour_key, error_bars, models_axis, reader_of, run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

READOUTS = ("attention", "output")
"""Cosines are measured at both readouts; the gallery ranks images by the first."""
READOUT_COLOURS = {"attention": "#1f77b4", "output": "#ff7f0e"}


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
    position = 70
    under_interventions = "decomposition"
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
        preprocessing = context.info.preprocessing
        return cls(mean=preprocessing.mean, std=preprocessing.std)

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

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (
                cls.result_name("attention", "mean"),
                "cosine of patch-only to full contribution, mean over images",
            ),
        )

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Fig 4: the gallery of the least and most faithful maps (maps.png) and the distribution of the
        per-image cosine over the run (faithfulness.png)."""
        figures = {}
        if cls.gallery_name("image") in run.arrays:
            figures["maps.png"] = cls._gallery(run)
        if cls.cosine_name("attention") in run.arrays:
            figures["faithfulness.png"] = cls._distribution(run)
        return figures

    @classmethod
    def _gallery(cls, run: RunView) -> Figure:
        """Attention maps of the least and most faithful images, with each image's cosine."""
        gallery = {part: run.arrays[cls.gallery_name(part)] for part in cls.GALLERY}
        images, maps = gallery["image"].numpy(), gallery["map"].numpy()
        indices, cosines = gallery["index"].tolist(), gallery["cosine"].tolist()
        least = int(gallery["least"])
        rows = [("least faithful", range(least)), ("most faithful", range(least, len(indices)))]
        columns = max(least, len(indices) - least)
        width = max(2.2 * columns, 6.5)  # room for the title with few images
        figure, axes = subplots(2, columns, figsize=(width, 5.8), squeeze=False)
        for row, (label, members) in enumerate(rows):
            for column in range(columns):
                axis = axes[row, column]
                axis.set_xticks([])
                axis.set_yticks([])
                if column >= len(members):
                    axis.axis("off")
                    continue
                i = members[column]
                height, width = images[i].shape[1:]
                attention = maps[i] - maps[i].min()
                axis.imshow(images[i].transpose(1, 2, 0))
                axis.imshow(attention / max(attention.max(), 1e-12), cmap="inferno", alpha=0.55,
                            extent=(0, width, height, 0), interpolation="bilinear")  # fmt: skip
                axis.set_title(f"image {indices[i]}\ncos = {cosines[i]:+.4f}", fontsize=8)
                if column == 0:
                    axis.set_ylabel(label, fontsize=9)
        colour_key(figure, axes[-1, 0], "inferno")
        figure.suptitle(
            "Last-layer [CLS] attention over patches (mean over heads, per-image colour scale) (Fig 4)\n"
            f"cos = cosine of attention/patch to attention/full; {run_title(run)}",
            fontsize=9,
        )
        figure.tight_layout()
        return figure

    @classmethod
    def _distribution(cls, run: RunView) -> Figure:
        """The distribution over images of the cosine between patch-only and full output."""
        figure, axis = subplots(figsize=(5.5, 3.6))
        bins = np.linspace(-1, 1, 41).tolist()
        for readout, colour in READOUT_COLOURS.items():
            cosine = run.arrays[cls.cosine_name(readout)].numpy()
            mean = run.results[cls.result_name(readout, "mean")]
            axis.hist(cosine, bins=bins, weights=np.full(len(cosine), 1 / len(cosine)), histtype="step",
                      linewidth=1.5, color=colour, label=f"{readout} readout (mean {mean:+.3f})")  # fmt: skip
        axis.axvline(0, color="black", linewidth=0.6)
        axis.set_xlim(-1, 1)
        axis.set_xlabel(f"cosine of patch-only to full {reader_of([run])} output, per image")
        axis.set_ylabel("share of images")
        axis.legend(fontsize=8)
        axis.set_title(f"How faithful are the attention maps? (Fig 4)\n{run_title(run)}", fontsize=10)
        figure.tight_layout()
        return figure

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Fig 4 across models: the per-image cosine of the patch-only to the full output (mean ± std),
        one line per readout."""
        if not any(cls.result_name("attention", "mean") in c.run.results for c in compared):
            return {}
        figure, axis = subplots(figsize=(max(5.5, 1.3 * len(compared) + 3), 4.0))
        for readout, colour in READOUT_COLOURS.items():
            means = [c.run.results.get(cls.result_name(readout, "mean"), np.nan) for c in compared]
            stds = [c.run.results.get(cls.result_name(readout, "std"), np.nan) for c in compared]
            axis.errorbar(range(len(compared)), means, yerr=error_bars(stds), marker="o", markersize=4,
                          capsize=2, color=colour, label=f"{readout} readout", linestyle="none")  # fmt: skip
        axis.axhline(0, color="black", linewidth=0.6)
        measured = [
            any(cls.result_name(r, "mean") in c.run.results for r in READOUT_COLOURS) for c in compared
        ]
        models_axis(axis, compared, measured)
        axis.set_ylim(-1.05, 1.05)
        axis.set_ylabel("cosine of patch-only to full output\n(mean ± std over images)")
        axis.legend(fontsize=8)
        axis.set_title("How faithful are the attention maps, per model? (Fig 4)", fontsize=10)
        figure.tight_layout()
        return {"compare_faithfulness.png": figure}
