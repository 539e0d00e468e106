"""SigLIP's image tower, as transformers holds it: no [CLS] token, pooled by an attention head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import PretrainedConfig, SiglipModel, SiglipVisionModel

from common.preparation import Preprocessing
from harness.families.base import ImageTowerFamily, LoadAs, PoolView, clip_layer_view, multihead_view
from harness.tokens import TokenLayout


class SiglipFamily(ImageTowerFamily):
    """transformers' SigLIP image tower (`SiglipVisionModel`, or the whole `SiglipModel`, whose
    `vision_model` it reads): patches only (no [CLS] token, no registers), pre-norm blocks without
    layer scale, `post_layernorm` on every token; the pooled output is the attention-pooling head
    (`head`: a learned probe attends over the normed tokens through torch's `nn.MultiheadAttention`,
    then v + MLP(LayerNorm(v))), the image embedding SigLIP compares with text (no projection after
    it). The decomposition reads the head (`PoolView`): a "map" readout, no skip. Positions are
    resized as transformers does it (`interpolate_pos_encoding`)."""

    name = "siglip"
    readout = "map"
    model_types = (SiglipVisionModel, SiglipModel)  # a whole SigLIP: its image tower
    processor_type = "SiglipImageProcessor"
    preprocessing = Preprocessing(  # transformers' SiglipImageProcessor: a square, no crop, mean = std = 0.5
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="square", interpolation="bicubic", resize_ratio=1.0
    )
    short_names: ClassVar[Mapping[str, str]] = {  # Google's SigLIP image towers
        "siglip_vitb16": "google/siglip-base-patch16-224",
        "siglip_vitl16_384": "google/siglip-large-patch16-384",
        "siglip_so400m14": "google/siglip-so400m-patch14-384",
    }

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if not getattr(self.tower, "use_head", False):
            raise ValueError(
                f"{type(model).__name__} (no attention-pooling head: vision_use_head is off) is not a "
                "supported ViT"
            )

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        """A whole SigLIP (`SiglipModel`) as its image tower; the text tower is not loaded."""
        architecture = (getattr(config, "architectures", None) or [""])[0]
        if architecture == "SiglipModel":
            text = ("text_model.", "logit_scale", "logit_bias")
            return LoadAs(SiglipVisionModel, {"config": config.vision_config}, left_out=text)
        return None

    def architecture(self) -> dict[str, Any]:
        return super().architecture() | {"num_cls": 0}

    def view(self, block: Any) -> Any:
        return clip_layer_view(block)

    def pool_view(self) -> PoolView:
        head = self.tower.head
        return PoolView(
            head,
            head.probe.reshape(-1),
            multihead_view(head.attention),
            head.layernorm,
            head.mlp,
            nn.Identity(),
        )

    @property
    def final_norm(self) -> nn.Module:
        return self.tower.post_layernorm

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.tower.embeddings(pixel_values, interpolate_pos_encoding=True)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.tower(pixel_values=pixel_values, interpolate_pos_encoding=True).pooler_output

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.tower.encoder(inputs_embeds=tokens).last_hidden_state
