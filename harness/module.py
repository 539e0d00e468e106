"""The frozen-backbone LightningModule: one backbone pass per batch, every consumer fed from it."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

import lightning as L  # noqa: N812
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric

from common.errors import InsufficientDataError
from harness.backbone import DecomposingBackbone, Extra
from harness.decomposition import (
    HIDDEN_CLS_COSINE,
    LINEAR_INPUT_CLS,
    LINEAR_INPUT_PATCH_MEAN,
    PENULTIMATE,
    PIXELS,
    Decomposition,
    depth_names,
)
from harness.info import BackboneInfo
from harness.records import EvaluatedImages, FeatureStore

log = logging.getLogger(__name__)


class Consumer(Protocol):
    """What the module feeds: a module that takes batches and gives named results (a probe).

    `update` gets the batch's decomposition with its normalised images under `PIXELS`, its labels
    (-1 when unlabelled) and dataset indices; `compute` and `arrays` synchronise across ranks;
    `extras` are what it needs each backbone call to compute besides the decomposition (`Extra`).
    """

    def extras(self) -> Sequence[Extra]: ...

    def update(self, inputs: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None: ...

    def compute(self) -> Mapping[str, float]: ...

    def arrays(self) -> Mapping[str, Tensor]: ...


ConsumerFactory = Callable[[tuple[str, ...]], Mapping[str, nn.Module]]
"""Builds the consumers of a run from the data's class names (empty when unlabelled)."""


def feed(consumers: Iterable[Consumer], decomposition: Decomposition, pixels: Tensor,
         labels: Tensor, indices: Tensor) -> None:  # fmt: skip
    """Feed one batch to every consumer: its decomposition, with the batch's images under `PIXELS`."""
    inputs = decomposition.with_entries({PIXELS: pixels})  # references only: no tensor is copied
    for consumer in consumers:
        consumer.update(inputs, labels, indices)


def merged_extras(extras: Iterable[Extra]) -> tuple[Extra, ...]:
    """One extra per key (`Extra.key`), in the order first asked: what several consumers ask for is
    computed once (`Extra.merged`: equal ones are one; an intervention runs what each asks under it).

    Raises:
        ValueError: two extras of one key that cannot be merged (different settings).
    """
    merged: dict[Any, Extra] = {}
    for extra in extras:
        merged[extra.key] = merged[extra.key].merged(extra) if extra.key in merged else extra
    return tuple(merged.values())


