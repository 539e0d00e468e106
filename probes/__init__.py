"""Probes (docs/design.md#layers): adapters from decomposition names to the metrics of
`probes.metrics`, one per paper panel, each stating everything about itself (name, needs, forward
options, result names, figures, comparison figures, headline numbers); the registry derives
`--probe` from them."""

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
