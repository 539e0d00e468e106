"""Deletion passes (`--probe deletion`, and the scores of the attribution maps): how the pooled output
changes when patches are removed from the sequence in a given order, per image.

Removing a patch from the sequence after the embeddings equals masking its key in every layer
(nothing attends to it, so nothing else depends on it). The random order hashes (seed, dataset index,
patch), so an image removes the same patches in any batch, on any rank. Under an intervention the
passes carry its taps (`Call.under`) and are compared with the intervened output, ordered by the
intervened attention map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common.hashing import uniform_hash
from harness.backbone import Call, Extra, ExtraResult
from harness.decomposition import ATTENTION_MAP
from harness.extras.scores import ClassScores, bound, class_measures, explained_classes
from harness.taps import Tap

DELETION_PREFIX = "deletion/"
DELETION_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5)
"""Shares of the patches `--probe deletion` deletes (10 / 25 / 50 %)."""
DELETION_ORDERS: tuple[str, ...] = ("top", "random", "bottom")
"""Which patches `--probe deletion` removes first: the highest-ranked by the last-layer [CLS]
attention (`map/attention`), seeded random ones (the control), the lowest-ranked."""


def patch_orders(ranking: Tensor, indices: Tensor | None, seed: int, orders: Sequence[str]) -> Tensor:
    """The patches of each image in each order, orders stacked: (orders x batch, patches). `top` and
    `bottom` follow `ranking` (batch, patches; ties by position), `random` hashes (seed, dataset index,
    patch)."""
    ranking = ranking.flatten(1)
    if unknown := [order for order in orders if order not in DELETION_ORDERS]:
        raise ValueError(f"unknown deletion orders {unknown}: choose from {list(DELETION_ORDERS)}")
    ordered = []
    for order in orders:
        if order == "random":
            if indices is None:
                raise ValueError("the random order is seeded by dataset index: pass the images' indices")
            count = ranking.shape[1]
            keys = indices.long().unsqueeze(1) * count + torch.arange(count, device=indices.device)
            ordered.append(uniform_hash(keys, seed).argsort(dim=1, stable=True))
        else:
            ordered.append(ranking.argsort(dim=1, descending=order == "top", stable=True))
    return torch.cat(ordered)


def perturbed_outputs(
    call: Call, ranking: Tensor, fractions: Sequence[float], seed: int = 0,
    orders: Sequence[str] = DELETION_ORDERS, insertion: bool = False, class_scores: ClassScores | None = None,
    explained: Tensor | None = None,
) -> dict[str, Tensor]:  # fmt: skip
    """For each order and fraction f, the round(f x patches) first patches of that order removed
    (with `insertion`: the only ones kept, with [CLS], distillation and registers), the model run
    again from the embeddings (the orders of one fraction in one pass).

    Returns:
        `deletion/{order}` (batch, fractions): the cosine of each such pooled output to the call's
        (`call.capture.pooled`). With `class_scores`, also `deletion/{order}/probability`: the
        probability of the class the call's output is given, and `deletion/{order}/predicted`: the
        class each output is given; `explained`, the class of each of the call's outputs, where the
        caller has it already (it is computed from the class scores otherwise).
    """
    backbone, layout = call.backbone, call.capture.layout
    patches = layout.slice("patch")
    first = patches.start
    by_order = patch_orders(ranking, call.indices, seed, orders)  # orders x batch, patches
    embeddings = backbone.embed(call.pixel_values)
    batch, _, hidden = embeddings.shape
    repeats = len(orders)
    leading = torch.arange(first, device=embeddings.device).expand(repeats * batch, first)
    repeated = embeddings.repeat(repeats, 1, 1)
    pooled = call.capture.pooled
    if explained is None:
        explained = explained_classes(class_scores, pooled)
    measured: dict[str, list[Tensor]] = {"": [], "/probability": [], "/predicted": []}
    for fraction in fractions:
        chosen = round(fraction * (patches.stop - first))
        kept = (by_order[:, :chosen] if insertion else by_order[:, chosen:]).sort(dim=1).values
        positions = torch.cat([leading, kept + first], dim=1)
        tokens = repeated.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden))
        output = backbone.pooled_from(tokens, layout, call.under, patches=kept)
        measured[""].append(nn.functional.cosine_similarity(output, pooled.repeat(repeats, 1), dim=-1))
        if class_scores is not None and explained is not None:
            probability, predicted = class_measures(class_scores, output, explained.repeat(repeats))
            measured["/probability"].append(probability)
            measured["/predicted"].append(predicted)
    results: dict[str, Tensor] = {}
    for suffix, values in measured.items():
        if values:
            per_order = torch.stack(values, dim=1).split(batch)  # orders x (batch, fractions)
            results |= {DELETION_PREFIX + o + suffix: v for o, v in zip(orders, per_order, strict=True)}
    return results


@dataclass(frozen=True)
class Deletion(Extra):
    """The deletion passes of `perturbed_outputs` in the call's own attention order: `deletion/{order}`
    (and with `class_scores` its probability and predicted class), 3 orders x `fractions` passes.

    Args:
        fractions: shares of the patches removed, each in (0, 1).
        seed: seed of the random order.
        class_scores: pooled outputs -> class scores, to follow the full output's class too.
    """

    fractions: tuple[float, ...] = DELETION_FRACTIONS
    seed: int = 0
    class_scores: ClassScores | None = None

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f < 1 for f in self.fractions):
            raise ValueError(f"deletion fractions must lie in (0, 1), got {list(self.fractions)}")

    @property
    def draws_random(self) -> bool:
        return True

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        ranking = call.decomposition[ATTENTION_MAP]
        class_scores = bound(self.class_scores, call.decomposition)  # the call's images' own inputs
        passes = perturbed_outputs(call, ranking, self.fractions, self.seed, class_scores=class_scores)
        return ExtraResult(passes)
