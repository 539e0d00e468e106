"""AIMv2's image tower, as transformers holds it: no [CLS] token, pooled by an attention head with no
query projection and no MLP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import Aimv2Model, Aimv2VisionModel

from common.preparation import Preprocessing
from harness.families.base import (
    AttentionView,
    BlockView,
    ImageTowerFamily,
    NoMLP,
    PoolView,
    UnitScale,
    attention_view,
)
from harness.tokens import TokenLayout


class Aimv2Family(ImageTowerFamily):
    """transformers' AIMv2 image tower (`Aimv2VisionModel`, or the whole `Aimv2Model`, whose
    `vision_model` and `visual_projection` it reads): patches only, pre-norm blocks with RMSNorm and a
    SwiGLU MLP, no layer scale, `rms_norm` on every token; the pooled output is the attention-pooling
    head (`head`: its learned `cls_token` is the query itself, no MLP, `output_proj` after the
    attention). A "map" readout; with the whole model a third readout `projection/{variant}`.
    Positions: a learned table of the training size (other sizes refused), or, for the native
    checkpoints (`is_native`), 2-D sine-cosine positions at any size."""

    name = "aimv2"
    readout = "map"
    model_types = (Aimv2VisionModel, Aimv2Model)  # a whole AIMv2: its image tower and projection
    processor_type = "CLIPImageProcessor"
    preprocessing = Preprocessing(  # AIMv2's processor: CLIP's
        mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
        resize="shorter_crop", interpolation="bicubic", resize_ratio=1.0,
    )  # fmt: skip
    own_pos_interpolation = "fixed"
    short_names: ClassVar[Mapping[str, str]] = {  # Apple's AIMv2 image towers with their pooling head
        "aimv2_vitl14_224": "apple/aimv2-large-patch14-224",
        "aimv2_vitl14_224_lit": "apple/aimv2-large-patch14-224-lit",
    }

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if not getattr(self.tower, "use_head", False):
            raise ValueError(
                f"{type(model).__name__} (no attention-pooling head: use_head is off) is not a supported ViT"
            )

    def architecture(self) -> dict[str, Any]:
        return super().architecture() | {"num_cls": 0, "swiglu": True}

    def fixed_resolution(self) -> int | None:
        """The training size for a learned position table; any size for sine-cosine positions."""
        if self.config.is_native:
            return None
        size = self.config.image_size
        return int(size[0] if isinstance(size, Sequence) else size)

    def view(self, block: Any) -> Any:
        attention = block.attention
        unit = UnitScale(attention.out_proj)
        view = attention_view(attention, attention.out_proj, attention.num_heads, attention.scale)
        return BlockView(block.rms_norm1, view, unit, block.rms_norm2, block.ffn, unit)

    def pool_view(self) -> PoolView:
        head = self.tower.head
        width = head.hidden_size // head.num_heads
        view = AttentionView(nn.Identity(), head.k_proj, head.v_proj, head.output_proj, head.num_heads, width,
                             width**-0.5)  # fmt: skip
        return PoolView(head, head.cls_token.reshape(-1), view, nn.Identity(), NoMLP(), nn.Identity())

    @property
    def embeddings(self) -> nn.Module:
        return self.tower.embeddings

    @property
    def final_norm(self) -> nn.Module:
        return self.tower.rms_norm

    @property
    def projection(self) -> nn.Module | None:
        return getattr(self.model, "visual_projection", None)

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.tower.embeddings(pixel_values)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.tower(pixel_values=pixel_values).pooler_output

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.tower.encoder(inputs_embeds=tokens).last_hidden_state
