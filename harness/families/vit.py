"""ViT (and DINO v1, iBOT converted to it) and the distilled DeiT, as transformers holds them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import (
    AutoModel,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    DeiTModel,
    PretrainedConfig,
    ViTForImageClassification,
    ViTModel,
)

from common.preparation import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from harness.families.base import BlockView, Family, LoadAs, UnitScale, attention_view
from harness.tokens import TokenLayout

DINO_V1 = re.compile(r"(^|/)dino-vit[sb](8|16)/?$")
"""DINO v1's released checkpoints in transformers' layout, by hub id or folder name."""


class ViTFamily(Family):
    """transformers' `ViTModel` (ViT, DINO v1 in transformers' layout): no layer scale, no registers;
    the [CLS] readout is the final layer norm's [CLS] row (not ViT's dense + tanh pooler)."""

    name = "vit"
    model_types: ClassVar[tuple[type[nn.Module], ...]] = (ViTModel,)
    config_type: ClassVar[str] = "vit"  # `model_type` of its checkpoints' config
    processor_type = "ViTImageProcessor"
    preprocessing = Preprocessing(  # transformers' ViTImageProcessor
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="square", interpolation="bilinear", resize_ratio=1.0
    )

    classifiers: ClassVar[Mapping[str, tuple[type[nn.Module], str, str]]] = {
        "ViTForImageClassification": (ViTForImageClassification, "vit", "classifier")
    }
    """A classifier checkpoint's architecture -> (its class, the backbone's attribute, the attribute
    of its classifier on the final layer norm's [CLS] row)."""

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        """The model without its tanh pooler (not the readout: not built, its weights left out); a
        classifier checkpoint (`google/vit-base-patch16-224`) whole, its classifier kept."""
        if config.model_type != cls.config_type:
            return None
        architecture = (getattr(config, "architectures", None) or [""])[0]
        if architecture in cls.classifiers:
            model_class, inner, classifier = cls.classifiers[architecture]
            return LoadAs(model_class, left_out=(f"{inner}.pooler.",), inner=inner, classifier=classifier)
        return LoadAs(AutoModel, {"add_pooling_layer": False}, left_out=("pooler.",))

    def pos_interpolation(self, asked: str | None, as_released: bool) -> str:
        """transformers' resize ("hf"), or DINO's own ("original": bicubic at scale factors
        ((rows + 0.1) / side, (columns + 0.1) / side), `harness.positions`), the default for DINO v1's
        released weights in transformers' layout (`facebook/dino-vit{s,b}{8,16}`, or a folder named so)."""
        if asked is not None:
            return asked
        return "original" if DINO_V1.search(str(getattr(self.model.config, "_name_or_path", ""))) else "hf"

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.layers)

    def view(self, block: Any) -> Any:
        attention = block.attention
        unit = UnitScale(attention.o_proj)
        view = attention_view(attention, attention.o_proj, attention.num_attention_heads, attention.scaling)
        return BlockView(block.layernorm_before, view, unit, block.layernorm_after, block.mlp, unit)

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.model.embeddings(pixel_values, interpolate_pos_encoding=True)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        output = self.model(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return output.last_hidden_state[:, 0]  # after the final layer norm

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        for block in self.model.layers:
            tokens = block(tokens)
        return tokens


class DeiTFamily(ViTFamily):
    """transformers' `DeiTModel` (a distilled DeiT): ViT's blocks, with a distillation token right after
    [CLS], its own token group (`distillation` variants and split share). The readout is the final
    layer norm's [CLS] row (DeiT's classifier averages the [CLS] and distillation heads; the [CLS]
    output is what this tool decomposes, and the [CLS] head is the classifier it keeps)."""

    name = "deit"
    model_types = (DeiTModel,)
    config_type = "deit"
    classifiers: ClassVar[Mapping[str, tuple[type[nn.Module], str, str]]] = {
        "DeiTForImageClassificationWithTeacher": (
            DeiTForImageClassificationWithTeacher,
            "deit",
            "cls_classifier",
        ),
        "DeiTForImageClassification": (DeiTForImageClassification, "deit", "classifier"),
    }
    pos_interpolation = Family.pos_interpolation  # its own resize; DINO's rule is not DeiT's
    processor_type = "DeiTImageProcessor"
    preprocessing = Preprocessing(  # transformers' DeiTImageProcessor
        IMAGENET_MEAN, IMAGENET_STD, resize="square_crop", interpolation="bicubic", resize_ratio=256 / 224
    )

    def architecture(self) -> dict[str, Any]:
        return super().architecture() | {"num_distillation": 1}
