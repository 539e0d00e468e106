"""CLIP's vision tower (and its projection), as transformers holds it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import (
    CLIPModel,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    PretrainedConfig,
)

from common.preparation import Preprocessing
from harness.families.base import ImageTowerFamily, LoadAs, clip_layer_view
from harness.tokens import TokenLayout


class CLIPFamily(ImageTowerFamily):
    """transformers' CLIP image tower (`CLIPVisionModel`, or `CLIPVisionModelWithProjection`, which
    also holds `visual_projection`): `pre_layrnorm` on the embeddings (the sequence entering the
    first block is after it), no layer scale, no registers; the readout is `post_layernorm` of the
    [CLS] row (the pooled output), and with the projection a third readout, `projection/{variant}`
    (the image embedding CLIP compares with text)."""

    name = "clip"
    embeddings_normalise = True  # `embeddings` is its pre-norm
    model_types = (CLIPVisionModel, CLIPVisionModelWithProjection, CLIPModel)  # a whole CLIP: its tower
    processor_type = "CLIPImageProcessor"
    preprocessing = Preprocessing(  # transformers' CLIPImageProcessor
        mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
        resize="shorter_crop", interpolation="bicubic", resize_ratio=1.0,
    )  # fmt: skip
    short_names: ClassVar[Mapping[str, str]] = {  # OpenAI's image towers
        "clip_vitb32": "openai/clip-vit-base-patch32",
        "clip_vitb16": "openai/clip-vit-base-patch16",
        "clip_vitl14": "openai/clip-vit-large-patch14",
        "clip_vitl14_336": "openai/clip-vit-large-patch14-336",
    }

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        """A whole CLIP (`CLIPModel`) as its image tower with the whole model's projection; a tower
        with its projection as it is."""
        architecture = (getattr(config, "architectures", None) or [""])[0]
        if architecture == "CLIPModel":
            tower = config.vision_config
            tower.projection_dim = config.projection_dim
            text = ("text_model.", "text_projection.", "logit_scale")  # the text tower: not loaded
            return LoadAs(CLIPVisionModelWithProjection, {"config": tower}, left_out=text)
        if architecture == "CLIPVisionModelWithProjection":
            return LoadAs(CLIPVisionModelWithProjection)
        return None

    def view(self, block: Any) -> Any:
        return clip_layer_view(block)

    @property
    def embeddings(self) -> nn.Module:
        return self.tower.pre_layrnorm

    @property
    def final_norm(self) -> nn.Module:
        return self.tower.post_layernorm

    @property
    def projection(self) -> nn.Module | None:
        return getattr(self.model, "visual_projection", None)

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.tower.pre_layrnorm(self.tower.embeddings(pixel_values, interpolate_pos_encoding=True))

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.tower(pixel_values=pixel_values, interpolate_pos_encoding=True).pooler_output

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.tower.encoder(tokens).last_hidden_state
