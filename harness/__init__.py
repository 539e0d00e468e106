"""Model side (docs/design.md#layers): frozen ViT backbones (every family of `harness.families`) whose
last-layer [CLS] output is split into contributions, the LightningModule that runs them once per batch,
and linear heads on their features."""

from harness.backbone import BackboneInfo, DecomposingBackbone, ForwardOptions
from harness.decomposition import PIXELS, PROJECTION, Decomposition, parse_layers, split_names, variant_names
from harness.errors import BackboneUnavailableError, UnknownBackboneError
from harness.heads import HeadMismatchError, LinearHead, LinearHeads
from harness.loading import HUB_MODELS, RANDOM_MODELS, load_backbone, resolve_backbone
from harness.module import Consumer, HarnessModule, all_feature_names, feed
from harness.records import EvaluatedImages, FeatureStore
from harness.tokens import GROUPS, TokenLayout

__all__ = [
    "GROUPS",
    "HUB_MODELS",
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
    "LinearHead",
    "LinearHeads",
    "TokenLayout",
    "UnknownBackboneError",
    "all_feature_names",
    "feed",
    "load_backbone",
    "parse_layers",
    "resolve_backbone",
    "split_names",
    "variant_names",
]
