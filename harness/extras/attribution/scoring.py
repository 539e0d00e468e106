"""Attribution maps scored by the same causal tests (`AttributionMaps`, an extra): each chosen map
(`MAPS`) and each asked head's attention map, their deletion and insertion curves against one random
control shared by every map, and their rank agreement with the exact contribution map.

Entries (per image): `attribution/{map}` (batch, grid_height, grid_width) for each chosen map, and
`attribution/attention_heads` (batch, heads, grid_height, grid_width) when heads are asked;
`maps/{map}/{score}/{order}` (batch, fractions), the cosine to the full output of the model run with
the round(f x patches) first patches of the order removed (`deletion`) or only those kept with [CLS]
and registers (`insertion`), orders `top` (the map's highest first) and `bottom` (its lowest first;
not for one head's map, `HEAD_ORDERS`); `maps/random/{score}` the random control (seeded by dataset
index, run once for every map); with class scores `.../probability` and `.../predicted` after each
curve, and `maps/explained` (batch,), the class the full output is given; `maps/{map}/rank_agreement`
(batch,), Spearman's correlation with the `contribution` map. Those are the `tokens` perturbation;
with `pixels` (Chefer et al.'s test, `harness.extras.attribution.pixels`; class scores needed)
`maps/{map}/pixels/{order}/predicted` (batch, pixel fractions), the class of each image with the
int(pixels x f) first pixels of the map's order blacked out, orders `positive` and `negative` (one
head's map: `positive` only), and `maps/random/pixels/predicted`, the random control.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.backbone import Call, DecomposingBackbone, Extra, ExtraResult
from harness.extras.attribution.maps import MAPS, MapCall, map_names
from harness.extras.attribution.pixels import (
    PIXEL_FRACTIONS,
    PIXEL_ORDERS,
    PIXEL_SCORE,
    RANDOM_PIXELS,
    pixel_perturbed_classes,
)
from harness.extras.deletion import DELETION_PREFIX, perturbed_outputs
from harness.extras.scores import ClassScores, ImageBoundScores, bound, explained_classes
from harness.taps import Tap
from harness.tokens import TokenLayout

ATTRIBUTION_PREFIX = "attribution/"
HEAD_MAP = "attention_head"
"""`attention_head{h}` (h = 1 ... heads): one head's attention map, scored when asked."""
EVERY_HEAD = "heads"
"""`--maps` word for every head's map."""
EXPLAINED = "maps/explained"
"""The class the gradient maps explain and the perturbation curves follow, per image (batch,)."""
CONTROL = "random"
"""The random control's name among the maps' entries and results (`maps/random/...`)."""
REFERENCE_MAP = "contribution"
"""The exact map every map's rank agreement is measured against."""
EXPLAINED_CLASSES: tuple[str, ...] = ("predicted", "label")
"""The classes the maps can explain: the one predicted for the full image, or its label."""
SCORES: tuple[str, ...] = ("deletion", "insertion")
"""How a map is scored: its patches removed in its order (deletion), or only they kept (insertion)."""
SCORE_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
"""Shares of the patches removed or kept."""
MAP_ORDERS: tuple[str, ...] = ("top", "bottom")
"""The orders a map is scored in besides the shared random control: its own and its reverse."""
HEAD_ORDERS: tuple[str, ...] = ("top",)
"""The orders one head's map is scored in besides the control (no reverse: it would double the passes
of a many-headed model for a control the random one already gives)."""
PERTURBATIONS: tuple[str, ...] = ("tokens", PIXEL_SCORE)
"""How the maps are perturbed (`--perturbation`): patches removed from the sequence (deletion and
insertion, `SCORES`) or pixels blacked out (Chefer et al.'s test)."""
HEAD_PIXEL_ORDERS: tuple[str, ...] = ("positive",)
"""The pixel orders one head's map is scored in (its most relevant pixels first, as `HEAD_ORDERS`)."""


