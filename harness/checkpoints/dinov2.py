"""Original DINOv2 checkpoints (`dinov2_vit*14[_reg4]_pretrain.pth`) converted to HF models on load;
also DINO v1 and iBOT checkpoints, whose plain ViT (no layer scale, the same `blocks.N.attn.qkv`
layout and position interpolation) is a DINOv2 model with unit layer scale.

The architecture is read off the tensors: width from `cls_token`, depth from `blocks.N`,
patch size from `patch_embed.proj`, registers from `register_tokens`, SwiGLU from `mlp.w12`,
training resolution from `pos_embed`; heads = width / 64 as in every DINOv2 model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from harness.checkpoints.reading import (
    BLOCK_KEY,
    SHARED_BLOCK_KEYS,
    StateDict,
    block_count,
    first,
    heads_of,
    load_converted,
    require,
)
from harness.errors import CheckpointFormatError

HEAD_DIM = 64

_TOP_LEVEL = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "masked_embed": "embeddings.mask_token",  # iBOT's name
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_IN_BLOCK = {
    **SHARED_BLOCK_KEYS,
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "mlp.w3.weight": "mlp.down_proj.weight",
    "mlp.w3.bias": "mlp.down_proj.bias",
}


def convert(
    state: StateDict, path: Path, num_heads: int | None = None
) -> Dinov2Model | Dinov2WithRegistersModel:
    """The HF model equivalent to an original DINOv2 / DINO v1 / iBOT state dict.

    Args:
        state: the backbone's tensors (`reading.read_state_dict`).
        path: the file they came from (for messages).
        num_heads: override width / 64 (only for non-standard test models).

    Raises:
        CheckpointFormatError: the state dict is not one this function understands.
    """
    config = infer_config(state, num_heads)
    model = (
        Dinov2WithRegistersModel(config)
        if isinstance(config, Dinov2WithRegistersConfig)
        else Dinov2Model(config)
    )
    converted = convert_state_dict(state)
    # the mask token is only used in training; some exports leave it out
    converted.setdefault("embeddings.mask_token", torch.zeros(1, config.hidden_size))
    if not has_layer_scale(state):  # DINO v1 / iBOT: x + attn(norm1(x)), i.e. gamma = 1
        for block in range(config.num_hidden_layers):
            for scale in ("layer_scale1", "layer_scale2"):
                converted[f"encoder.layer.{block}.{scale}.lambda1"] = torch.ones(config.hidden_size)
    load_converted(model, converted, path, "DINOv2")
    return model


def has_layer_scale(state: StateDict) -> bool:
    """DINOv2's blocks scale their branches (`ls1.gamma`); DINO v1's and iBOT's do not."""
    return any(key.endswith(".ls1.gamma") for key in state)


PLAIN_FAMILY = "dino"
"""results.json's family of a checkpoint without layer scale (DINO v1 / iBOT layout)."""


def is_plain(model: nn.Module) -> bool:
    """A DINOv2 model whose every layer scale is exactly 1: a plain pre-norm ViT (what a DINO v1 /
    iBOT checkpoint loads as)."""
    if not isinstance(model, Dinov2Model | Dinov2WithRegistersModel):
        return False
    gammas = [p for name, p in model.named_parameters() if name.endswith(".lambda1")]
    return all(bool(torch.all(gamma == 1)) for gamma in gammas)


def infer_config(state: StateDict, num_heads: int | None = None) -> Dinov2Config | Dinov2WithRegistersConfig:
    """The HF config of the architecture whose original-format weights are `state`."""
    require(state, ("cls_token", "pos_embed", "patch_embed.proj.weight"), "DINOv2")
    hidden_size = state["cls_token"].shape[-1]
    depth = block_count(state)
    patch_size = state["patch_embed.proj.weight"].shape[-1]
    num_positions = state["pos_embed"].shape[1] - 1
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise CheckpointFormatError(
            f"pos_embed holds {num_positions} patch positions, not a square grid after a [CLS] position"
        )
    swiglu = "blocks.0.mlp.w12.weight" in state or any(k.endswith(".mlp.w12.weight") for k in state)
    heads = heads_of(hidden_size, HEAD_DIM, num_heads)
    common: dict[str, Any] = dict(
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        mlp_ratio=_mlp_ratio(state, hidden_size, swiglu),
        patch_size=patch_size,
        image_size=side * patch_size,
        use_swiglu_ffn=swiglu,
        layer_norm_eps=1e-6,
        layerscale_value=1.0,
        attn_implementation="sdpa",
    )
    if "register_tokens" in state:
        return Dinov2WithRegistersConfig(num_register_tokens=state["register_tokens"].shape[1], **common)
    return Dinov2Config(**common)


def convert_state_dict(state: StateDict) -> StateDict:
    """Rename original DINOv2 keys to HF keys; split the fused qkv and SwiGLU w12 projections."""
    converted: StateDict = {}
    for key, tensor in state.items():
        if key in _TOP_LEVEL:
            converted[_TOP_LEVEL[key]] = tensor
            continue
        match = BLOCK_KEY.match(key)
        if not match:
            raise CheckpointFormatError(f"unexpected tensor {key!r} in a DINOv2 checkpoint")
        prefix, name = f"encoder.layer.{match.group(1)}.", match.group(2)
        if name in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = name.rsplit(".", 1)[1]
            for projection, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                converted[f"{prefix}attention.{projection}.{kind}"] = part
        elif name in ("mlp.w12.weight", "mlp.w12.bias"):
            kind = name.rsplit(".", 1)[1]
            gate, up = tensor.chunk(2, dim=0)  # dinov2: x1, x2 = w12(x).chunk(2); silu(x1) * x2
            converted[f"{prefix}mlp.gate_proj.{kind}"] = gate
            converted[f"{prefix}mlp.up_proj.{kind}"] = up
        elif name in _IN_BLOCK:
            converted[prefix + _IN_BLOCK[name]] = tensor
        else:
            raise CheckpointFormatError(f"unexpected tensor {key!r} in a DINOv2 checkpoint")
    return converted


def _mlp_ratio(state: StateDict, hidden_size: int, swiglu: bool) -> int:
    """MLP width / model width, as HF's config expects it (SwiGLU: before HF's 2/3 rounding)."""
    if not swiglu:
        mlp_width = first(state, ".mlp.fc1.weight").shape[0]
        if mlp_width % hidden_size:
            raise CheckpointFormatError(
                f"MLP width {mlp_width} is not a whole multiple of width {hidden_size}"
            )
        return mlp_width // hidden_size
    swiglu_width = first(state, ".mlp.w12.weight").shape[0] // 2
    for ratio in range(1, 17):
        if (int(hidden_size * ratio * 2 / 3) + 7) // 8 * 8 == swiglu_width:
            return ratio
    raise CheckpointFormatError(f"SwiGLU width {swiglu_width} matches no mlp_ratio for width {hidden_size}")
