"""Frozen DINOv2 backbones whose last-layer [CLS] output is split into contributions."""

from harness.backbone import BackboneInfo, DecomposingBackbone
from harness.decomposition import Decomposition, split_names, variant_names
from harness.errors import BackboneUnavailableError, HarnessError, UnknownBackboneError
from harness.loading import HUB_MODELS, RANDOM_MODELS, load_backbone
from harness.tokens import GROUPS, TokenLayout

__all__ = [
    "GROUPS",
    "HUB_MODELS",
    "RANDOM_MODELS",
    "BackboneInfo",
    "BackboneUnavailableError",
    "DecomposingBackbone",
    "Decomposition",
    "HarnessError",
    "TokenLayout",
    "UnknownBackboneError",
    "load_backbone",
    "split_names",
    "variant_names",
]
