"""Which map shows what the model used (issue 22, opt-in): every attribution map of
`harness.attribution` (the last block's attention, rollout, gradient-weighted attention, integrated
gradients, value-weighted attention, the exact contributions) scored by the same causal tests.

Per image and map: the area under each perturbation curve (the mean cosine to the full output over
the fractions, trapezoids), for deletion and insertion in the map's order (`top`) and the controls
(`random`, `bottom`: the reversed order); the map's `gain` over the random control (deletion:
random minus top, the output moves more when the map's top patches go; insertion: top minus random,
it comes back sooner when only they stay); and the rank agreement with the exact contribution map.
Means over images with seeded bootstrap 95 % intervals.

Results: `maps/{map}/{score}/{order}/{percent}` (mean cosine), `maps/{map}/{score}/area/{order}`,
`maps/{map}/{score}/gain` and `maps/{map}/rank_agreement`, each with `/ci_low` and `/ci_high` (the
areas, gains and agreement). Arrays: `attribution/gallery/{index,image,<map>}`, every map of the
`GALLERY_SIZE` images of smallest dataset index, and those images (uint8): the same images on any
number of processes, drawn side by side in `attribution_gallery.png`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, to_uint8_image
from harness import PIXELS, ForwardOptions
from harness.attribution import ATTRIBUTION_PREFIX, MAPS, SCORE_FRACTIONS, SCORES
from harness.decomposition import DELETION_ORDERS
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.rows import add_row_states, append_rows, gathered_rows, row_state
from probes.plotting import named, run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BOOTSTRAP = 1000
"""Resamples of the images for the 95 % intervals."""
GALLERY_SIZE = 4
"""Images whose maps are kept and drawn side by side."""
GALLERY = "attribution/gallery/"


def curve_name(name: str, score: str, order: str) -> str:
    """The decomposition's entry of a map's curve: `maps/{map}/{score}/{order}` (images, fractions)."""
    return f"maps/{name}/{score}/{order}"


def area(cosines: Tensor, fractions: Sequence[float]) -> Tensor:
    """Mean cosine over the fractions by trapezoids (images,): the area under the curve divided by
    the span of the fractions."""
    widths = torch.tensor(np.diff(fractions), dtype=cosines.dtype, device=cosines.device)
    return ((cosines[:, 1:] + cosines[:, :-1]) / 2 * widths).sum(dim=1) / (fractions[-1] - fractions[0])


def bootstrap_interval(values: Tensor, seed: int, resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the mean over `resamples` seeded resamples of the images."""
    if values.numel() < 2:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(values.numel(), (resamples, values.numel()), generator=generator)
    means = values.double().cpu()[picks].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high


