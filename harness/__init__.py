"""Model side (docs/design.md#layers): frozen ViT backbones (every family of `harness.families`) whose
last-layer [CLS] output is split into contributions, the seam extras plug into (`Extra`, `Tap`; the
extras themselves are `harness.extras`, a layer above), the LightningModule that runs them once per
batch, linear heads on their features, and test-time registers (a model transform).

Importing the package imports none of them: each name below loads its submodule (torch, transformers,
timm, Lightning) on first use, so a command's `--help` stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from harness.backbone import Call, DecomposingBackbone, Extra, ExtraResult
    from harness.capture import Capture
    from harness.decomposition import (
        LINEAR_INPUT_CLS,
        LINEAR_INPUT_PATCH_MEAN,
        PIXELS,
        PROJECTION,
        Decomposition,
        parse_layers,
        split_names,
        variant_names,
    )
    from harness.errors import BackboneUnavailableError, UnknownBackboneError
    from harness.heads import HeadMismatchError, LinearHead, LinearHeads
    from harness.info import BackboneInfo
    from harness.loading import HUB_MODELS, RANDOM_MODELS, load_backbone, resolve_backbone
    from harness.module import Consumer, HarnessModule, all_feature_names, feed, merged_extras
    from harness.records import EvaluatedImages, FeatureStore
    from harness.taps import BlockParts, Tap
    from harness.test_time_registers import TestTimeRegisters, with_test_time_registers
    from harness.tokens import GROUPS, TokenLayout

_SUBMODULES: dict[str, tuple[str, ...]] = {
    "backbone": ("Call", "DecomposingBackbone", "Extra", "ExtraResult"),
    "capture": ("Capture",),
    "decomposition": (
        "LINEAR_INPUT_CLS",
        "LINEAR_INPUT_PATCH_MEAN",
        "PIXELS",
        "PROJECTION",
        "Decomposition",
        "parse_layers",
        "split_names",
        "variant_names",
    ),
    "errors": ("BackboneUnavailableError", "UnknownBackboneError"),
    "heads": ("HeadMismatchError", "LinearHead", "LinearHeads"),
    "info": ("BackboneInfo",),
    "loading": ("HUB_MODELS", "RANDOM_MODELS", "load_backbone", "resolve_backbone"),
    "module": ("Consumer", "HarnessModule", "all_feature_names", "feed", "merged_extras"),
    "records": ("EvaluatedImages", "FeatureStore"),
    "taps": ("BlockParts", "Tap"),
    "test_time_registers": ("TestTimeRegisters", "with_test_time_registers"),
    "tokens": ("GROUPS", "TokenLayout"),
}
"""Submodule -> the names the package exports from it."""

__all__ = [
    "GROUPS",
    "HUB_MODELS",
    "LINEAR_INPUT_CLS",
    "LINEAR_INPUT_PATCH_MEAN",
    "PIXELS",
    "PROJECTION",
    "RANDOM_MODELS",
    "BackboneInfo",
    "BackboneUnavailableError",
    "BlockParts",
    "Call",
    "Capture",
    "Consumer",
    "DecomposingBackbone",
    "Decomposition",
    "EvaluatedImages",
    "Extra",
    "ExtraResult",
    "FeatureStore",
    "HarnessModule",
    "HeadMismatchError",
    "LinearHead",
    "LinearHeads",
    "Tap",
    "TestTimeRegisters",
    "TokenLayout",
    "UnknownBackboneError",
    "all_feature_names",
    "feed",
    "load_backbone",
    "merged_extras",
    "parse_layers",
    "resolve_backbone",
    "split_names",
    "variant_names",
    "with_test_time_registers",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _SUBMODULES)
