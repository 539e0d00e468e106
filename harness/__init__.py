"""Model side (docs/design.md#layers): frozen ViT backbones (every family of `harness.families`) whose
last-layer [CLS] output is split into contributions, the LightningModule that runs them once per batch,
and linear heads on their features.

Importing the package imports none of them: each name below loads its submodule (torch, transformers,
timm, Lightning) on first use, so a command's `--help` stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from harness.backbone import BackboneInfo, DecomposingBackbone, ForwardOptions
    from harness.decomposition import (
        PIXELS,
        PROJECTION,
        Decomposition,
        parse_layers,
        split_names,
        variant_names,
    )
    from harness.errors import BackboneUnavailableError, UnknownBackboneError
    from harness.heads import HeadMismatchError, LinearHead, LinearHeads
    from harness.interventions import (
        INTERVENTION_PREFIX,
        Intervention,
        ReferenceStatistics,
        parse_intervention,
    )
    from harness.loading import HUB_MODELS, RANDOM_MODELS, load_backbone, resolve_backbone
    from harness.module import Consumer, HarnessModule, ReferenceModule, all_feature_names, feed
    from harness.records import EvaluatedImages, FeatureStore
    from harness.tokens import GROUPS, TokenLayout

_SUBMODULES: dict[str, tuple[str, ...]] = {
    "backbone": ("BackboneInfo", "DecomposingBackbone", "ForwardOptions"),
    "decomposition": (
        "PIXELS",
        "PROJECTION",
        "Decomposition",
        "parse_layers",
        "split_names",
        "variant_names",
    ),
    "errors": ("BackboneUnavailableError", "UnknownBackboneError"),
    "heads": ("HeadMismatchError", "LinearHead", "LinearHeads"),
    "interventions": ("INTERVENTION_PREFIX", "Intervention", "ReferenceStatistics", "parse_intervention"),
    "loading": ("HUB_MODELS", "RANDOM_MODELS", "load_backbone", "resolve_backbone"),
    "module": ("Consumer", "HarnessModule", "ReferenceModule", "all_feature_names", "feed"),
    "records": ("EvaluatedImages", "FeatureStore"),
    "tokens": ("GROUPS", "TokenLayout"),
}
"""Submodule -> the names the package exports from it."""

__all__ = [
    "GROUPS",
    "HUB_MODELS",
    "INTERVENTION_PREFIX",
    "PIXELS",
    "PROJECTION",
    "RANDOM_MODELS",
    "BackboneInfo",
    "BackboneUnavailableError",
    "Consumer",
    "DecomposingBackbone",
    "Decomposition",
    "EvaluatedImages",
    "FeatureStore",
    "ForwardOptions",
    "HarnessModule",
    "HeadMismatchError",
    "Intervention",
    "LinearHead",
    "LinearHeads",
    "ReferenceModule",
    "ReferenceStatistics",
    "TokenLayout",
    "UnknownBackboneError",
    "all_feature_names",
    "feed",
    "load_backbone",
    "parse_intervention",
    "parse_layers",
    "resolve_backbone",
    "split_names",
    "variant_names",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _SUBMODULES)