class HarnessModule(L.LightningModule):
    """Runs the backbone once per test batch and hands its `Decomposition` to every consumer.

    The consumers are built in `setup`, once the data module has listed its images, from its
    `class_names` (so probes that need labels see whether there are any).

    After `trainer.test`, on every rank: `results` (name -> value, docs/design.md#names),
    `arrays` (the consumers' non-scalar results: histograms, per-image values, gallery images),
    `num_images` (distinct dataset indices evaluated), `skipped` (index, reason) of unreadable
    images, `skipped_consumers` (name -> reason) of consumers that saw too little data to compute
    (`InsufficientDataError`), `max_pooler_error`, and `features` (index, label and
    `feature_names` per image, in index order) when `feature_names` is not empty, and `stamps`
    (`time.perf_counter()` on this rank when the test loop started, with the model on its device and
    the consumers built, when the first batch arrived, when the last was done on the device, and when
    the results were computed: `test_start`, `first_batch`, `loop_end`, `computed`).

    Args:
        backbone: the decomposing backbone (frozen).
        consumers: builds name -> consumer (e.g. probes) from the data's class names.
        feature_names: decomposition names to gather per image (see `all_feature_names`).
        extras: what each backbone call computes whatever the consumers ask (e.g. the per-layer
            decomposition the saved features hold); each consumer's own `extras` join them.
    """

    def __init__(
        self,
        backbone: DecomposingBackbone,
        consumers: ConsumerFactory | None = None,
        feature_names: Sequence[str] = (),
        extras: Sequence[Extra] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.run_extras = tuple(extras)
        self.extras = merged_extras(self.run_extras)  # with the consumers' once they are built
        self.make_consumers = consumers
        self.consumers = nn.ModuleDict()
        self.images = EvaluatedImages()
        # no NaN check: it reads the device every batch; a NaN error still shows (max keeps it)
        self.pooler_error = MaxMetric(nan_strategy="disable")
        self.features_store = FeatureStore(feature_names) if feature_names else None
        self.results: dict[str, float] = {}
        self.arrays: dict[str, Tensor] = {}
        self.features: dict[str, Tensor] | None = None
        self.num_images = 0
        self.num_repeated = 0
        self.max_pooler_error = float("nan")
        self.skipped: list[tuple[int, str]] = []
        self.skipped_consumers: dict[str, str] = {}
        self._local_skipped: list[tuple[int, str]] = []
        self.stamps: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        if self.make_consumers is not None:
            datamodule = getattr(self.trainer, "datamodule", None)
            class_names = tuple(getattr(datamodule, "class_names", ()))
            self.consumers = nn.ModuleDict(dict(self.make_consumers(class_names)))
        asked = (extra for consumer in self._consumers() for extra in consumer.extras())
        self.extras = merged_extras((*self.run_extras, *asked))

    def on_test_start(self) -> None:
        self.stamps["test_start"] = time.perf_counter()  # the model is on its device, probes built

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.stamps.setdefault("first_batch", time.perf_counter())

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._local_skipped.extend(batch["skipped"])
        if batch["index"].numel() == 0:
            return
        pixels, labels, indices = batch["pixels"], batch["label"], batch["index"]
        decomposition = self.backbone(pixels, indices, extras=self.extras, labels=labels)
        self.record(decomposition, pixels, labels, indices)

    def record(self, decomposition: Decomposition, pixels: Tensor, labels: Tensor, indices: Tensor) -> None:
        """Everything one batch updates (no value is read back from the device: tests/test_no_sync.py)."""
        self.images.update(indices)
        self.pooler_error.update(decomposition.pooler_error)
        feed(self._consumers(), decomposition, pixels, labels, indices)
        if self.features_store is not None:
            self.features_store.update(decomposition, labels, indices)

    def on_test_epoch_end(self) -> None:
        if self.device.type == "cuda":  # the loop's time includes the work still queued on the device
            torch.cuda.synchronize(self.device)
        self.stamps["loop_end"] = time.perf_counter()
        try:
            self._compute()
        finally:
            self.stamps["computed"] = time.perf_counter()

    def _compute(self) -> None:
        # every compute() below synchronises across ranks, so every rank calls them in this order
        with warnings.catch_warnings():  # a rank that got no image never called update()
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method")
            counts = self.images.compute()
        self.num_images, self.num_repeated = int(counts["distinct"]), int(counts["repeated"])
        self.skipped = sorted(_gather_objects(self._local_skipped))
        self.results, self.arrays = {}, {}
        if not self.num_images:  # the same on every rank: the count is synchronised
            log.warning("no image could be evaluated (%d skipped); no probe results", len(self.skipped))
            return
        self.max_pooler_error = float(self.pooler_error.compute())
        self.skipped_consumers = {}
        for name, consumer in zip(self.consumers, self._consumers(), strict=True):
            try:  # the same outcome on every rank: the states are synchronised
                results, arrays = consumer.compute(), consumer.arrays()
            except InsufficientDataError as error:  # too few images for this one; the others still count
                log.warning("%s: skipped (%s)", name, error)
                self.skipped_consumers[name] = str(error)
                continue
            self.results.update(results)
            self.arrays.update({key: array.cpu() for key, array in arrays.items()})
        if self.features_store is not None:
            # torchmetrics squeezes one-element results to 0-dim: a run of one image keeps its row axis
            rows = self.features_store.compute().items()
            self.features = {name: torch.atleast_1d(t).cpu() for name, t in rows}

    def configure_optimizers(self) -> None:
        return None

    def _consumers(self) -> list[Consumer]:
        return [cast(Consumer, consumer) for consumer in self.consumers.values()]


def _gather_objects(local: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Concatenate a small picklable list from every rank (the list itself when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(local)
    gathered: list[list[tuple[int, str]] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    return [item for part in gathered if part for item in part]


def all_feature_names(info: BackboneInfo, layers: bool = False) -> tuple[str, ...]:
    """Every per-image vector and number of a decomposition of the backbone `info` describes (with
    the per-layer entries when blocks are decomposed as they run): what features.safetensors holds."""
    depth = depth_names(info.num_registers, info.num_distillation) if layers else ()
    return (
        *info.variant_names(),
        *info.split_names(),
        *((HIDDEN_CLS_COSINE,) if info.num_cls else ()),
        *((LINEAR_INPUT_CLS, LINEAR_INPUT_PATCH_MEAN) if info.num_cls and info.readout == "cls" else ()),
        *PENULTIMATE,
        *depth,
    )
