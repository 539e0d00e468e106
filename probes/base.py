"""What every probe is: a module fed the decomposition of each batch, reduced across ranks, that states
its own facts (name, what it needs, the names of its results, how it is built for a run)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from torch import Tensor, nn
from torchmetrics import Metric

from harness import PROJECTION, BackboneInfo, TokenLayout, variant_names

FULL_OUTPUT = "output/full"
"""The model's own [CLS] output: the reference of the label probes (centroids, classifiers)."""


@dataclass(frozen=True)
class KnnBank:
    """`output/full` of labelled training images (rows, dims), their labels and class names."""

    features: Tensor
    labels: Tensor
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class ProbeContext:
    """What probes need to know about a run.

    Attributes:
        info: the backbone.
        class_names: classes of the data (empty when unlabelled).
        resolution: image size of the run.
        seed: seed of every sampled choice (one-shot episodes, ridge split).
        episodes: one-shot episodes.
        shots: one-shot support images per class.
        head: a head saved by train_probe.py for the `linear` probe (None: fit a ridge classifier).
        layers: the blocks decomposed as they run (`--layers`; 1-based, ascending), none by default.
        bank: `output/full` of labelled training images for the `knn` probe (`--train-data`).
    """

    info: BackboneInfo
    class_names: tuple[str, ...] = ()
    resolution: int = 224
    seed: int = 0
    episodes: int = 10
    shots: int = 1
    head: Path | None = None
    layers: tuple[int, ...] = ()
    bank: KnnBank | None = None

    @property
    def num_tokens(self) -> int:
        """Sequence length at this run's (square) resolution."""
        side = self.resolution // self.info.patch_size
        return TokenLayout(self.info.num_registers, side, side, self.info.num_distillation).num_tokens

    @property
    def variants(self) -> tuple[str, ...]:
        """Every `{readout}/{variant}` the backbone produces."""
        info = self.info
        return variant_names(info.num_registers, info.projection_dim > 0, info.num_distillation)

    def width(self, variant: str) -> int:
        """Feature size of a `{readout}/{variant}` (the projection readout has its own)."""
        return self.info.projection_dim if variant.startswith(f"{PROJECTION}/") else self.info.hidden_size

    @property
    def output_variants(self) -> tuple[str, ...]:
        return tuple(v for v in self.variants if v.startswith("output/"))


class Probe(nn.Module, ABC):
    """Consumes decompositions batch by batch; `compute` gives results under the names of
    docs/design.md#names, each built by the class's own name functions.

    Subclasses hold torchmetrics Metrics as attributes, so states move with the module's device
    and reduce across DDP ranks in `compute`. Class attributes are the probe's facts, read by the
    registry, the outputs and `--from-features`:

    Attributes:
        name: the `--probe` name.
        needs_labels: True for probes that need class labels (left out of `all` on unlabelled data).
        needs_pixels: True for probes that read the batch's images (`harness.PIXELS`): they cannot be
            re-run from saved features.
        needs_layers: True for probes that read the per-layer decomposition (`--layers`): left out
            of `all` without it.
        opt_in: True for probes that cost extra forward passes: never part of `all`.
        needs_hidden_states: True for probes that read `hidden/cls` (every block's [CLS] state),
            which features.safetensors does not hold: they cannot be re-run from saved features.
        needs_bank: True for probes that read a bank of training features (`--train-data`): left
            out of `all` without one.
    """

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False
    needs_pixels: ClassVar[bool] = False
    needs_layers: ClassVar[bool] = False
    opt_in: ClassVar[bool] = False
    needs_bank: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False

    @classmethod
    def replayable(cls) -> bool:
        """Whether `--from-features` can feed it: it reads neither the images nor the hidden states."""
        return not cls.needs_pixels and not cls.needs_hidden_states

    @classmethod
    @abstractmethod
    def from_context(cls, context: ProbeContext) -> Probe:
        """The probe built for a run's backbone, data and options."""

    @abstractmethod
    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        """Add one batch: its decomposition, labels (-1 when unlabelled) and dataset indices.

        The decomposition mapping also holds `harness.PIXELS`, the batch's normalised images, when
        the backbone ran (not when features are replayed)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Results of everything seen, synchronised across ranks, keyed by result name."""

    def arrays(self) -> dict[str, Tensor]:
        """Non-scalar results (histograms, per-image values, gallery images), synchronised like
        `compute` and called after it; none by default."""
        return {}

    def absorb(self, other: Probe) -> bool:
        """Take over `other`'s results when this probe's state already holds what it needs (both CKA
        estimators read the same moments); False by default."""
        return False

    def reset(self) -> None:
        """Forget everything seen."""
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()


def module_key(name: str) -> str:
    """A result or variant name as an `nn.ModuleDict` key (which may not hold '/' or '.')."""
    return name.replace("/", "__")
