"""Which map shows what the model used (issue 22, opt-in): the attribution maps of
`harness.extras.attribution` chosen for the run (`--maps`: by default every registered map, e.g. the
last block's attention, rollout, gradient-weighted attention, integrated gradients, value-weighted
attention, the exact contributions; each head's attention map when asked) scored by the same causal
tests.

Per image and map, for deletion and insertion in the map's order (`top`), its reverse (`bottom`; not
for one head's map) and the random control (one seeded order shared by every map), each measure of
the perturbed outputs: `cosine` to the full output; with class scores (a `--head`, else the k-NN bank
of `--train-data`) `probability` of the class the full output is given (the class the gradient maps
explain) and, with labels, `accuracy` (top-1 against the label, Chefer et al.'s perturbation test).
The area under each curve (trapezoids over the fractions, from the first to the last, divided by
their span: the curve's mean height over [0.10, 0.75]), the map's `gain` over the random control
(deletion: random minus top, the output moves more when the map's top patches go; insertion: top
minus random, it comes back sooner when only they stay), and the rank agreement with the exact
contribution map. Means over images with seeded bootstrap 95 % intervals.

Results: `maps/{map}/{score}/{measure}/{order}/{percent}` (mean; `/std` beside it: the bands of
`attribution_curves.png`), `maps/{map}/{score}/{measure}/area/
{order}`, `maps/{map}/{score}/{measure}/gain`, `maps/random/{score}/{measure}/{percent}` and
`.../area` (the control), `maps/{map}/rank_agreement`, each area, gain and agreement with `/ci_low`
and `/ci_high`; with labels and class scores `maps/full/accuracy` (the class scores' top-1 accuracy
on the full images: where the accuracy curves start). Arrays: `attribution/gallery/{index,image,
<map>}`, every chosen map for the `GALLERY_SIZE` images of smallest dataset index, and those
images (uint8): the same images on any number of processes, drawn side by side in
`attribution_gallery.png`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn
from torchmetrics import Metric

from common.errors import UserError
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, to_uint8_image
from harness import PIXELS
from harness.extras.attribution import (
    ATTRIBUTION_PREFIX,
    CONTROL,
    EXPLAINED,
    HEAD_ORDERS,
    HEAD_PIXEL_ORDERS,
    MAP_ORDERS,
    MAPS,
    PIXEL_FRACTIONS,
    PIXEL_ORDERS,
    PIXEL_SCORE,
    SCORE_FRACTIONS,
    SCORES,
    AttributionMaps,
    head_map_names,
    map_names,
    parse_maps,
    pixel_area,
)
from harness.heads import LinearHead
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.knn import KnnScores
from probes.metrics.rows import add_row_states, append_rows, gathered_rows, row_state
from probes.plotting import colour_key, named, run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BOOTSTRAP = 1000
"""Resamples of the images for the 95 % intervals."""
GALLERY_SIZE = 4
"""Images whose maps are kept and drawn side by side."""
GALLERY = "attribution/gallery/"
MEASURES: tuple[str, ...] = ("cosine", "probability", "accuracy")
"""What is read off each perturbed output: its cosine to the full output; with class scores the
probability of the full output's class; with labels too, whether its class is the label."""
FULL_ACCURACY = "maps/full/accuracy"


BANDS_FROM = 10
"""The fewest images whose curves get bands (`AttributionProbe._curves`)."""
MARKERS = ("s", "^", "v", "D", "P", "X", "*", "h", "<", ">")
SIGNED_CMAP = "RdBu_r"


def _signed(name: str) -> bool:
    """Whether the map `name` has a meaningful sign (`AttributionMap.signed`)."""
    return name in MAPS and MAPS[name].signed


def curve_name(name: str, score: str, order: str = "") -> str:
    """The decomposition's entry of a map's cosine curve, `maps/{map}/{score}/{order}`, or of the
    random control, `maps/random/{score}` (images, fractions); `.../probability` and `.../predicted`
    follow it with class scores."""
    return f"maps/{name}/{score}" + (f"/{order}" if order else "")


