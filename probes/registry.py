"""The `--probe` names, derived from the probe classes, and how a run's probes are built."""

from __future__ import annotations

from collections.abc import Sequence

from cls_decoupling.errors import UserError
from probes.base import Probe, ProbeContext
from probes.cka import CKAProbe, DebiasedCKAProbe
from probes.cka_layers import LayerCKAProbe
from probes.deletion import DeletionProbe
from probes.depth import DepthProbe
from probes.knn import KnnProbe
from probes.layerwise import LayerwiseProbe
from probes.linear import LinearProbe
from probes.maps import MapsProbe
from probes.norms import NormsProbe
from probes.oneshot import OneShotProbe
from probes.registers import RegistersProbe
from probes.split import SplitProbe

PROBE_CLASSES: tuple[type[Probe], ...] = (
    SplitProbe,
    CKAProbe,
    DebiasedCKAProbe,
    RegistersProbe,
    NormsProbe,
    LayerwiseProbe,
    MapsProbe,
    OneShotProbe,
    LinearProbe,
    DepthProbe,
    LayerCKAProbe,
    DeletionProbe,
    KnnProbe,
)
"""Every probe this version implements, in the order `all` runs them."""

PROBES: dict[str, type[Probe]] = {probe.name: probe for probe in PROBE_CLASSES}
"""`--probe` name -> probe class."""


class ProbeSelectionError(UserError, ValueError):
    """A `--probe` list that names unknown probes, or probes this run cannot feed."""


def parse_probe_names(
    text: str,
    labelled: bool | None = None,
    pixels: bool = True,
    layers: bool | None = None,
    bank: bool | None = None,
) -> list[str]:
    """`"cka,split"` or `"all"` -> probe names, validated, in the order given.

    `all` never holds the opt-in probes (extra forward passes); on unlabelled data
    (`labelled=False`: no labels, or one class) it leaves out the probes that
    need labels, without images (`pixels=False`, features replayed) the probes that read them or
    the hidden states (`Probe.replayable`), and
    without a per-layer decomposition (`layers=False`) the probes that read it, and without a bank of
    training features (`bank=False`) the probes that query it; naming a probe that reads the images,
    the layers or the bank without them is an error.

    >>> parse_probe_names("split, cka")
    ['split', 'cka']
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return [
            name
            for name, probe in PROBES.items()
            if not probe.opt_in
            and (labelled is not False or not probe.needs_labels)
            and (pixels or probe.replayable())
            and (layers is not False or not probe.needs_layers)
            and (bank is not False or not probe.needs_bank)
        ]
    unknown = [name for name in names if name not in PROBES]
    if unknown or not names:
        raise ProbeSelectionError(
            f"unknown probe(s) {unknown or text!r}; choose from {', '.join(PROBES)} or 'all'"
        )
    if not pixels and (reading := [name for name in names if not PROBES[name].replayable()]):
        raise ProbeSelectionError(
            f"probe(s) {', '.join(reading)} read the images or the [CLS] hidden states, which saved "
            "features do not hold: run with the backbone"
        )
    if layers is False and (deep := [name for name in names if PROBES[name].needs_layers]):
        raise ProbeSelectionError(
            f"probe(s) {', '.join(deep)} read the per-layer decomposition: add --layers"
        )
    if bank is False and (querying := [name for name in names if PROBES[name].needs_bank]):
        raise ProbeSelectionError(
            f"probe(s) {', '.join(querying)} query a bank of training features: "
            "add --train-data and --train-dir"
        )
    return list(dict.fromkeys(names))


def build_probes(names: Sequence[str], context: ProbeContext) -> dict[str, Probe]:
    """One fresh probe per name (a probe that can serve another's results takes them over);
    refuses label-needing probes on unlabelled data."""
    needing_labels = [name for name in names if PROBES[name].needs_labels]
    if needing_labels and len(context.class_names) < 2:
        has = f"{len(context.class_names)} class" if context.class_names else "none"
        raise ProbeSelectionError(
            f"probe(s) {', '.join(needing_labels)} need class labels of 2 classes or more, and this data "
            f"has {has} (use a labelled source: a folder with one sub-folder per class, ImageNet)"
        )
    probes: dict[str, Probe] = {}
    for name in names:
        probe = PROBES[name].from_context(context)
        if not any(existing.absorb(probe) for existing in probes.values()):
            probes[name] = probe
    return probes
