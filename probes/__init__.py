"""Probes (docs/design.md#layers): adapters from decomposition names to the metrics of
`probes.metrics`, one per paper panel, each stating everything about itself (name, needs, forward
options, result names, figures, comparison figures, headline numbers); the registry derives
`--probe` from them.

Importing the package imports none of them (`probes.metrics` alone stays free of the models and
Lightning): each name below loads its submodule on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from probes.base import FULL_OUTPUT, ColumnStatsProbe, KnnBank, Probe, ProbeContext
    from probes.cka import CKAProbe, DebiasedCKAProbe
    from probes.cka_layers import LayerCKAProbe
    from probes.deletion import DeletionProbe
    from probes.depth import DepthProbe
    from probes.knn import KnnProbe
    from probes.layerwise import LayerwiseProbe
    from probes.linear import LinearHeadProbe, LinearProbe, RidgeProbe
    from probes.maps import MapsProbe
    from probes.norms import NormsProbe
    from probes.oneshot import OneShotProbe
    from probes.registers import RegistersProbe
    from probes.registry import (
        PROBE_CLASSES,
        PROBES,
        ProbeSelection,
        ProbeSelectionError,
        build_probes,
        parse_probe_names,
    )
    from probes.replay import replay_features
    from probes.split import SplitProbe

_SUBMODULES: dict[str, tuple[str, ...]] = {
    "base": ("FULL_OUTPUT", "ColumnStatsProbe", "KnnBank", "Probe", "ProbeContext"),
    "cka": ("CKAProbe", "DebiasedCKAProbe"),
    "cka_layers": ("LayerCKAProbe",),
    "deletion": ("DeletionProbe",),
    "depth": ("DepthProbe",),
    "knn": ("KnnProbe",),
    "layerwise": ("LayerwiseProbe",),
    "linear": ("LinearHeadProbe", "LinearProbe", "RidgeProbe"),
    "maps": ("MapsProbe",),
    "norms": ("NormsProbe",),
    "oneshot": ("OneShotProbe",),
    "registers": ("RegistersProbe",),
    "registry": (
        "PROBE_CLASSES",
        "PROBES",
        "ProbeSelection",
        "ProbeSelectionError",
        "build_probes",
        "parse_probe_names",
    ),
    "replay": ("replay_features",),
    "split": ("SplitProbe",),
}
"""Submodule -> the names the package exports from it."""

__all__ = [
    "FULL_OUTPUT",
    "PROBES",
    "PROBE_CLASSES",
    "CKAProbe",
    "ColumnStatsProbe",
    "DebiasedCKAProbe",
    "DeletionProbe",
    "DepthProbe",
    "KnnBank",
    "KnnProbe",
    "LayerCKAProbe",
    "LayerwiseProbe",
    "LinearHeadProbe",
    "LinearProbe",
    "MapsProbe",
    "NormsProbe",
    "OneShotProbe",
    "Probe",
    "ProbeContext",
    "ProbeSelection",
    "ProbeSelectionError",
    "RegistersProbe",
    "RidgeProbe",
    "SplitProbe",
    "build_probes",
    "parse_probe_names",
    "replay_features",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _SUBMODULES)
