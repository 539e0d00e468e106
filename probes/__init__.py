"""Probes: torchmetrics Metrics fed the decomposition of each batch; states reduce across ranks."""

from probes.accuracy_probes import LinearHeadProbe, OneShotProbe, RidgeProbe
from probes.base import Probe
from probes.cka import LinearCKA
from probes.cka_probe import CKAProbe
from probes.features import EvaluatedImages, FeatureStore
from probes.linear_head import LinearHead
from probes.oneshot import OneShotAccuracy
from probes.registry import LABELLED_PROBES, PROBES, ProbeContext, build_probes, parse_probe_names
from probes.ridge import RidgeAccuracy
from probes.split import AttentionSplit
from probes.split_probe import SplitProbe

__all__ = [
    "LABELLED_PROBES",
    "PROBES",
    "AttentionSplit",
    "CKAProbe",
    "EvaluatedImages",
    "FeatureStore",
    "LinearCKA",
    "LinearHead",
    "LinearHeadProbe",
    "OneShotAccuracy",
    "OneShotProbe",
    "Probe",
    "ProbeContext",
    "RidgeAccuracy",
    "RidgeProbe",
    "SplitProbe",
    "build_probes",
    "parse_probe_names",
]