def area(cosines: Tensor, fractions: Sequence[float]) -> Tensor:
    """Mean value over the fractions by trapezoids (images,): the area under the curve divided by
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


def class_scores_for(context: ProbeContext, head: LinearHead | None) -> nn.Module | None:
    """The run's class scores: its head (`ProbeContext.linear_head`: a `--head` checked against the
    run, or the model's own classifier; a released DINOv2 head's read each image's own patch mean and
    earlier [CLS] beside the pooled output, `LinearHead.class_scores`), else its k-NN bank (whose
    classes must be the data's, with labels), else None."""
    if head is not None:
        if head.feature != "output/full":
            raise UserError(f"the head was trained on {head.feature}; the maps explain output/full")
        if head.released and PIXEL_SCORE in context.perturbations:
            raise UserError(
                "the pixel perturbation classifies whole perturbed images, and a head released with DINOv2 "
                "reads the clean image's patch mean beside [CLS]: use --perturbation tokens with it"
            )
        return head.class_scores(context.info.hidden_size)
    if context.bank is None:
        return None
    if context.class_names and context.bank.class_names != context.class_names:
        raise UserError(
            f"the k-NN bank's classes ({', '.join(context.bank.class_names[:5])}, ...) are not the "
            f"evaluated data's ({', '.join(context.class_names[:5])}, ...): the attribution probe's "
            "accuracy needs the same classes"
        )
    return KnnScores(context.bank.features, context.bank.labels, len(context.bank.class_names))


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
    and its rank agreement with the exact contribution map (see the module docstring).

    Args:
        seed: seed of the bootstrap and of the random control's order.
        fractions: the shares of the patches the backbone's passes remove or keep.
        mean, std: the normalisation of the images (to draw the gallery).
        maps: the maps scored (empty: every registered map, `harness.extras.attribution.MAPS`).
        heads: the heads (1-based) whose own attention maps are scored too.
        class_scores: the class scores the maps explain and the curves follow, None without.
        labelled: whether the data has labels (the `accuracy` measure).
        perturbations: `tokens` (patches deleted and inserted), `pixels` (Chefer et al.'s pixel test:
            needs class scores and labels) or both.
        pixel_fractions: shares of the pixels blacked out.
        explain: the class the maps explain: `predicted` (the full image's), or `label` (each image's
            label: needs class scores and labels that index their classes).

    Raises:
        ValueError: `pixels`, or `label`, without class scores or labels.
    """

    name = "attribution"
    position = 125
    needs_pixels = True  # the maps read the images and need the backbone's extra passes
    opt_in = True
    reads_head = True  # a head gives the class scores (else the k-NN bank of --train-data)

    def __init__(
        self, seed: int = 0, fractions: Sequence[float] = SCORE_FRACTIONS,
        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
        maps: Sequence[str] = (), heads: Sequence[int] = (), class_scores: nn.Module | None = None,
        labelled: bool = False, perturbations: Sequence[str] = ("tokens",),
        pixel_fractions: Sequence[float] = PIXEL_FRACTIONS, explain: str = "predicted",
    ) -> None:  # fmt: skip
        super().__init__()
        self.seed, self.fractions, self.pixel_fractions = seed, tuple(fractions), tuple(pixel_fractions)
        self.class_scores = class_scores
        if PIXEL_SCORE in perturbations and (class_scores is None or not labelled):
            raise ValueError(
                "the pixel perturbation measures top-1 accuracy against the labels: it needs class scores "
                "and labels that index their classes"
            )
        if explain == "label" and (class_scores is None or not labelled):
            raise ValueError(
                "the maps explain each image's label with class scores: they need class scores and labels "
                "that index their classes"
            )
        self.scoring = AttributionMaps(
            tuple(maps), tuple(heads), self.fractions, seed, class_scores,
            perturbations=tuple(perturbations), pixel_fractions=self.pixel_fractions, explain=explain,
        )  # fmt: skip
        self.maps, self.heads = self.scoring.maps, head_map_names(self.scoring.heads)
        self.map_names = self.scoring.names
        self.scores = SCORES if "tokens" in self.scoring.perturbations else ()
        self.pixels = PIXEL_SCORE in self.scoring.perturbations
        self.measures = MEASURES[: 1 if class_scores is None else 3 if labelled else 2]
        self.rows = AttributionRows(
            [
                *(self.row_name(CONTROL, s, m) for s in self.scores for m in self.measures),
                *(self.row_name(n, s, m, o) for n in self.map_names for s in self.scores
                  for o in self.orders(n) for m in self.measures),
                *([self.row_name(CONTROL, PIXEL_SCORE, "accuracy")] if self.pixels else []),
                *(self.row_name(n, PIXEL_SCORE, "accuracy", o) for n in self.map_names
                  for o in self.pixel_orders(n) if self.pixels),
                *(f"maps/{n}/rank_agreement" for n in self.map_names),
                *(["full/correct"] if "accuracy" in self.measures else []),
            ]
        )  # fmt: skip
        # the gallery's pixels back to uint8 with the normalisation the backbone's family used
        to_image = functools.partial(to_uint8_image, mean=tuple(mean), std=tuple(std))
        self.gallery = FirstImages(GALLERY_SIZE, [f"{ATTRIBUTION_PREFIX}{m}" for m in self.maps], to_image)

    def orders(self, name: str) -> tuple[str, ...]:
        """The orders map `name` is scored in besides the shared random control."""
        return HEAD_ORDERS if name in self.heads else MAP_ORDERS

    def pixel_orders(self, name: str) -> tuple[str, ...]:
        """The orders map `name` is scored in by the pixel test besides the shared random control."""
        return HEAD_PIXEL_ORDERS if name in self.heads else PIXEL_ORDERS

    @staticmethod
    def row_name(name: str, score: str, measure: str, order: str = "") -> str:
        """A per-image curve kept by the probe: `{map}/{score}/{measure}[/{order}]`."""
        return f"{name}/{score}/{measure}" + (f"/{order}" if order else "")

    @classmethod
    def from_context(cls, context: ProbeContext) -> AttributionProbe:
        preprocessing = context.info.preprocessing
        head = context.linear_head()
        # accuracy where the labels index the scored classes (a model's own 1000 ImageNet classes
        # need ImageNet-1k's labels; a saved head's and the bank's class names are checked)
        labelled = len(context.class_names) >= 2 if head is None else context.labels_index(head)
        # no maps named: every map the model's readout has (those of the blocks' [CLS] rows need one)
        maps = context.maps or parse_maps("all", readout=context.info.readout)[0]
        class_scores = class_scores_for(context, head)
        if context.explain == "label" and (class_scores is None or not labelled):
            raise UserError(
                "--explain-class label explains each image's label: "
                + (
                    "add --head (a head file, or model) or --train-data for the class scores"
                    if class_scores is None
                    else f"the data's labels ({len(context.class_names)} classes) do not index the "
                    "class scores' classes"
                )
            )
        if PIXEL_SCORE in context.perturbations and (class_scores is None or not labelled):
            raise UserError(
                "--perturbation pixels measures top-1 accuracy against the labels: "
                + (
                    "add --head (a head file, or model) or --train-data for the class scores"
                    if class_scores is None
                    else f"the data's labels ({len(context.class_names)} classes) do not index the "
                    "class scores' classes"
                )
            )
        return cls(
            context.seed, mean=preprocessing.mean, std=preprocessing.std, maps=maps, heads=context.heads,
            class_scores=class_scores, labelled=labelled, perturbations=context.perturbations,
            explain=context.explain,
        )  # fmt: skip

    def extras(self) -> tuple[AttributionMaps, ...]:
        return (self.scoring,)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        def measured(curve: str, measure: str) -> Tensor:
            if measure == "cosine":
                return decomposition[curve]
            if measure == "probability":
                return decomposition[f"{curve}/probability"]
            return (decomposition[f"{curve}/predicted"] == labels.unsqueeze(1)).float()

        rows = {
            self.row_name(CONTROL, s, m): measured(curve_name(CONTROL, s), m)
            for s in self.scores for m in self.measures
        }  # fmt: skip
        rows |= {
            self.row_name(n, s, m, o): measured(curve_name(n, s, o), m)
            for n in self.map_names for s in self.scores for o in self.orders(n) for m in self.measures
        }  # fmt: skip
        if self.pixels:  # the class of each blacked-out image against the label
            pixel_curves = {(CONTROL, ""): curve_name(CONTROL, PIXEL_SCORE)}
            pixel_curves |= {
                (n, o): curve_name(n, PIXEL_SCORE, o) for n in self.map_names for o in self.pixel_orders(n)
            }
            rows |= {
                self.row_name(n, PIXEL_SCORE, "accuracy", o): measured(curve, "accuracy")
                for (n, o), curve in pixel_curves.items()
            }
        rows |= {
            f"maps/{n}/rank_agreement": decomposition[f"maps/{n}/rank_agreement"] for n in self.map_names
        }
        if "accuracy" in self.measures:
            rows["full/correct"] = (decomposition[EXPLAINED] == labels).float()
        self.rows.update(rows, indices)
        self.gallery.update(decomposition, decomposition[PIXELS], indices)

    def arrays(self) -> dict[str, Tensor]:
        rows = self.gallery.compute()
        rows["index"] = torch.atleast_1d(rows["index"])  # torchmetrics squeezes one image's to 0-dim
        return {GALLERY + name.removeprefix(ATTRIBUTION_PREFIX): value for name, value in rows.items()}

    def compute(self) -> dict[str, float]:
        rows = self.rows.compute()
        results: dict[str, float] = {}

        def summary(name: str, values: Tensor) -> None:
            results[name] = float(values.double().mean())
            results[f"{name}/ci_low"], results[f"{name}/ci_high"] = bootstrap_interval(values, self.seed)

        def curve(prefix: str, row: str) -> Tensor:
            values = rows[row].reshape(-1, len(self.fractions))
            for column, fraction in enumerate(self.fractions):
                point = values[:, column].double()
                results[f"{prefix}/{round(100 * fraction)}"] = float(point.mean())
                results[f"{prefix}/{round(100 * fraction)}/std"] = (
                    float(point.std()) if len(point) > 1 else 0.0
                )
            return area(values, self.fractions)

        if "accuracy" in self.measures:
            results[FULL_ACCURACY] = float(rows["full/correct"].double().mean())
        if self.pixels:
            results |= self._pixel_results(rows, summary)
        for score in self.scores:
            for measure in self.measures:
                controls = curve(f"maps/{CONTROL}/{score}/{measure}", self.row_name(CONTROL, score, measure))
                summary(f"maps/{CONTROL}/{score}/{measure}/area", controls)
                for map_name in self.map_names:
                    prefix = f"maps/{map_name}/{score}/{measure}"
                    areas = {CONTROL: controls}
                    for order in self.orders(map_name):
                        areas[order] = curve(
                            f"{prefix}/{order}", self.row_name(map_name, score, measure, order)
                        )
                        summary(f"{prefix}/area/{order}", areas[order])
                    gain = (
                        areas["random"] - areas["top"]
                        if score == "deletion"
                        else areas["top"] - areas["random"]
                    )
                    summary(f"{prefix}/gain", gain)
        for map_name in self.map_names:
            summary(f"maps/{map_name}/rank_agreement", rows[f"maps/{map_name}/rank_agreement"])
        return results

    def _pixel_results(
        self, rows: Mapping[str, Tensor], summary: Callable[[str, Tensor], None]
    ) -> dict[str, float]:
        """Chefer et al.'s accuracy curves, `maps/{map}/pixels/{order}/{percent}` (and `/std`) and
        `maps/random/pixels/{percent}`, and their areas (`pixel_area`, from the full images' accuracy at
        0), `.../area` with its interval (written by `summary`)."""
        results: dict[str, float] = {}
        clean = rows["full/correct"].double().reshape(-1, 1)
        curves = {f"maps/{CONTROL}/{PIXEL_SCORE}": self.row_name(CONTROL, PIXEL_SCORE, "accuracy")}
        curves |= {
            f"maps/{n}/{PIXEL_SCORE}/{o}": self.row_name(n, PIXEL_SCORE, "accuracy", o)
            for n in self.map_names for o in self.pixel_orders(n)
        }  # fmt: skip
        for prefix, row in curves.items():
            values = rows[row].double().reshape(-1, len(self.pixel_fractions))
            for column, fraction in enumerate(self.pixel_fractions):
                point = values[:, column]
                results[f"{prefix}/{round(100 * fraction)}"] = float(point.mean())
                results[f"{prefix}/{round(100 * fraction)}/std"] = (
                    float(point.std()) if len(point) > 1 else 0.0
                )
            summary(f"{prefix}/area", pixel_area(torch.cat([clean, values], dim=1), self.pixel_fractions))
        return results

    @classmethod
    def run_headlines(cls, run: RunView) -> tuple[Headline, ...]:
        """Each map's deletion gain over random deletion, in cosine and (with labels and class scores)
        in top-1 accuracy; with the pixel test, each map's areas (Chefer et al.'s Table 1)."""
        gains = tuple(
            (
                f"maps/{name}/deletion/{measure}/gain",
                f"deletion gain of the {name} map over random deletion, {measure} (> 0: faithful)",
            )
            for measure in ("cosine", "accuracy")
            for name in cls.maps_of(run)
            if f"maps/{name}/deletion/{measure}/gain" in run.results
        )
        better = {"positive": "most relevant first, lower is better",
                  "negative": "least relevant first, higher is better"}  # fmt: skip
        areas = tuple(
            (
                f"maps/{name}/{PIXEL_SCORE}/{order}/area",
                f"pixel-perturbation area of the {name} map, {order} ({better[order]}; Chefer et al.'s "
                "Table 1)",
            )
            for order in PIXEL_ORDERS
            for name in cls.maps_of(run)
            if f"maps/{name}/{PIXEL_SCORE}/{order}/area" in run.results
        )
        return gains + areas

    @staticmethod
    def maps_of(run: RunView) -> list[str]:
        """The maps (not the heads') the run scored, in registry order."""
        return [name for name in map_names() if f"maps/{name}/rank_agreement" in run.results]

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Each map's gain over the random control (every head's below the maps) and curves, for
        deletion and insertion; the pixel test's curves; the gallery."""
        maps = cls.maps_of(run)
        heads = [
            n
            for n in head_map_names(range(1, run.info.heads_read + 1))
            if f"maps/{n}/rank_agreement" in run.results
        ]
        figures: dict[str, Figure] = {}
        if maps or heads:
            if f"maps/{[*maps, *heads][0]}/deletion/cosine/gain" in run.results:
                figures |= cls._gains(run, maps, heads)
            figures |= named("attribution_pixels.png", cls._pixel_curves(run, maps))
        return figures | named("attribution_gallery.png", cls._gallery(run))

    @classmethod
    def _gains(cls, run: RunView, maps: Sequence[str], heads: Sequence[str]) -> dict[str, Figure]:
        """Each map's gain over the random control (every head's below the maps), for deletion and
        insertion, one row per measure, with 95 % intervals; and the token curves."""
        names = [*maps, *heads]
        measures = [m for m in MEASURES if f"maps/{names[0]}/deletion/{m}/gain" in run.results]
        figure, axes = subplots(
            len(measures), len(SCORES), figsize=(5 * len(SCORES), (0.3 * len(names) + 1.5) * len(measures)),
            sharey=True, squeeze=False,
        )  # fmt: skip
        positions = np.arange(len(names))
        colours = ["#1f77b4" if name in maps else "#9ecae1" for name in names]
        for row, measure in enumerate(measures):
            for axis, score in zip(axes[row], SCORES, strict=True):
                gains = [f"maps/{n}/{score}/{measure}/gain" for n in names]
                means = np.array([run.results[g] for g in gains])
                lows = np.array([run.results.get(f"{g}/ci_low", np.nan) for g in gains])
                highs = np.array([run.results.get(f"{g}/ci_high", np.nan) for g in gains])
                errors = np.nan_to_num(np.stack([means - lows, highs - means]))
                axis.barh(positions, means, xerr=errors, color=colours)
                axis.axvline(0, color="black", linewidth=0.8)
                axis.set_yticks(positions, names)
                axis.set_xlabel(f"{score} gain over random ({measure})")
                axis.xaxis.set_major_locator(MaxNLocator(nbins=5))  # no tick labels run into each other
        axes[0, 0].invert_yaxis()
        figure.suptitle(
            f"Which map shows what the model used: {run_title(run)}\n"
            "bars: mean gain over the random order; black lines: 95 % bootstrap intervals over images",
            fontsize=10,
        )
        figure.tight_layout()
        return named("attribution.png", figure) | named(
            "attribution_curves.png", cls._curves(run, maps, measures)
        )

    @classmethod
    def _pixel_curves(cls, run: RunView, maps: Sequence[str]) -> Figure | None:
        """Chefer et al.'s test: top-1 accuracy against the share of pixels blacked out, from the full
        images' accuracy at 0, each map in both orders (one panel each) and the random control (dashed),
        each map's area in its label (None without the pixel test)."""
        scored = [name for name in maps if f"maps/{name}/{PIXEL_SCORE}/positive/area" in run.results]
        if not scored:
            return None
        figure, axes = subplots(1, len(PIXEL_ORDERS), figsize=(5.5 * len(PIXEL_ORDERS), 3.8), sharey=True,
                                squeeze=False)  # fmt: skip
        start = run.results.get(FULL_ACCURACY, np.nan)

        def curve(prefix: str) -> tuple[list[int], list[float]]:
            points = sorted(int(key.rsplit("/", 1)[1]) for key in run.results
                            if key.startswith(prefix + "/") and key.rsplit("/", 1)[1].isdigit())  # fmt: skip
            return [0, *points], [start, *(run.results[f"{prefix}/{point}"] for point in points)]

        for axis, order in zip(axes[0], PIXEL_ORDERS, strict=True):
            for position, name in enumerate(scored):
                prefix = f"maps/{name}/{PIXEL_SCORE}/{order}"
                area = run.results[f"{prefix}/area"]
                axis.plot(*curve(prefix), "-", marker=MARKERS[position % len(MARKERS)], markersize=4,
                          label=f"{name} ({area:.2f})", alpha=0.85)  # fmt: skip
            control = f"maps/{CONTROL}/{PIXEL_SCORE}"
            axis.plot(*curve(control), "--", marker="o", markersize=4, color="black",
                      label=f"random ({run.results[f'{control}/area']:.2f})")  # fmt: skip
            first = "most" if order == "positive" else "least"
            axis.set_xlabel(f"pixels blacked out (%), {first} relevant first")
            axis.set_title(
                f"{order} ({'lower' if order == 'positive' else 'higher'} area is better)", fontsize=10
            )
            axis.legend(fontsize=8)
        axes[0, 0].set_ylabel("top-1 accuracy")
        figure.suptitle(
            f"Pixel perturbation (Chefer et al.'s test; area = trapezoids x 100): {run_title(run)}",
            fontsize=10,
        )
        figure.tight_layout()
        return figure

    @classmethod
    def _curves(cls, run: RunView, maps: Sequence[str], measures: Sequence[str]) -> Figure:
        """Every map's mean curve in its own order, and the random control (dashed), over the share of
        patches deleted or kept, one row per measure, each map its own marker; bands: the mean +- 1.96
        standard errors, within the measure's range, from `BANDS_FROM` images on (fewer give bands
        wider than the curves' differences, piling into a smear)."""
        figure, axes = subplots(
            len(measures), len(SCORES), figsize=(5.5 * len(SCORES), 3.6 * len(measures)), squeeze=False
        )
        root = np.sqrt(max(run.num_images, 1))
        bands = run.num_images >= BANDS_FROM
        for row, measure in enumerate(measures):
            for axis, score in zip(axes[row], SCORES, strict=True):
                lines = [(f"maps/{name}/{score}/{measure}/top", name, "-") for name in maps]
                lines.append((f"maps/{CONTROL}/{score}/{measure}", "random", "--"))
                for position, (prefix, label, style) in enumerate(lines):
                    points = sorted(
                        int(name.rsplit("/", 1)[1]) for name in run.results
                        if name.startswith(prefix + "/") and name.rsplit("/", 1)[1].isdigit()
                    )  # fmt: skip
                    means = np.array([run.results[f"{prefix}/{point}"] for point in points])
                    errors = (
                        1.96 * np.array([run.results.get(f"{prefix}/{p}/std", 0.0) for p in points]) / root
                    )
                    colour = "black" if label == "random" else None
                    marker = "o" if label == "random" else MARKERS[position % len(MARKERS)]
                    (line,) = axis.plot(
                        points, means, style, marker=marker, markersize=4, label=label, color=colour,
                        alpha=0.85, zorder=3 if label == "random" else 2,
                    )  # fmt: skip
                    if bands:  # a cosine, probability or accuracy is at most 1
                        floor = min(0.0, float(means.min()))
                        low = np.clip(means - errors, floor, 1.0)
                        high = np.clip(means + errors, floor, 1.0)
                        axis.fill_between(points, low, high, color=line.get_color(), alpha=0.08)
                axis.set_xlabel(
                    f"patches {'deleted' if score == 'deletion' else 'kept'} (%), in the map's order"
                )
                axis.set_ylabel(measure)
        axes[0, -1].legend(fontsize=8)
        what = "bands: 95 % of the mean" if bands else f"no bands under {BANDS_FROM} images"
        figure.suptitle(f"Perturbation curves of every map: {run_title(run)} ({what})")
        figure.tight_layout()
        return figure

    @classmethod
    def _gallery(cls, run: RunView) -> Figure | None:
        """The first images and every map of each, side by side (None without the arrays)."""
        if GALLERY + "image" not in run.arrays:
            return None
        images = run.arrays[GALLERY + "image"].numpy()
        indices = run.arrays[GALLERY + "index"].tolist()
        maps = [name for name in map_names() if GALLERY + name in run.arrays]
        figure, axes = subplots(
            len(images), len(maps) + 1, figsize=(2 * (len(maps) + 1), 2 * len(images) + 0.6), squeeze=False
        )
        for row, (image, index) in enumerate(zip(images, indices, strict=True)):
            axes[row, 0].imshow(image.transpose(1, 2, 0))
            axes[row, 0].set_ylabel(f"image {index}")
            for column, name in enumerate(maps, start=1):
                values = run.arrays[GALLERY + name][row].numpy()
                if _signed(name):  # centred at 0: blue writes against the output, red with it
                    extent = max(float(np.abs(values).max()), 1e-12)
                    axes[row, column].imshow(values, cmap=SIGNED_CMAP, vmin=-extent, vmax=extent)
                else:
                    axes[row, column].imshow(values, cmap="viridis")
                if row == 0:
                    axes[row, column].set_title(name, fontsize=9)
        for axis in axes.flat:
            axis.set_xticks([])
            axis.set_yticks([])
        for column, name in enumerate(maps, start=1):
            colour_key(figure, axes[-1, column], SIGNED_CMAP if _signed(name) else "viridis", _signed(name))
        figure.suptitle(f"Attribution maps of the same images (each on its own scale): {run_title(run)}")
        figure.tight_layout()
        return figure

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Each map's deletion gain (cosine) per model."""
        maps = [m for m in map_names() if any(m in cls.maps_of(item.run) for item in compared)]
        if not maps:
            return {}
        figure, axis = subplots(figsize=(max(6.0, 1.1 * len(maps) + 3), 4))
        width = 0.8 / len(compared)
        positions = np.arange(len(maps))
        for offset, item in enumerate(compared):
            values = [item.run.results.get(f"maps/{m}/deletion/cosine/gain", np.nan) for m in maps]
            axis.bar(positions + offset * width - 0.4 + width / 2, values, width, label=item.label)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(positions, maps, rotation=20, ha="right")
        axis.set_ylabel("deletion gain over random (cosine)")
        axis.legend()
        axis.set_title("Which map shows what each model used")
        figure.tight_layout()
        return named("compare_attribution.png", figure)