def parse_perturbations(text: str) -> tuple[str, ...]:
    """`--perturbation`: `tokens`, `pixels` or both, joined by commas -> in `PERTURBATIONS` order.

    >>> parse_perturbations("pixels,tokens")
    ('tokens', 'pixels')

    Raises:
        ValueError: an unknown word, or none.
    """
    words = {word.strip() for word in text.split(",") if word.strip()}
    known = ", ".join(PERTURBATIONS)
    if unknown := sorted(words - set(PERTURBATIONS)):
        raise ValueError(f"--perturbation: unknown {', '.join(unknown)}; choose from {known}")
    if not words:
        raise ValueError(f"--perturbation names none; choose from {known}")
    return tuple(name for name in PERTURBATIONS if name in words)


def head_map_names(heads: Sequence[int]) -> tuple[str, ...]:
    """`attention_head{h}` for each (1-based) head."""
    return tuple(f"{HEAD_MAP}{head}" for head in heads)


def cls_row_maps(names: Iterable[str], readout: str) -> list[str]:
    """The maps among `names` (in their order) that a model read otherwise than by its [CLS] row
    cannot have: those that explain the blocks' [CLS] rows (`AttributionMap.reads_cls_rows`)."""
    return [name for name in names if readout != "cls" and MAPS[name].reads_cls_rows]


