"""Probe names accepted by `--probe` and how each is built for a run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import BackboneInfo, TokenLayout, variant_names
from harness.errors import HarnessError
from probes.accuracy_probes import LinearHeadProbe, OneShotProbe, RidgeProbe
from probes.base import Probe
from probes.cka_probe import ESTIMATORS, CKAProbe
from probes.layerwise_probe import LayerwiseProbe
from probes.linear_head import LinearHead
from probes.maps_probe import MapsProbe
from probes.norms_probe import NormsProbe
from probes.registers_probe import RegistersProbe
from probes.split_probe import SplitProbe


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
    """

    info: BackboneInfo
    class_names: tuple[str, ...] = ()
    resolution: int = 224
    seed: int = 0
    episodes: int = 10
    shots: int = 1
    head: Path | None = None

    @property
    def num_tokens(self) -> int:
        """Sequence length at this run's (square) resolution."""
        side = self.resolution // self.info.patch_size
        return TokenLayout(self.info.num_registers, side, side).num_tokens

    @property
    def output_variants(self) -> tuple[str, ...]:
        return tuple(v for v in variant_names(self.info.num_registers) if v.startswith("output/"))


def _linear(context: ProbeContext) -> Probe:
    if context.head is None:
        return RidgeProbe(
            context.output_variants, context.info.hidden_size, len(context.class_names), context.seed
        )
    head = LinearHead.load(context.head)
    head.check_compatible(context.info.identity, context.class_names, context.resolution)
    return LinearHeadProbe(head, context.output_variants)


PROBES: dict[str, Callable[[ProbeContext], Probe]] = {
    "split": lambda context: SplitProbe(),
    "cka": lambda context: CKAProbe(variant_names(context.info.num_registers), context.info.hidden_size),
    "cka_debiased": lambda context: CKAProbe(
        variant_names(context.info.num_registers), context.info.hidden_size, estimators=("cka_debiased",)
    ),
    "registers": lambda context: RegistersProbe(
        context.info.hidden_size, context.num_tokens, context.info.num_registers
    ),
    "norms": lambda context: NormsProbe(variant_names(context.info.num_registers)),
    "layerwise": lambda context: LayerwiseProbe(context.info.num_layers),
    "maps": lambda context: MapsProbe(),
    "oneshot": lambda context: OneShotProbe(
        context.output_variants, context.episodes, context.shots, context.seed
    ),
    "linear": _linear,
}
"""Every probe this version implements; `all` selects them all."""

LABELLED_PROBES = frozenset({"oneshot", "linear"})
"""Probes that need class labels."""
PIXEL_PROBES = frozenset({"maps"})
"""Probes that read the images themselves: they cannot be re-run from saved features."""


def parse_probe_names(text: str, labelled: bool | None = None, pixels: bool = True) -> list[str]:
    """`"cka,split"` or `"all"` -> probe names, validated, in the order given.

    `all` on unlabelled data (`labelled=False`) leaves out the probes that need labels, and
    without images (`pixels=False`, features replayed) the probes that read them.

    >>> parse_probe_names("split, cka")
    ['split', 'cka']
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return [
            name
            for name in PROBES
            if (labelled is not False or name not in LABELLED_PROBES) and (pixels or name not in PIXEL_PROBES)
        ]
    unknown = [name for name in names if name not in PROBES]
    if unknown or not names:
        raise ValueError(f"unknown probe(s) {unknown or text!r}; choose from {', '.join(PROBES)} or 'all'")
    return list(dict.fromkeys(names))


def build_probes(names: Sequence[str], context: ProbeContext) -> dict[str, Probe]:
    """One fresh probe per name; refuses label-needing probes on unlabelled data."""
    needing_labels = [name for name in names if name in LABELLED_PROBES]
    if needing_labels and not context.class_names:
        raise HarnessError(
            f"probe(s) {', '.join(needing_labels)} need class labels, and this data has none "
            "(use a labelled source: a folder with one sub-folder per class, ImageNet)"
        )
    probes = {name: PROBES[name](context) for name in names if name not in ESTIMATORS}
    estimators = [name for name in names if name in ESTIMATORS]
    if estimators:  # both CKA estimators read the same moments: one probe serves them
        probes[estimators[0]] = CKAProbe(
            variant_names(context.info.num_registers), context.info.hidden_size, estimators=estimators
        )
    return {name: probes[name] for name in names if name in probes}
