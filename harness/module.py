"""The frozen-backbone LightningModule: one backbone pass per batch, every probe fed from it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

import lightning as L  # noqa: N812
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric

from harness.backbone import DecomposingBackbone
from harness.decomposition import HIDDEN_CLS_COSINE, PENULTIMATE, split_names, variant_names
from probes.base import Probe, update_probes
from probes.features import EvaluatedImages, FeatureStore

log = logging.getLogger(__name__)


class HarnessModule(L.LightningModule):
    """Runs the backbone once per test batch and hands its `Decomposition` to every probe.

    After `trainer.test`, on every rank: `results` (probe name -> value, DESIGN.md names),
    `arrays` (the probes' non-scalar results: histograms, per-image values, gallery images),
    `num_images` (distinct dataset indices evaluated), `skipped` (index, reason) of unreadable
    images, `max_pooler_error`, and `features` (index, label and `feature_names` per image, in
    index order) when `feature_names` is not empty.

    Args:
        backbone: the decomposing backbone (frozen).
        probes: probe name -> probe.
        feature_names: decomposition names to gather per image (see `all_feature_names`).
    """

    def __init__(
        self, backbone: DecomposingBackbone, probes: Mapping[str, Probe], feature_names: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.probes = nn.ModuleDict(dict(probes))
        self.images = EvaluatedImages()
        self.pooler_error = MaxMetric()
        self.features_store = FeatureStore(feature_names) if feature_names else None
        self.results: dict[str, float] = {}
        self.arrays: dict[str, Tensor] = {}
        self.features: dict[str, Tensor] | None = None
        self.num_images = 0
        self.num_repeated = 0
        self.max_pooler_error = float("nan")
        self.skipped: list[tuple[int, str]] = []
        self._local_skipped: list[tuple[int, str]] = []

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._local_skipped.extend(batch["skipped"])
        if batch["index"].numel() == 0:
            return
        decomposition = self.backbone(batch["pixels"])
        self.images.update(batch["index"])
        self.pooler_error.update(decomposition.pooler_error)
        update_probes(self._probes(), decomposition, batch["pixels"], batch["label"], batch["index"])
        if self.features_store is not None:
            self.features_store.update(decomposition, batch["label"], batch["index"])

    def on_test_epoch_end(self) -> None:
        # every compute() below synchronises across ranks, so every rank calls them in this order
        with warnings.catch_warnings():  # a rank that got no image never called update()
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method")
            distinct, repeated = self.images.compute()
        self.num_images, self.num_repeated = int(distinct), int(repeated)
        self.skipped = sorted(_gather_objects(self._local_skipped))
        self.results, self.arrays = {}, {}
        if not self.num_images:  # the same on every rank: the count is synchronised
            log.warning("no image could be evaluated (%d skipped); no probe results", len(self.skipped))
            return
        self.max_pooler_error = float(self.pooler_error.compute())
        for probe in self._probes():
            self.results.update(probe.compute())
            self.arrays.update({name: array.cpu() for name, array in probe.arrays().items()})
        if self.features_store is not None:
            self.features = {name: t.cpu() for name, t in self.features_store.compute().items()}

    def configure_optimizers(self) -> None:
        return None

    def _probes(self) -> list[Probe]:
        return [cast(Probe, probe) for probe in self.probes.values()]


def _gather_objects(local: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Concatenate a small picklable list from every rank (the list itself when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(local)
    gathered: list[list[tuple[int, str]] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    return [item for part in gathered if part for item in part]


def all_feature_names(backbone: DecomposingBackbone) -> tuple[str, ...]:
    """Every per-image vector and number of `backbone`'s decomposition: what features.safetensors holds."""
    return (*variant_names(backbone.info.num_registers), *split_names(), HIDDEN_CLS_COSINE, *PENULTIMATE)
