"""The `--probe` names, derived from the probe classes, and the typed selection a run is built from.

Every module of this package is imported here, so every `Probe` subclass that sets a `name` has
registered itself (`Probe.__init_subclass__`): adding a probe is one file, nothing to list.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from common.errors import UserError
from common.lazy import import_every_module
from harness import BackboneInfo
from probes.base import REGISTERED, Probe, ProbeContext
from probes.interventions import Intervened


def _import_probe_modules() -> None:
    """Import every module of the package (their probe classes register as they are defined)."""
    package = importlib.import_module(__package__)  # already imported: this module is one of its parts
    import_every_module(__package__, package.__path__)


_import_probe_modules()

PROBE_CLASSES: tuple[type[Probe], ...] = tuple(
    sorted(REGISTERED.values(), key=lambda probe: (probe.position, probe.name))
)
"""Every probe this version implements, in the order `all` runs them (`Probe.position`)."""

PROBES: dict[str, type[Probe]] = {probe.name: probe for probe in PROBE_CLASSES}
"""`--probe` name -> probe class."""


class ProbeSelectionError(UserError, ValueError):
    """A `--probe` list that names unknown probes, or probes this run cannot feed."""


RESOURCES: tuple[tuple[str, Callable[[type[Probe]], bool], str], ...] = (
    ("pixels", lambda probe: not probe.replayable(),
     "read the images or the [CLS] hidden states, which saved features do not hold: run with the backbone"),
    ("layers", lambda probe: probe.needs_layers, "read the per-layer decomposition: add --layers"),
    ("bank", lambda probe: probe.needs_bank,
     "query a bank of training features: add --train-data and --train-dir"),
    ("interventions", lambda probe: probe.needs_interventions,
     "read passes under interventions: add --intervene SPEC"),
)  # fmt: skip
"""What a run may lack, the probes that cannot run without it, and what to do about it."""


@dataclass(frozen=True)
class ProbeSelection:
    """The probes of a run, parsed once from `--probe` and shared by the CLI, the probes'
    construction and replay.

    Attributes:
        names: the probe names, validated, in the order given (`all`: the registry's order).
        everything: True when `all` was asked for: probes the data cannot feed are then left out
            (`for_data`) instead of refused.
    """

    names: tuple[str, ...]
    everything: bool = False

    @classmethod
    def parse(
        cls, text: str, pixels: bool = True, layers: bool | None = None, bank: bool | None = None,
        interventions: bool | None = None,
    ) -> ProbeSelection:  # fmt: skip
        """`"cka,split"` or `"all"` -> the selection, validated against what the run will have.

        `all` never holds the opt-in probes (extra forward passes); without images (`pixels=False`,
        features replayed) it leaves out the probes that read them or the hidden states
        (`Probe.replayable`), without a per-layer decomposition (`layers=False`) the probes that read
        it, without a bank of training features (`bank=False`) the probes that query it, and without
        interventions (`interventions=False`) the probes that read them; naming a probe that reads
        what the run lacks is an error. None: not known yet (nothing left out, nothing refused).

        >>> ProbeSelection.parse("split, cka").names
        ('split', 'cka')
        """
        names = [part.strip() for part in text.split(",") if part.strip()]
        lacking = {
            "pixels": not pixels, "layers": layers is False, "bank": bank is False,
            "interventions": interventions is False,
        }  # fmt: skip
        unfed = [needs for resource, needs, _ in RESOURCES if lacking[resource]]
        if names == ["all"]:
            chosen = [
                name
                for name, probe in PROBES.items()
                if not probe.opt_in and not any(needs(probe) for needs in unfed)
            ]
            return cls(tuple(chosen), everything=True)
        if "all" in names:  # `all` stands alone: the opt-in probes are named instead
            opt_in = ", ".join(name for name, probe in PROBES.items() if probe.opt_in)
            raise ProbeSelectionError(
                f"--probe {text!r}: 'all' stands alone; to add opt-in probes ({opt_in}) to it, list every "
                "probe by name"
            )
        unknown = [name for name in names if name not in PROBES]
        if unknown or not names:
            raise ProbeSelectionError(
                f"unknown probe(s) {unknown or text!r}; choose from {', '.join(PROBES)} or 'all'"
            )
        selection = cls(tuple(dict.fromkeys(names)))
        for resource, needs, remedy in RESOURCES:
            if lacking[resource] and (refused := selection.named(needs)):
                raise ProbeSelectionError(f"probe(s) {', '.join(refused)} {remedy}")
        return selection

    @property
    def classes(self) -> tuple[type[Probe], ...]:
        return tuple(PROBES[name] for name in self.names)

    def named(self, test: Callable[[type[Probe]], bool]) -> list[str]:
        """The selected names whose probe class passes `test`."""
        return [probe.name for probe in self.classes if test(probe)]

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def needs_bank(self) -> bool:
        """Whether a selected probe queries a bank of training features."""
        return any(probe.needs_bank for probe in self.classes)

    @property
    def reads_head(self) -> bool:
        """Whether a selected probe applies a head of train_probe.py (`--head`)."""
        return any(probe.reads_head for probe in self.classes)

    def for_model(self, info: BackboneInfo) -> ProbeSelection:
        """The selection on the model `info` describes: `all` leaves out the probes it cannot feed
        (`Probe.unsupported`); a named one is refused in one line."""
        reasons = {probe.name: reason for probe in self.classes if (reason := probe.unsupported(info))}
        if not reasons:
            return self
        if self.everything:
            return ProbeSelection(tuple(name for name in self.names if name not in reasons), everything=True)
        raise ProbeSelectionError("; ".join(f"probe {name} {reason}" for name, reason in reasons.items()))

    def for_data(self, labelled: bool) -> ProbeSelection:
        """The selection on data with (or without) class labels: `all` leaves out the probes that
        need labels on unlabelled data; a named one stays (and `build` refuses it)."""
        if labelled or not self.everything:
            return self
        return ProbeSelection(tuple(self.named(lambda probe: not probe.needs_labels)), everything=True)

    def build(self, context: ProbeContext) -> dict[str, Probe]:
        """One fresh probe per name (a probe that can serve another's results takes them over);
        refuses label-needing probes on data of fewer than 2 classes."""
        needing_labels = self.named(lambda probe: probe.needs_labels)
        if needing_labels and len(context.class_names) < 2:
            has = f"{len(context.class_names)} class" if context.class_names else "none"
            raise ProbeSelectionError(
                f"probe(s) {', '.join(needing_labels)} need class labels of 2 classes or more, and this "
                f"data has {has} (use a labelled source: a folder with one sub-folder per class, ImageNet)"
            )
        built: dict[str, Probe] = {}
        for name, probe_class in zip(self.names, self.classes, strict=True):
            probe = probe_class.from_context(context)
            if not any(existing.absorb(probe) for existing in built.values()):
                built[name] = probe
        for intervention in context.interventions:  # the probes that can read a pass under one, again
            reported = intervention.reported_variants(context.info.num_layers)
            narrowed = replace(context, only_variants=reported)
            readable: tuple[str, ...] = ("outputs",) if reported is not None else ("outputs", "decomposition")
            readable += ("deletion",) if intervention.allows_deletion else ()
            for name in [n for n in self.names if PROBES[n].under_interventions in readable]:
                built[f"{name}@{intervention.name}"] = Intervened(
                    PROBES[name].from_context(narrowed), intervention
                )
        return built


def parse_probe_names(
    text: str,
    labelled: bool | None = None,
    pixels: bool = True,
    layers: bool | None = None,
    bank: bool | None = None,
) -> list[str]:
    """The names of `ProbeSelection.parse(text, pixels, layers, bank)`, narrowed to the data's labels
    when `labelled` is known (`ProbeSelection.for_data`).

    >>> parse_probe_names("split, cka")
    ['split', 'cka']
    """
    selection = ProbeSelection.parse(text, pixels=pixels, layers=layers, bank=bank)
    return list(selection.names if labelled is None else selection.for_data(labelled).names)


def build_probes(names: Iterable[str], context: ProbeContext) -> dict[str, Probe]:
    """One fresh probe per name (`ProbeSelection.build`)."""
    return ProbeSelection(tuple(names)).build(context)
