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
from probes.attribution_figures import (
    FULL_ACCURACY,
    GALLERY,
    MEASURES,
    compared_gain_figure,
    gain_figures,
    gallery_figure,
    pixel_figure,
)
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.knn import KnnScores
from probes.metrics.rows import add_row_states, append_rows, gathered_rows, row_state
from probes.plotting import named
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BOOTSTRAP = 1000
"""Resamples of the images for the 95 % intervals."""
GALLERY_SIZE = 4
"""Images whose maps are kept and drawn side by side."""


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


def labelled_classes_asked(perturbations: Sequence[str], explain: str) -> list[str]:
    """What of the probe's settings reads class scores and labels that index their classes, each as
    the start of a refusal: the pixel test (accuracy against the labels), maps explaining the label."""
    asked = (
        (PIXEL_SCORE in perturbations, "the pixel perturbation (--perturbation pixels) measures top-1 "
                                       "accuracy against the labels"),
        (explain == "label", "the maps explaining each image's label (--explain-class label) read its class"),
    )  # fmt: skip
    return [why for needed, why in asked if needed]


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
        if (asking := labelled_classes_asked(perturbations, explain)) and (
            class_scores is None or not labelled
        ):
            raise ValueError(f"{asking[0]}: it needs class scores and labels that index their classes")
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
        asking = labelled_classes_asked(context.perturbations, context.explain)
        if asking and (class_scores is None or not labelled):
            raise UserError(
                f"{asking[0]}: "
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
                figures |= gain_figures(run, maps, heads)
            figures |= named("attribution_pixels.png", pixel_figure(run, maps))
        return figures | named("attribution_gallery.png", gallery_figure(run))

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Each map's deletion gain (cosine) per model."""
        maps = [m for m in map_names() if any(m in cls.maps_of(item.run) for item in compared)]
        return compared_gain_figure(compared, maps) if maps else {}
