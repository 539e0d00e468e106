"""One small adapter per ViT family: everything that differs between families lives in its adapter
(docs/design.md#backbones). On the model: where its blocks, embeddings, final norm and [CLS] readout
are, and a view of each block under the names the decomposition reads. Around the model: its short
names, how transformers loads its checkpoints, how it resizes its position grid, and how its images
are prepared (its default, and whether a checkpoint's processor config overrides it).

A block view exposes `norm1`, `attention.{q_proj, k_proj, v_proj, o_proj, num_attention_heads,
head_dim, scaling}`, `layer_scale1` / `layer_scale2` (with `lambda1`), `norm2` and `mlp`, each the
family's own module where it has one (so hooks on the view's projections fire in the model's own
pass); families without layer scale get a unit scale.
"""

from __future__ import annotations

from torch import nn
from transformers import AutoModel, PretrainedConfig

from harness.families.aimv2 import Aimv2Family
from harness.families.base import AttentionView, BlockView, Family, LoadAs, PoolView, UnitScale
from harness.families.clip import CLIPFamily
from harness.families.dinov2 import Dinov2Family
from harness.families.dinov3 import Dinov3Family
from harness.families.eva import EvaFamily
from harness.families.naflex import NaFlexFamily
from harness.families.openclip import OpenCLIPFamily, timm_trunk
from harness.families.siglip import SiglipFamily
from harness.families.timm_vit import TimmFamily
from harness.families.vit import DeiTFamily, ViTFamily

__all__ = [
    "FAMILIES",
    "Aimv2Family",
    "AttentionView",
    "BlockView",
    "CLIPFamily",
    "DeiTFamily",
    "Dinov2Family",
    "Dinov3Family",
    "EvaFamily",
    "Family",
    "LoadAs",
    "NaFlexFamily",
    "OpenCLIPFamily",
    "PoolView",
    "SiglipFamily",
    "TimmFamily",
    "UnitScale",
    "ViTFamily",
    "family_for",
    "load_as",
    "short_names",
    "unwrapped",
]

FAMILIES: tuple[type[Family], ...] = (
    Dinov2Family, Dinov3Family, ViTFamily, DeiTFamily, CLIPFamily, SiglipFamily, Aimv2Family, TimmFamily,
    EvaFamily, NaFlexFamily, OpenCLIPFamily,
)  # fmt: skip


def short_names() -> dict[str, str]:
    """Every family's short names (`Family.short_names`) -> HF id, in the order of `FAMILIES`."""
    return {name: hub_id for family in FAMILIES for name, hub_id in family.short_names.items()}


def load_as(config: PretrainedConfig) -> LoadAs:
    """How transformers loads a checkpoint whose config is `config`: as the family it belongs to says
    (`Family.load_as`), else with `AutoModel`."""
    found = (family.load_as(config) for family in FAMILIES)
    return next((how for how in found if how is not None), LoadAs(AutoModel))


def unwrapped(model: nn.Module) -> tuple[nn.Module, nn.Linear | None]:
    """A classifier a family keeps whole (ViT's and DeiT's `...ForImageClassification`: `classifiers`)
    as its backbone and its classifier on the [CLS] readout; an open_clip tower built on a timm model
    (or the `CLIP` holding it) as that timm model (`timm_trunk`); any other model as it is, with None."""
    trunk = timm_trunk(model)
    if trunk is not None:
        return trunk, None
    for family in FAMILIES:
        for model_class, inner, classifier in getattr(family, "classifiers", {}).values():
            if type(model) is model_class:
                return getattr(model, inner), getattr(model, classifier)
    return model, None


def family_for(model: nn.Module) -> Family:
    """The adapter of `model`'s family.

    Raises:
        ValueError: no adapter knows the model (the message names the supported families).
    """
    for family in FAMILIES:
        if family.accepts(model):
            return family(model)
    supported = ", ".join(name for family in FAMILIES for name in family.type_names())
    raise ValueError(f"{type(model).__name__} is not a supported ViT ({supported})")
