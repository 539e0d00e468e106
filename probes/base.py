"""What every probe is: a module fed the decomposition of each batch, reduced across ranks, that states
everything about itself (name, what it needs, how it configures the backbone's forward, its result
names, its figures, its comparison figures, its headline numbers, how it is built for a run).

A concrete subclass that sets `name` registers itself when its module is imported
(`Probe.__init_subclass__`); `probes.registry` imports every module of the package, so a new probe
is one file."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from harness import PROJECTION, BackboneInfo, Extra, TokenLayout
from probes.metrics.stats import ColumnStats
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from harness.extras.interventions import Intervention
    from harness.extras.register_neurons import RegisterNeurons
    from harness.heads import LinearHead

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
        head: a head saved by train_probe.py for the `linear` probe (None: fit a ridge classifier)
            and the attribution probe's class scores.
        layers: the blocks decomposed as they run (`--layers`; 1-based, ascending), none by default.
        bank: `output/full` of labelled training images for the `knn` probe (`--train-data`).
        interventions: the run's interventions (`--intervene`), each with the reference statistics its
            mode reads.
        maps: the attribution maps the attribution probe scores (`--maps`; empty: every map).
        heads: the heads whose own attention maps it scores too (1-based).
        perturbations: how it perturbs the images to score the maps (`--perturbation`): `tokens`
            (patches removed), `pixels` (Chefer et al.'s pixel test) or both.
        explain: the class the attribution maps explain (`--explain-class`): `predicted` (the full
            image's, Chefer et al.'s default) or `label` (each image's).
        only_variants: the variants a pass under an intervention reports, where it reports fewer
            than the clean pass (`variants` keeps only these); None: every variant.
        own_head: the backbone's own classifier on `output/full` (`--head model`), read instead of
            `head`.
        neuron_search: the register-neuron search (`--neuron-*`); None: the authors' settings for
            the model (`RegisterNeurons.for_model`).
        neuron_top_k: register neurons ranked (None: the authors' number for the model, else 50).
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
    interventions: tuple[Intervention, ...] = ()
    maps: tuple[str, ...] = ()
    heads: tuple[int, ...] = ()
    perturbations: tuple[str, ...] = ("tokens",)
    explain: str = "predicted"
    only_variants: tuple[str, ...] | None = None
    own_head: LinearHead | None = None
    neuron_search: RegisterNeurons | None = None
    neuron_top_k: int | None = None

    def linear_head(self) -> LinearHead | None:
        """The run's head: the backbone's own classifier (`own_head`), else the head saved by
        train_probe.py (`head`), checked against this run's backbone, classes (with labels),
        resolution and position resize (a head released with DINOv2: against the backbone's
        width and depth, `check_released`); None without either.

        Raises:
            UserError: the file is no head; HeadMismatchError: it was trained for another run.
        """
        if self.own_head is not None:
            return self.own_head
        if self.head is None:
            return None
        from harness.heads import LinearHead  # lightning: only where a head is read

        head = LinearHead.load(self.head)
        info = self.info
        if head.released:
            self.check_released(head)
            return head
        head.check_compatible(
            info.identity, self.class_names or head.class_names, self.resolution, info.pos_interpolation,
            self.width(head.feature) if head.feature in self.variants else None,
        )  # fmt: skip
        return head

    def check_released(self, head: LinearHead) -> None:
        """Refuse a head released with DINOv2 on a backbone whose linear input it cannot be: one
        pooled otherwise than by its [CLS] row, too shallow for its blocks, or of another width.

        Raises:
            HeadMismatchError: naming what does not fit.
        """
        from harness.heads import HeadMismatchError

        info = self.info
        if info.readout != "cls" or not info.num_cls:
            raise HeadMismatchError(
                f"a head released with DINOv2 reads the final-normed [CLS] row; {info.name} is read "
                f"by its {info.readout} readout"
            )
        blocks = head.blocks(info.hidden_size)
        if blocks > info.num_layers:
            raise HeadMismatchError(
                f"the DINOv2 head reads {blocks} blocks, {info.name} has {info.num_layers}"
            )

    def labels_index(self, head: LinearHead) -> bool:
        """Whether the data's labels index `head`'s classes: labelled data with as many classes (a
        saved head's class names are checked by `linear_head`; a model's own classifier is read in
        its order, ImageNet-1k's sorted wnids as `--data imagenet` numbers them)."""
        return len(self.class_names) >= 2 and len(self.class_names) == head.weight.shape[0]

    @property
    def layout(self) -> TokenLayout:
        """Token positions at this run's (square) resolution."""
        info = self.info
        return info.layout(self.resolution, self.resolution)

    @property
    def num_tokens(self) -> int:
        """Sequence length at this run's (square) resolution."""
        return self.layout.num_tokens

    @property
    def variants(self) -> tuple[str, ...]:
        """Every `{readout}/{variant}` the backbone produces."""
        info = self.info
        every = info.variant_names()
        return every if self.only_variants is None else tuple(v for v in every if v in self.only_variants)

    @property
    def split_names(self) -> tuple[str, ...]:
        """`split/{group}` of every group the [CLS] attention is split over."""
        return self.info.split_names()

    def width(self, variant: str) -> int:
        """Feature size of a `{readout}/{variant}` (the projection readout has its own)."""
        return self.info.projection_dim if variant.startswith(f"{PROJECTION}/") else self.info.hidden_size

    @property
    def output_variants(self) -> tuple[str, ...]:
        return tuple(v for v in self.variants if v.startswith("output/"))


REGISTERED: dict[str, type[Probe]] = {}
"""`--probe` name -> probe class, filled as probe modules are imported (`Probe.__init_subclass__`);
read it through `probes.registry`, which imports every probe module first."""

Headline = tuple[str, str]
"""A result name and what it means, for the "Key numbers" of report.md."""


class Probe(nn.Module, ABC):
    """Consumes decompositions batch by batch; `compute` gives results under the names of
    docs/design.md#names, each built by the class's own name functions.

    Subclasses hold torchmetrics Metrics as attributes, so states move with the module's device
    and reduce across DDP ranks in `compute`. `extras` says what else each backbone call must compute
    for it (`harness.extras`). Class attributes and class methods are the probe's facts, read by the
    registry, the CLI, the outputs and `--from-features`:

    Attributes:
        name: the `--probe` name; setting it in a class body registers the class.
        position: where the probe sits in `all`, the figures and the report (the paper's panels
            first; a new probe goes after them unless it says otherwise).
        needs_labels: True for probes that need class labels (left out of `all` on unlabelled data).
        needs_pixels: True for probes that read the batch's images (`harness.PIXELS`) or the
            backbone's extra passes: they cannot be re-run from saved features.
        needs_layers: True for probes that read the per-layer decomposition (`--layers`): left out
            of `all` without it.
        opt_in: True for probes that cost extra forward passes: never part of `all`.
        needs_hidden_states: True for probes that read `hidden/cls` (every block's [CLS] state),
            which features.safetensors does not hold: they cannot be re-run from saved features.
        needs_cls: True for probes that read the [CLS] token's state at every block (`hidden/cls`,
            `hidden/cls_cosine`): a model without one (SigLIP) cannot feed them (`unsupported`).
        needs_bank: True for probes that read a bank of training features (`--train-data`): left
            out of `all` without one.
        reads_head: True for the probe that applies a head of train_probe.py (`--head`).
        needs_interventions: True for probes that read passes under interventions (`--intervene`):
            left out of `all` without them.
        under_interventions: what lets the probe be read again on a pass under an intervention
            (`probes.interventions.Intervened`): "outputs" (it reads output variants only: every
            such pass), "decomposition" (it reads the last block's variants and splits: every pass
            but one that rebuilds the last block's [CLS] row, readout level at the last block),
            "deletion" (it reads the deletion passes, run under the interventions that allow them,
            `Intervention.allows_deletion`), or "" (it reads what those passes do not report).
    """

    name: ClassVar[str]
    position: ClassVar[int] = 1000
    needs_labels: ClassVar[bool] = False
    needs_pixels: ClassVar[bool] = False
    needs_layers: ClassVar[bool] = False
    opt_in: ClassVar[bool] = False
    needs_bank: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    needs_cls: ClassVar[bool] = False
    reads_head: ClassVar[bool] = False
    needs_interventions: ClassVar[bool] = False
    under_interventions: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # an abstract base or a variant of a registered probe
            return
        known = REGISTERED.get(cls.name)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if known is not None and f"{known.__module__}.{known.__qualname__}" != where:
            raise TypeError(
                f"two probes are named {cls.name!r}: {known.__module__}.{known.__qualname__} and {where}"
            )
        REGISTERED[cls.name] = cls

    @classmethod
    def unsupported(cls, info: BackboneInfo) -> str:
        """Why the model `info` describes cannot feed this probe ("" when it can): by default, a
        probe that reads the [CLS] token's states (`needs_cls`) on a model without one."""
        if cls.needs_cls and not info.num_cls:
            return f"reads the [CLS] token's state at every block, and {info.name} has no [CLS] token"
        return ""

    @classmethod
    def replayable(cls) -> bool:
        """Whether `--from-features` can feed it: it reads neither the images nor the hidden states."""
        return not cls.needs_pixels and not cls.needs_hidden_states

    def extras(self) -> tuple[Extra, ...]:
        """What each backbone call must compute for this probe besides the decomposition (the extras
        of `harness.extras`, built with this probe's settings): nothing by default."""
        return ()

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """The probe's figures of a finished run, by file name (none when the run lacks its results)."""
        return {}

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        """The probe's key numbers for report.md (shown when the run has them): none by default."""
        return ()

    @classmethod
    def run_headlines(cls, run: RunView) -> tuple[Headline, ...]:
        """The key numbers of `run`: `headlines` (a probe whose result names depend on the run's
        options names them from the run instead)."""
        return cls.headlines()

    @classmethod
    def report_tables(cls, run: RunView) -> dict[str, tuple[tuple[str, ...], list[tuple[object, ...]]]]:
        """Tables of numbers derived from the run's results for report.md, each under its title:
        (header, rows); none by default."""
        return {}

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """The probe's figures across runs, by file name (none when no run has its results)."""
        return {}

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


class ColumnStatsProbe(Probe):
    """A probe whose results are the mean and std over images of fixed columns: one (mean name,
    std name) pair per column, in result order; subclasses say how a batch becomes its columns.

    Args:
        names: (mean result name, std result name) of every column.
    """

    def __init__(self, names: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.column_names = tuple(names)
        self.metric = ColumnStats(len(self.column_names))

    @abstractmethod
    def columns(self, decomposition: Mapping[str, Tensor]) -> Tensor:
        """The batch's values, (images, columns) in the order of the names."""

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(self.columns(decomposition))

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()  # torchmetrics squeezes one column to a 0-dim tensor
        means, stds = (torch.atleast_1d(stats[stat]).tolist() for stat in ("mean", "std"))
        results: dict[str, float] = {}
        for (mean_name, std_name), mean, std in zip(self.column_names, means, stds, strict=True):
            results[mean_name], results[std_name] = mean, std
        return results
