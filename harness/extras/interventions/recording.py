"""The reference pass: one clean pass over reference images per batch, adding to `ReferenceStatistics`
what the interventions' modes read (`Intervention.reference_keys`), at the level they act."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L  # noqa: N812
from torch import Tensor

from harness.backbone import DecomposingBackbone
from harness.extras.interventions.intervention import LEVELS, Intervention
from harness.extras.interventions.reference import ReferenceKey, ReferenceStatistics
from harness.records import EvaluatedImages
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout


class _Recording(Tap):
    """At each block of `keys`, the values of their targets at their level, added to `into`."""

    def __init__(
        self, backbone: DecomposingBackbone, keys: Sequence[ReferenceKey], layout: TokenLayout,
        indices: Tensor, into: ReferenceStatistics,
    ) -> None:  # fmt: skip
        self.backbone, self.keys, self.layout, self.indices, self.into = backbone, keys, layout, indices, into
        self.blocks = tuple(sorted({key.block for key in keys}))
        self.reads = frozenset(point for key in keys for point in LEVELS[key.level]().reads(key.target))

    def leave(self, parts: BlockParts) -> None:
        view = self.backbone.view(parts.number)
        for key in self.keys:
            if key.block == parts.number:
                values = LEVELS[key.level]().current(key.target, parts, view, self.layout)
                self.into.update(key, values, self.indices)


def record_reference(
    backbone: DecomposingBackbone, pixel_values: Tensor, indices: Tensor,
    interventions: Sequence[Intervention], into: ReferenceStatistics,
) -> None:  # fmt: skip
    """One clean pass over reference images, adding to `into` what the interventions read."""
    keys = sorted(
        {key for i in interventions for key in i.reference_keys()}, key=lambda k: (k.block, k.level, k.target)
    )
    if keys:
        tap = _Recording(backbone, keys, backbone.layout_for(pixel_values), indices, into)
        backbone.pooled(pixel_values, [tap], replacing=False)


class ReferenceModule(L.LightningModule):
    """A pass over reference images that records what interventions read (`mean`, `shuffle`,
    `noise`: `record_reference`), reduced across ranks when it ends; then `statistics` is the same on
    every rank.

    Args:
        backbone: the decomposing backbone (frozen).
        interventions: the run's interventions.
        statistics: where the values go (its bank size and seed).
    """

    def __init__(
        self,
        backbone: DecomposingBackbone,
        interventions: Sequence[Intervention],
        statistics: ReferenceStatistics,
    ) -> None:
        super().__init__()
        self.backbone, self.interventions, self.statistics = backbone, tuple(interventions), statistics
        self.images = EvaluatedImages()
        self.num_images = 0

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["index"].numel():
            self.images.update(batch["index"])
            record_reference(
                self.backbone, batch["pixels"], batch["index"], self.interventions, self.statistics
            )

    def on_test_epoch_end(self) -> None:
        with warnings.catch_warnings():  # a rank that got no image never called update()
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method")
            self.num_images = int(self.images.compute()["distinct"])
        self.statistics.reduce()

    def configure_optimizers(self) -> None:
        return None