def parse_maps(
    text: str, num_heads: int | None = None, readout: str = "cls"
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """`--maps`: `all` (every registered map; for a model read by an attention-pooling head,
    `readout` "map", those that do not read the blocks' [CLS] rows), map names, `heads` (every
    head's map: about 4 passes per head) and `attention_head{h}`, joined by commas -> (maps in
    registry order, heads ascending). Without `num_heads` only the syntax is checked (`heads` -> none).

    >>> parse_maps("chefer,rollout,attention_head2")
    (('rollout', 'chefer'), (2,))

    Raises:
        ValueError: an unknown map, a head outside 1..num_heads, or a map that reads the [CLS] rows
            named for a "map" readout.
    """
    words = [word.strip() for word in text.split(",") if word.strip()]
    maps: set[str] = set()
    heads: set[int] = set()
    for word in words:
        if word == "all":
            maps |= set(MAPS) - set(cls_row_maps(MAPS, readout))
        elif word == EVERY_HEAD:
            heads |= set(range(1, (num_heads or 0) + 1))
        elif match := re.fullmatch(rf"{HEAD_MAP}(\d+)", word):
            heads.add(int(match[1]))
        elif word in MAPS:
            maps.add(word)
        else:
            known = ", ".join(map_names())
            raise ValueError(f"--maps: unknown map {word!r}; choose from all, {known}, heads, {HEAD_MAP}N")
    if not words:
        raise ValueError("--maps names no map")
    if num_heads is not None and (wrong := sorted(h for h in heads if not 1 <= h <= num_heads)):
        raise ValueError(f"--maps: this backbone has heads 1..{num_heads}, got {wrong}")
    if rows := sorted(cls_row_maps(maps, readout)):
        raise ValueError(
            f"--maps {', '.join(rows)}: they explain the [CLS] row of the blocks, and this model's "
            "output is read by an attention-pooling head"
        )
    return tuple(name for name in map_names() if name in maps), tuple(sorted(heads))


def rank_agreement(first: Tensor, second: Tensor) -> Tensor:
    """Spearman's rank correlation of two maps over the patches, per image (batch,): the Pearson
    correlation of their ranks (ties broken by position)."""
    ranks = [
        values.flatten(1).argsort(dim=1, stable=True).argsort(dim=1).double() for values in (first, second)
    ]
    centred = [rank - rank.mean(dim=1, keepdim=True) for rank in ranks]
    return nn.functional.cosine_similarity(centred[0], centred[1], dim=1).float()


@dataclass(frozen=True)
class AttributionMaps(Extra):
    """Each map of `maps` (default: every registered map) and each head of `heads` scored.

    Args:
        maps: names of `MAPS` (kept in registry order).
        heads: 1-based heads whose own attention maps are scored too (each about 2 x fractions passes).
        fractions: shares of the patches removed or kept.
        seed: seed of the random control's order.
        class_scores: the class scores the gradient maps explain and the curves follow.
        scored: False for the maps alone (`attribution/*`): no perturbation pass, no rank agreement.
        perturbations: of `PERTURBATIONS`: `tokens` (deletion and insertion of patches, at `fractions`),
            `pixels` (Chefer et al.'s pixel test, at `pixel_fractions`; needs `class_scores`).
        pixel_fractions: shares of the pixels blacked out.
        explain: the class the gradient maps explain and the curves follow (`EXPLAINED_CLASSES`):
            `predicted`, the one the full image's scores rank first (Chefer et al.'s default,
            `--vis-class top`), or `label`, the image's label (their `--vis-class target`; the
            predicted one for an unlabelled image); needs `class_scores`.
    """

    maps: tuple[str, ...] = ()
    heads: tuple[int, ...] = ()
    fractions: tuple[float, ...] = SCORE_FRACTIONS
    seed: int = 0
    class_scores: ClassScores | None = None
    scored: bool = True
    perturbations: tuple[str, ...] = ("tokens",)
    pixel_fractions: tuple[float, ...] = PIXEL_FRACTIONS
    explain: str = "predicted"

    def __post_init__(self) -> None:
        if self.explain not in EXPLAINED_CLASSES:
            raise ValueError(f"explain: one of {list(EXPLAINED_CLASSES)}, got {self.explain!r}")
        if self.explain == "label" and self.class_scores is None:
            raise ValueError("the maps explain the label's class with class scores: give them")
        chosen = self.maps or map_names()
        if unknown := [name for name in chosen if name not in MAPS]:
            raise ValueError(f"unknown attribution maps {unknown}; choose from {', '.join(map_names())}")
        object.__setattr__(self, "maps", tuple(name for name in map_names() if name in chosen))
        object.__setattr__(self, "heads", tuple(sorted(set(self.heads))))
        if not self.fractions or any(not 0 < f < 1 for f in self.fractions):
            raise ValueError(f"score fractions must lie in (0, 1), got {list(self.fractions)}")
        if not self.perturbations or set(self.perturbations) - set(PERTURBATIONS):
            raise ValueError(f"perturbations: some of {list(PERTURBATIONS)}, got {list(self.perturbations)}")
        object.__setattr__(self, "perturbations", tuple(p for p in PERTURBATIONS if p in self.perturbations))
        if PIXEL_SCORE in self.perturbations:
            if self.class_scores is None:
                raise ValueError("the pixel perturbation measures the class of each image: give class scores")
            if isinstance(self.class_scores, ImageBoundScores):
                raise ValueError(
                    "the pixel perturbation classifies whole perturbed images: class scores that read the "
                    "clean image's inputs beside the pooled output (a released DINOv2 head) cannot"
                )
            if not self.pixel_fractions or any(not 0 < f < 1 for f in self.pixel_fractions):
                raise ValueError(f"pixel fractions must lie in (0, 1), got {list(self.pixel_fractions)}")

    @property
    def draws_random(self) -> bool:
        return self.scored

    @property
    def reads_labels(self) -> bool:
        return self.explain == "label"

    @property
    def names(self) -> tuple[str, ...]:
        """Every map it computes (and scores): the maps, then the heads' (`head_map_names`)."""
        return (*self.maps, *head_map_names(self.heads))

    def check(self, backbone: DecomposingBackbone) -> None:
        count = backbone.info.heads_read  # the heads of what reads the output (a pooling head's)
        if wrong := [head for head in self.heads if not 1 <= head <= count]:
            raise ValueError(f"this backbone has heads 1..{count}, got {wrong}")
        if rows := cls_row_maps(self.maps, backbone.info.readout):
            raise ValueError(
                f"maps {', '.join(rows)} explain the [CLS] row of the blocks, and {backbone.info.name}'s "
                "output is read by an attention-pooling head"
            )
        for name in self.maps:
            if problem := MAPS[name]().problem(backbone):
                raise ValueError(f"map {name}: {problem}")

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        chosen = ((name, MAPS[name]().tap(backbone, layout)) for name in self.maps)
        return {name: tap for name, tap in chosen if tap is not None}

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        capture = call.capture
        class_scores = bound(self.class_scores, call.decomposition)  # the call's images' own inputs
        explained = explained_classes(class_scores, capture.pooled)
        if self.explain == "label" and explained is not None and call.labels is not None:
            labels = call.labels.to(explained.device)
            explained = torch.where(labels >= 0, labels.long(), explained)
        maps_call = MapCall(call.backbone, call.pixel_values, capture, class_scores, explained, taps)
        maps = {name: MAPS[name]().attribute(maps_call) for name in self.maps}
        attention = maps_call.patch_attention  # batch, heads, patches
        heads = {f"{HEAD_MAP}{head}": attention[:, head - 1] for head in self.heads}
        grid = (-1, capture.layout.grid_height, capture.layout.grid_width)
        entries = {ATTRIBUTION_PREFIX + name: values.reshape(grid) for name, values in maps.items()}
        if self.heads:
            entries[ATTRIBUTION_PREFIX + "attention_heads"] = attention.unflatten(-1, grid[1:])
        if not self.scored:
            return ExtraResult(entries)
        reference = (
            maps[REFERENCE_MAP] if REFERENCE_MAP in maps else MAPS[REFERENCE_MAP]().attribute(maps_call)
        )
        every = maps | heads
        entries |= {f"maps/{name}/rank_agreement": rank_agreement(m, reference) for name, m in every.items()}
        if explained is not None:
            entries[EXPLAINED] = explained
        with torch.no_grad():
            if "tokens" in self.perturbations:
                entries |= self._curves(call, every, class_scores, explained)
            if PIXEL_SCORE in self.perturbations:
                entries |= self._pixel_curves(call, every)
        return ExtraResult(entries)

    def _pixel_curves(self, call: Call, scored: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every scored map's classes along Chefer et al.'s pixel test in its own orders, and the random
        control's (run once)."""
        class_scores = self.class_scores
        assert class_scores is not None  # `__post_init__` refuses pixels without them
        grid = (-1, call.capture.layout.grid_height, call.capture.layout.grid_width)
        heads = set(head_map_names(self.heads))

        def run(ranking: Tensor, orders: Sequence[str]) -> dict[str, Tensor]:
            return pixel_perturbed_classes(
                call, ranking.reshape(grid), self.pixel_fractions, orders, class_scores, self.seed
            )

        control = run(next(iter(scored.values())), (RANDOM_PIXELS,))  # the order ignores the map
        curves = {f"maps/{CONTROL}/{PIXEL_SCORE}/predicted": control[RANDOM_PIXELS]}
        for name, ranking in scored.items():
            found = run(ranking, HEAD_PIXEL_ORDERS if name in heads else PIXEL_ORDERS)
            curves |= {f"maps/{name}/{PIXEL_SCORE}/{order}/predicted": v for order, v in found.items()}
        return curves

    def _curves(
        self, call: Call, scored: Mapping[str, Tensor], class_scores: ClassScores | None,
        explained: Tensor | None,
    ) -> dict[str, Tensor]:  # fmt: skip
        """Every scored map's curves in its own orders, and the random control's (run once), following
        the class each full output is given (`explained`, computed once for the call, by `class_scores`
        bound to it)."""
        curves: dict[str, Tensor] = {}
        heads = set(head_map_names(self.heads))
        for score in SCORES:

            def run(
                ranking: Tensor, orders: Sequence[str], insertion: bool = score == "insertion"
            ) -> dict[str, Tensor]:
                return perturbed_outputs(
                    call, ranking, self.fractions, self.seed, orders, insertion, class_scores, explained
                )

            control = run(next(iter(scored.values())), (CONTROL,))  # the order ignores the map
            prefix = DELETION_PREFIX + CONTROL
            curves |= {f"maps/{CONTROL}/{score}{key.removeprefix(prefix)}": v for key, v in control.items()}
            for name, ranking in scored.items():
                found = run(ranking, HEAD_ORDERS if name in heads else MAP_ORDERS)
                curves |= {
                    f"maps/{name}/{score}/{key.removeprefix(DELETION_PREFIX)}": v for key, v in found.items()
                }
        return curves
