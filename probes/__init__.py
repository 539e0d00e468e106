"""Probes: torchmetrics Metrics fed the decomposition of each batch; states reduce across ranks."""

from probes.accuracy_probes import LinearHeadProbe, OneShotProbe, RidgeProbe
from probes.base import Probe
from probes.cka import LinearCKA
from probes.cka_probe import CKAProbe
from probes.faithfulness import Faithfulness
from probes.features import EvaluatedImages, FeatureStore
from probes.layerwise_probe import LayerwiseProbe
from probes.linear_head import LinearHead
from probes.maps_probe import MapsProbe
from probes.norms_probe import NormsProbe
from probes.oneshot import OneShotAccuracy
from probes.registers_probe import HighNormToken, RegistersProbe
from probes.registry import LABELLED_PROBES, PROBES, ProbeContext, build_probes, parse_probe_names
from probes.ridge import RidgeAccuracy
from probes.split import AttentionSplit
from probes.split_probe import SplitProbe
from probes.stats import ColumnStats

__all__ = [
    "LABELLED_PROBES",
    "PROBES",
    "AttentionSplit",
    "CKAProbe",
    "ColumnStats",
    "EvaluatedImages",
    "Faithfulness",
    "FeatureStore",
    "HighNormToken",
    "LayerwiseProbe",
    "LinearCKA",
    "LinearHead",
    "LinearHeadProbe",
    "MapsProbe",
    "NormsProbe",
    "OneShotAccuracy",
    "OneShotProbe",
    "Probe",
    "ProbeContext",
    "RegistersProbe",
    "RidgeAccuracy",
    "RidgeProbe",
    "SplitProbe",
    "build_probes",
    "parse_probe_names",
]
