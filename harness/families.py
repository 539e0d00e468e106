"""One small adapter per ViT family: where its blocks, embeddings, final norm and [CLS] readout are,
and a view of each block under the names the decomposition reads (docs/design.md#backbones).

A block view exposes `norm1`, `attention.{q_proj, k_proj, v_proj, o_proj, num_attention_heads,
head_dim, scaling}`, `layer_scale1` / `layer_scale2` (with `lambda1`), `norm2` and `mlp`, each the
family's own module where it has one (so hooks on the view's projections fire in the model's own
pass); families without layer scale get a unit scale.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import CLIPVisionModel, Dinov2Model, Dinov2WithRegistersModel, ViTModel


class UnitScale(nn.Module):
    """Layer scale of a family without one: gamma = 1 (no parameters: runs in its input's dtype)."""

    def __init__(self, like: nn.Linear) -> None:
        super().__init__()
        self._like = [like]  # a reference, not a child: its size, device and dtype

    @property
    def lambda1(self) -> Tensor:
        weight = self._like[0].weight
        return torch.ones(weight.shape[0], device=weight.device, dtype=weight.dtype)

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs


class Family(ABC):
    """How one family's HF model maps onto the decomposition.

    Attributes:
        name: the family's name (results.json `backbone.family`).
        model: the HF model.
    """

    name: ClassVar[str]
    model_types: ClassVar[tuple[type[nn.Module], ...]]
    preprocessing: ClassVar[dict[str, Any]]
    """The family's default image preparation (`BackboneInfo.image_mean` ... `interpolation`),
    where a checkpoint has no processor config of its own."""

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model  # an HF model of one of `model_types`

    @property
    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """The blocks the model runs, in order (forward hooks go on these)."""

    @abstractmethod
    def view(self, block: nn.Module) -> Any:
        """`block` under the decomposition's names (see the module docstring)."""

    @property
    def embeddings(self) -> nn.Module:
        """The module whose output is the token sequence entering the first block (transformers'
        `embeddings` unless a family says otherwise)."""
        return self.model.embeddings

    @property
    def final_norm(self) -> nn.Module:
        """The norm after the last block, whose [CLS] row is the pooled output (transformers'
        `layernorm` unless a family says otherwise)."""
        return self.model.layernorm

    @abstractmethod
    def embed(self, pixel_values: Tensor) -> Tensor:
        """The token sequence entering the first block (batch, tokens, hidden)."""

    @abstractmethod
    def pooled(self, pixel_values: Tensor) -> Tensor:
        """The model's own forward pass; its pooled [CLS] output (batch, hidden)."""

    @abstractmethod
    def encode(self, tokens: Tensor) -> Tensor:
        """Every block on a token sequence: the last block's output, before the final norm."""


class Dinov2Family(Family):
    """HF `Dinov2Model` / `Dinov2WithRegistersModel`: its blocks already carry the names."""

    name = "dinov2"
    model_types = (Dinov2Model, Dinov2WithRegistersModel)
    preprocessing: ClassVar[dict[str, Any]] = {
        "image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225),
        "resize": "shorter_crop", "interpolation": "bicubic", "resize_ratio": 256 / 224,
    }  # fmt: skip

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.encoder.layer)

    def view(self, block: nn.Module) -> Any:
        return block

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.model.embeddings(pixel_values)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    def encode(self, tokens: Tensor) -> Tensor:
        return self.model.encoder(tokens).last_hidden_state


class _ViTBlockView:
    """A transformers `ViTLayer` (q_proj ... o_proj attention, `mlp`) without layer scale."""

    def __init__(self, block: Any) -> None:
        self.norm1, self.norm2 = block.layernorm_before, block.layernorm_after
        self.attention, self.mlp = block.attention, block.mlp
        self.layer_scale1 = self.layer_scale2 = UnitScale(block.attention.o_proj)


class ViTFamily(Family):
    """transformers' `ViTModel` (ViT, DINO v1 in transformers' layout): no layer scale, no registers;
    the [CLS] readout is the final layer norm's [CLS] row (not ViT's dense + tanh pooler)."""

    name = "vit"
    model_types = (ViTModel,)
    preprocessing: ClassVar[dict[str, Any]] = {  # transformers' ViTImageProcessor
        "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5),
        "resize": "square", "interpolation": "bilinear", "resize_ratio": 1.0,
    }  # fmt: skip

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.layers)

    def view(self, block: nn.Module) -> Any:
        return _ViTBlockView(block)

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.model.embeddings(pixel_values, interpolate_pos_encoding=True)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        output = self.model(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return output.last_hidden_state[:, 0]  # after the final layer norm

    def encode(self, tokens: Tensor) -> Tensor:
        for block in self.model.layers:
            tokens = block(tokens)
        return tokens


class _CLIPAttentionView:
    """transformers' `CLIPAttention` under the decomposition's names (`out_proj` -> `o_proj`, ...)."""

    def __init__(self, attention: Any) -> None:
        self.q_proj, self.k_proj, self.v_proj = attention.q_proj, attention.k_proj, attention.v_proj
        self.o_proj = attention.out_proj
        self.num_attention_heads, self.head_dim = attention.num_heads, attention.head_dim
        self.scaling = attention.scale


class _CLIPBlockView:
    """A transformers `CLIPEncoderLayer`: no layer scale."""

    def __init__(self, block: Any) -> None:
        self.norm1, self.norm2, self.mlp = block.layer_norm1, block.layer_norm2, block.mlp
        self.attention = _CLIPAttentionView(block.self_attn)
        self.layer_scale1 = self.layer_scale2 = UnitScale(block.self_attn.out_proj)


class CLIPFamily(Family):
    """transformers' `CLIPVisionModel` (the CLIP image tower): `pre_layrnorm` on the embeddings (the
    sequence entering the first block is after it), no layer scale, no registers; the readout is
    `post_layernorm` of the [CLS] row (the pooled output; the projection to the joint space,
    `visual_projection`, is not applied)."""

    name = "clip"
    model_types = (CLIPVisionModel,)
    preprocessing: ClassVar[dict[str, Any]] = {  # transformers' CLIPImageProcessor
        "image_mean": (0.48145466, 0.4578275, 0.40821073), "image_std": (0.26862954, 0.26130258, 0.27577711),
        "resize": "shorter_crop", "interpolation": "bicubic", "resize_ratio": 1.0,
    }  # fmt: skip

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.encoder.layers)

    def view(self, block: nn.Module) -> Any:
        return _CLIPBlockView(block)

    @property
    def embeddings(self) -> nn.Module:
        return self.model.pre_layrnorm

    @property
    def final_norm(self) -> nn.Module:
        return self.model.post_layernorm

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.model.pre_layrnorm(self.model.embeddings(pixel_values, interpolate_pos_encoding=True))

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values, interpolate_pos_encoding=True).pooler_output

    def encode(self, tokens: Tensor) -> Tensor:
        return self.model.encoder(tokens).last_hidden_state


FAMILIES: tuple[type[Family], ...] = (Dinov2Family, ViTFamily, CLIPFamily)


def family_for(model: nn.Module) -> Family:
    """The adapter of `model`'s family.

    Raises:
        ValueError: no adapter knows the model (the message names the supported families).
    """
    for family in FAMILIES:
        if isinstance(model, family.model_types):
            return family(model)
    supported = ", ".join(t.__name__ for family in FAMILIES for t in family.model_types)
    raise ValueError(f"{type(model).__name__} is not a supported ViT ({supported})")
