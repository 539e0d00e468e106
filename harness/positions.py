"""How DINOv2 (and DINO v1) resize their pretrained position grid to other image sizes, by the authors'
own rule (docs/design.md#backbones). DINO v1's `interpolate_pos_encoding` is the rule below for
models without registers; `use_original_interpolation` applies it to a transformers ViT too.

The released DINOv2 models are pretrained on a 37 x 37 patch grid (518 px). For an n_rows x n_cols
grid, the original (torch.hub) implementation resizes it with bicubic interpolation:

- models without registers: at scale factors ((n_rows + 0.1) / 37, (n_cols + 0.1) / 37), no
  antialiasing (its `interpolate_offset=0.1`), so the sampling positions follow the scale factor,
  not the size ratio;
- models with registers: to the exact size (n_rows, n_cols), with antialiasing;

and returns the grid unchanged when the sizes match and the image is square. transformers'
`Dinov2Model` resizes to the exact size without antialiasing, so at 224 px it differs from the
original model without registers (by ~14 % of the [CLS] output's scale, measured on random
weights). `use_original_interpolation` makes an HF model resize as the original does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (
    Dinov2WithRegistersEmbeddings,
)
from transformers.models.vit.modeling_vit import ViTEmbeddings

ORIGINAL_OFFSET = 0.1
"""The hub models' `interpolate_offset` without registers (0 with registers)."""


def original_position_grid(grid: Tensor, rows: int, columns: int, offset: float, antialias: bool) -> Tensor:
    """Resize a (side, side, dim) position grid to (rows, columns, dim) as the original DINOv2 does.

    With `offset` > 0 the grid is resampled at scale factors ((rows + offset) / side,
    (columns + offset) / side), else to the exact size; bicubic either way, in float32.
    """
    side = grid.shape[0]
    if rows == columns == side:
        return grid
    channels_first = grid.float().permute(2, 0, 1).unsqueeze(0)  # 1, dim, side, side
    if offset:
        scale = ((rows + offset) / side, (columns + offset) / side)
        resized = nn.functional.interpolate(
            channels_first, scale_factor=scale, mode="bicubic", antialias=antialias
        )
    else:
        resized = nn.functional.interpolate(
            channels_first, size=(rows, columns), mode="bicubic", antialias=antialias
        )
    if tuple(resized.shape[-2:]) != (rows, columns):
        raise ValueError(
            f"resizing a {side}x{side} grid gave {tuple(resized.shape[-2:])}, not {(rows, columns)}"
        )
    return resized[0].permute(1, 2, 0).to(grid.dtype)


class _OriginalInterpolation:
    """Mixin for HF DINOv2 / ViT embeddings: `interpolate_pos_encoding` with the original resize."""

    position_embeddings: nn.Parameter
    patch_embeddings: Any
    original_offset: float
    original_antialias: bool

    def interpolate_pos_encoding(self, embeddings: Tensor, height: int, width: int) -> Tensor:
        position_embeddings = self.position_embeddings  # 1, 1 + side * side, dim
        dim = position_embeddings.shape[-1]
        side = math.isqrt(position_embeddings.shape[1] - 1)
        patch_height, patch_width = self.patch_embeddings.patch_size
        grid = position_embeddings[0, 1:].reshape(side, side, dim)
        resized = original_position_grid(
            grid, height // patch_height, width // patch_width, self.original_offset, self.original_antialias
        )
        return torch.cat([position_embeddings[:, :1], resized.reshape(1, -1, dim)], dim=1)


class OriginalDinov2Embeddings(_OriginalInterpolation, Dinov2Embeddings):
    """`Dinov2Embeddings` resizing its position grid as the torch.hub models without registers do."""


class OriginalDinov2WithRegistersEmbeddings(_OriginalInterpolation, Dinov2WithRegistersEmbeddings):
    """`Dinov2WithRegistersEmbeddings` resizing its position grid as the torch.hub register models do."""


class OriginalViTEmbeddings(_OriginalInterpolation, ViTEmbeddings):
    """`ViTEmbeddings` resizing its position grid as DINO v1's own code does (the same rule as the
    DINOv2 hub models without registers: offset 0.1, no antialiasing)."""


class DeiTResizeVisionTransformer(VisionTransformer):
    """timm's `VisionTransformer` resizing its position grid as DeiT's own code does for another input
    size (`main.py --input-size`): bicubic to the exact grid, no antialiasing (timm antialiases)."""

    def _pos_embed(self, x: Tensor) -> Tensor:
        if not self.dynamic_img_size or self.pos_embed is None:
            return super()._pos_embed(x)
        batch, rows, columns, width = x.shape
        prefix = [
            token.expand(batch, -1, -1) for token in (self.cls_token, self.reg_token) if token is not None
        ]
        positions = resample_abs_pos_embed(
            self.pos_embed,
            new_size=(rows, columns),
            old_size=self.patch_embed.grid_size,
            num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens,
            antialias=False,
        )
        x = x.view(batch, -1, width)
        if self.no_embed_class:  # DeiT III: the positions cover the patches only
            x = torch.cat([*prefix, x + positions], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + positions
        return self.pos_drop(x)


_ORIGINAL_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    Dinov2Embeddings: OriginalDinov2Embeddings,
    Dinov2WithRegistersEmbeddings: OriginalDinov2WithRegistersEmbeddings,
    ViTEmbeddings: OriginalViTEmbeddings,
}


def resizes_as_original(model: nn.Module) -> bool:
    """Whether `model` resizes its position grid by the authors' rule (`use_original_interpolation`
    was applied to it)."""
    return (
        isinstance(model, DeiTResizeVisionTransformer)
        or type(getattr(model, "embeddings", None)) in _ORIGINAL_CLASSES.values()
    )


def use_original_interpolation(model: nn.Module) -> None:
    """Make an HF DINOv2 (with or without registers) resize its position grid as the torch.hub model
    of the same kind does, an HF ViT as DINO v1's own code does, or a timm ViT as DeiT's does. The
    embeddings module (the timm model) changes class to a module-level subclass, so copy.deepcopy,
    pickle and torch.save carry the choice."""
    if type(model) is VisionTransformer:  # timm (DeiT III): the model itself resizes
        model.__class__ = DeiTResizeVisionTransformer
        return
    embeddings: Any = getattr(model, "embeddings", None)
    original = _ORIGINAL_CLASSES.get(type(embeddings))
    if original is None:
        raise TypeError(f"no original position interpolation for {type(embeddings).__name__}")
    registers = getattr(model.config, "num_register_tokens", 0) > 0
    embeddings.original_offset = 0.0 if registers else ORIGINAL_OFFSET
    embeddings.original_antialias = registers
    embeddings.__class__ = original