class AttributionRows(Metric):
    """Per image: every curve's cosines and every map's rank agreement, with the dataset index."""

    full_state_update = False

    def __init__(self, names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = tuple(names)
        add_row_states(self, (*self.names, "index"))

    def update(self, rows: Mapping[str, Tensor], indices: Tensor) -> None:
        append_rows(self, {**{name: rows[name].float() for name in self.names}, "index": indices.long()})

    def compute(self) -> dict[str, Tensor]:
        return gathered_rows(self, self.names)


class FirstImages(Metric):
    """The maps and uint8 pixels of the `size` images of smallest dataset index: pruned to those at
    every update with tensor operations (nothing read back from the device), and once more after the
    ranks' rows are gathered, so every rank holds the same images."""

    full_state_update = False

    def __init__(self, size: int, names: Sequence[str], to_image: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.names, self.to_image = size, tuple(names), to_image
        add_row_states(self, (*self.names, "image", "index"))

    def update(self, maps: Mapping[str, Tensor], pixels: Tensor, indices: Tensor) -> None:
        rows = {name: maps[name].float() for name in self.names}
        rows |= {"image": self.to_image(pixels), "index": indices.long()}
        merged = {name: torch.cat([*row_state(self, name), value]) for name, value in rows.items()}
        keep = merged["index"].argsort(stable=True)[: self.size]
        for name, value in merged.items():
            row_state(self, name)[:] = [value[keep]]

    def compute(self) -> dict[str, Tensor]:
        rows = gathered_rows(self, (*self.names, "image", "index"))  # one per index, in index order
        return {name: value[: self.size] for name, value in rows.items()}


class AttributionProbe(Probe):
    """Every attribution map scored by deletion and insertion against random and reversed controls,
    and its rank agreement with the exact contribution map (see the module docstring)."""

    name = "attribution"
    position = 125
    needs_pixels = True  # the maps read the images and need the backbone's extra passes
    opt_in = True

    def __init__(
        self, seed: int = 0, fractions: Sequence[float] = SCORE_FRACTIONS,
        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
    ) -> None:  # fmt: skip
        super().__init__()
        self.seed, self.fractions = seed, tuple(fractions)
        curves = [curve_name(m, s, o) for m in MAPS for s in SCORES for o in DELETION_ORDERS]
        self.rows = AttributionRows([*curves, *(f"maps/{m}/rank_agreement" for m in MAPS)])
        # the gallery's pixels back to uint8 with the normalisation the backbone's family used
        to_image = functools.partial(to_uint8_image, mean=tuple(mean), std=tuple(std))
        self.gallery = FirstImages(GALLERY_SIZE, [f"{ATTRIBUTION_PREFIX}{m}" for m in MAPS], to_image)

    @classmethod
    def from_context(cls, context: ProbeContext) -> AttributionProbe:
        preprocessing = context.info.preprocessing
        return cls(context.seed, mean=preprocessing.mean, std=preprocessing.std)

    @classmethod
    def forward_options(cls, layers: tuple[int, ...], seed: int) -> ForwardOptions:
        return ForwardOptions(attribution=True, deletion_seed=seed)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.rows.update(decomposition, indices)
        self.gallery.update(decomposition, decomposition[PIXELS], indices)

    def arrays(self) -> dict[str, Tensor]:
        rows = self.gallery.compute()
        return {GALLERY + name.removeprefix(ATTRIBUTION_PREFIX): value for name, value in rows.items()}

    def compute(self) -> dict[str, float]:
        rows = self.rows.compute()
        results: dict[str, float] = {}

        def summary(name: str, values: Tensor) -> None:
            results[name] = float(values.double().mean())
            results[f"{name}/ci_low"], results[f"{name}/ci_high"] = bootstrap_interval(values, self.seed)

        for map_name in MAPS:
            for score in SCORES:
                areas = {}
                for order in DELETION_ORDERS:
                    cosines = rows[curve_name(map_name, score, order)].reshape(-1, len(self.fractions))
                    for column, fraction in enumerate(self.fractions):
                        results[f"{curve_name(map_name, score, order)}/{round(100 * fraction)}"] = float(
                            cosines[:, column].double().mean()
                        )
                    areas[order] = area(cosines, self.fractions)
                    summary(f"maps/{map_name}/{score}/area/{order}", areas[order])
                gain = (
                    areas["random"] - areas["top"] if score == "deletion" else areas["top"] - areas["random"]
                )
                summary(f"maps/{map_name}/{score}/gain", gain)
            summary(f"maps/{map_name}/rank_agreement", rows[f"maps/{map_name}/rank_agreement"])
        return results

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return tuple(
            (
                f"maps/{name}/deletion/gain",
                f"deletion gain of the {name} map over random deletion (> 0: faithful)",
            )
            for name in MAPS
        )

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Each map's gain over the random control, for deletion and insertion, with 95 % intervals."""
        if f"maps/{MAPS[0]}/deletion/gain" not in run.results:
            return {}
        figure, axes = subplots(1, len(SCORES), figsize=(5 * len(SCORES), 0.45 * len(MAPS) + 2), sharey=True)
        positions = np.arange(len(MAPS))
        for axis, score in zip(axes, SCORES, strict=True):
            names = [f"maps/{m}/{score}/gain" for m in MAPS]
            means = np.array([run.results[n] for n in names])
            lows = np.array([run.results.get(f"{n}/ci_low", np.nan) for n in names])
            highs = np.array([run.results.get(f"{n}/ci_high", np.nan) for n in names])
            errors = np.nan_to_num(np.stack([means - lows, highs - means]))
            axis.barh(positions, means, xerr=errors, color="#1f77b4")
            axis.axvline(0, color="black", linewidth=0.8)
            axis.set_yticks(positions, MAPS)
            axis.set_xlabel(f"{score} gain over random (mean cosine)")
            axis.invert_yaxis()
        figure.suptitle(f"Which map shows what the model used: {run_title(run)}")
        figure.tight_layout()
        return named("attribution.png", figure) | named("attribution_gallery.png", cls._gallery(run))

    @classmethod
    def _gallery(cls, run: RunView) -> Figure | None:
        """The first images and every map of each, side by side (None without the arrays)."""
        if GALLERY + "image" not in run.arrays:
            return None
        images = run.arrays[GALLERY + "image"].numpy()
        indices = run.arrays[GALLERY + "index"].tolist()
        figure, axes = subplots(
            len(images), len(MAPS) + 1, figsize=(2 * (len(MAPS) + 1), 2 * len(images) + 0.6), squeeze=False
        )
        for row, (image, index) in enumerate(zip(images, indices, strict=True)):
            axes[row, 0].imshow(image.transpose(1, 2, 0))
            axes[row, 0].set_ylabel(f"image {index}")
            for column, name in enumerate(MAPS, start=1):
                axes[row, column].imshow(run.arrays[GALLERY + name][row].numpy(), cmap="viridis")
                if row == 0:
                    axes[row, column].set_title(name, fontsize=9)
        for axis in axes.flat:
            axis.set_xticks([])
            axis.set_yticks([])
        figure.suptitle(f"Attribution maps of the same images: {run_title(run)}")
        figure.tight_layout()
        return figure

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Each map's deletion gain per model."""
        if not any(f"maps/{MAPS[0]}/deletion/gain" in item.run.results for item in compared):
            return {}
        figure, axis = subplots(figsize=(max(6.0, 1.1 * len(MAPS) + 3), 4))
        width = 0.8 / len(compared)
        positions = np.arange(len(MAPS))
        for offset, item in enumerate(compared):
            values = [item.run.results.get(f"maps/{m}/deletion/gain", np.nan) for m in MAPS]
            axis.bar(positions + offset * width - 0.4 + width / 2, values, width, label=item.label)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(positions, MAPS, rotation=20, ha="right")
        axis.set_ylabel("deletion gain over random")
        axis.legend()
        axis.set_title("Which map shows what each model used")
        figure.tight_layout()
        return named("compare_attribution.png", figure)
