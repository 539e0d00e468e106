"""Probe names accepted by `--probe` and how each is built for a backbone."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness import BackboneInfo, variant_names
from probes.base import Probe
from probes.cka_probe import CKAProbe
from probes.split_probe import SplitProbe

PROBES: dict[str, Callable[[BackboneInfo], Probe]] = {
    "split": lambda info: SplitProbe(),
    "cka": lambda info: CKAProbe(variant_names(info.num_registers), info.hidden_size),
}
"""Every probe this version implements; `all` selects them all."""


def parse_probe_names(text: str) -> list[str]:
    """`"cka,split"` or `"all"` -> probe names, validated, in the order given.

    >>> parse_probe_names("split, cka")
    ['split', 'cka']
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(PROBES)
    unknown = [name for name in names if name not in PROBES]
    if unknown or not names:
        raise ValueError(f"unknown probe(s) {unknown or text!r}; choose from {', '.join(PROBES)} or 'all'")
    return list(dict.fromkeys(names))


def build_probes(names: Sequence[str], info: BackboneInfo) -> dict[str, Probe]:
    """One fresh probe per name for the backbone described by `info`."""
    return {name: PROBES[name](info) for name in names}
