"""DINOv3 (rotary positions, registers), as transformers holds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import (
    DINOv3ViTModel,
)

from common.preparation import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from harness.families.base import BlockView, Family, attention_view
from harness.tokens import TokenLayout


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class Dinov3Family(Family):
    """transformers' `DINOv3ViTModel`: [CLS], registers, patches; layer scale; RoPE on the patch
    queries and keys only ([CLS] and registers unrotated), so the [CLS] query is the projection and
    the keys enter its softmax rotated, exactly as the model rotates them (`attention_keys`); values
    are never rotated. The readout is the final norm's [CLS] row (the pooled output)."""

    name = "dinov3"
    model_types = (DINOv3ViTModel,)
    processor_type = "DINOv3ViTImageProcessor"
    preprocessing = Preprocessing(  # transformers' DINOv3ViTImageProcessorFast
        IMAGENET_MEAN, IMAGENET_STD, resize="square", interpolation="bilinear", resize_ratio=1.0
    )
    short_names: ClassVar[Mapping[str, str]] = {  # torch.hub's names
        **{
            f"dinov3_{size}": f"facebook/dinov3-{size}-pretrain-lvd1689m"
            for size in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16")
        },
        "dinov3_vitl16_sat": "facebook/dinov3-vitl16-pretrain-sat493m",
        "dinov3_vit7b16_sat": "facebook/dinov3-vit7b16-pretrain-sat493m",
    }

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.model.layer)

    def view(self, block: Any) -> Any:
        attention = block.attention
        view = attention_view(attention, attention.o_proj, attention.num_heads, attention.scaling)
        return BlockView(block.norm1, view, block.layer_scale1, block.norm2, block.mlp, block.layer_scale2)

    @property
    def final_norm(self) -> nn.Module:
        return self.model.norm

    def embed(self, pixel_values: Tensor) -> Tensor:
        weight = self.model.embeddings.patch_embeddings.weight
        return self.model.embeddings(pixel_values.to(weight.dtype))

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    def rope(self, layout: TokenLayout, device: torch.device) -> tuple[Tensor, Tensor]:
        """The model's own (cos, sin) for `layout`'s patch grid, (patches, head_dim) each, in the
        weights' dtype (its RoPE module reads only the image's size, device and dtype)."""
        dtype = self.model.embeddings.patch_embeddings.weight.dtype
        patch = self.model.config.patch_size
        size = (1, 3, layout.grid_height * patch, layout.grid_width * patch)
        return self.model.rope_embeddings(torch.zeros((), device=device, dtype=dtype).expand(size))

    def attention_keys(self, keys: Tensor, layout: TokenLayout) -> Tensor:
        return self._rotated(keys, layout)

    def attention_queries(self, queries: Tensor, layout: TokenLayout) -> Tensor:
        return self._rotated(queries, layout)

    def _rotated(self, projections: Tensor, layout: TokenLayout) -> Tensor:
        """Query or key projections with the patches' rotated by the model's own (cos, sin) for
        `layout` ([CLS] and registers unrotated), float32."""
        cos, sin = (part.float() for part in self.rope(layout, projections.device))
        batch, tokens, hidden = projections.shape
        per_head = projections.float().view(
            batch, tokens, -1, cos.shape[-1]
        )  # batch, tokens, heads, head_dim
        prefix, patches = per_head.split((tokens - cos.shape[0], cos.shape[0]), dim=1)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # patches, 1, head_dim
        rotated = patches * cos + _rotate_half(patches) * sin
        return torch.cat((prefix, rotated), dim=1).view(batch, tokens, hidden)

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        cos, sin = self.rope(layout, tokens.device)
        if patches is not None:  # each row's own patches: (batch, 1, kept, head_dim) against its heads
            cos, sin = cos[patches].unsqueeze(1), sin[patches].unsqueeze(1)
        return self.model.model(tokens, position_embeddings=(cos, sin)).last_hidden_state
