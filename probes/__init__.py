"""Probes: torchmetrics Metrics fed the decomposition of each batch; states reduce across ranks."""

from probes.base import Probe
from probes.cka import LinearCKA
from probes.cka_probe import CKAProbe
from probes.features import EvaluatedImages, FeatureStore
from probes.registry import PROBES, build_probes, parse_probe_names
from probes.split import AttentionSplit
from probes.split_probe import SplitProbe

__all__ = [
    "PROBES",
    "AttentionSplit",
    "CKAProbe",
    "EvaluatedImages",
    "FeatureStore",
    "LinearCKA",
    "Probe",
    "SplitProbe",
    "build_probes",
    "parse_probe_names",
]
