"""Original DINOv2 checkpoints (`dinov2_vit*14[_reg4]_pretrain.pth`) converted to HF models on load;
also DINO v1 and iBOT checkpoints, whose plain ViT (no layer scale, the same `blocks.N.attn.qkv`
layout and position interpolation) is a DINOv2 model with unit layer scale.

The architecture is read off the tensors: width from `cls_token`, depth from `blocks.N`,
patch size from `patch_embed.proj`, registers from `register_tokens`, SwiGLU from `mlp.w12`,
training resolution from `pos_embed`; heads = width / 64 as in every DINOv2 model.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from harness.errors import CheckpointFormatError, first_line, state_dict_problem

TRAINING_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
"""The only non-tensor objects a weights-only load accepts: the command-line arguments DINO's
`main_dino.py` and iBOT's `main_ibot.py` save beside the weights (`args`); anything else stays refused."""

HEAD_DIM = 64
_BLOCK_KEY = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # also the chunked `blocks.<chunk>.<i>.` form
_WRAPPER_PREFIXES = ("module.", "backbone.")
_HEAD_PREFIXES = ("dino_head.", "ibot_head.", "head.")

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
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "mlp.w3.weight": "mlp.down_proj.weight",
    "mlp.w3.bias": "mlp.down_proj.bias",
    "ls2.gamma": "layer_scale2.lambda1",
}


def load_original_checkpoint(
    path: Path, num_heads: int | None = None
) -> Dinov2Model | Dinov2WithRegistersModel:
    """Read an original DINOv2 `.pth` (weights only) and return the equivalent HF model.

    Args:
        path: the checkpoint file, as torch.hub downloads it.
        num_heads: override width / 64 (only for non-standard test models).

    Raises:
        CheckpointFormatError: the file is not a DINOv2 state dict this function understands.
    """
    try:
        with torch.serialization.safe_globals(list(TRAINING_CHECKPOINT_GLOBALS)):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error names the object it refused on its first line
        raise CheckpointFormatError(
            f"cannot read {path} as a weights-only torch checkpoint: {first_line(error)}"
        ) from None
    state = _unwrap(state, path)
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
    try:
        missing, unexpected = model.load_state_dict(converted, strict=False)
    except RuntimeError as error:  # a tensor of another shape than the config inferred
        raise CheckpointFormatError(
            f"{path} does not match a DINOv2 model: {state_dict_problem(error)}"
        ) from None
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{path} does not match a DINOv2 model: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model


def has_layer_scale(state: dict[str, Tensor]) -> bool:
    """DINOv2's blocks scale their branches (`ls1.gamma`); DINO v1's and iBOT's do not."""
    return any(key.endswith(".ls1.gamma") for key in state)


PLAIN_FAMILY = "dino"
"""results.json's family of a checkpoint without layer scale (DINO v1 / iBOT layout)."""


def is_plain(model: Dinov2Model | Dinov2WithRegistersModel) -> bool:
    """Every layer scale is exactly 1: a plain pre-norm ViT (what a DINO v1 / iBOT checkpoint loads as)."""
    gammas = [p for name, p in model.named_parameters() if name.endswith(".lambda1")]
    return all(bool(torch.all(gamma == 1)) for gamma in gammas)


def infer_config(
    state: dict[str, Tensor], num_heads: int | None = None
) -> Dinov2Config | Dinov2WithRegistersConfig:
    """The HF config of the architecture whose original-format weights are `state`."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if key not in state:
            raise CheckpointFormatError(f"not an original DINOv2 checkpoint: no {key!r} tensor")
    hidden_size = state["cls_token"].shape[-1]
    blocks = {int(m.group(1)) for m in map(_BLOCK_KEY.match, state) if m}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointFormatError(f"blocks are not numbered 0..N-1: found {sorted(blocks)[:10]}")
    patch_size = state["patch_embed.proj.weight"].shape[-1]
    num_positions = state["pos_embed"].shape[1] - 1
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise CheckpointFormatError(f"pos_embed holds {num_positions} patch positions, not a square grid")
    swiglu = "blocks.0.mlp.w12.weight" in state or any(k.endswith(".mlp.w12.weight") for k in state)
    heads = num_heads if num_heads is not None else hidden_size // HEAD_DIM
    if heads < 1 or hidden_size % heads:
        raise CheckpointFormatError(f"width {hidden_size} cannot be split into {heads} heads")
    common: dict[str, Any] = dict(
        hidden_size=hidden_size,
        num_hidden_layers=len(blocks),
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


def convert_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename original DINOv2 keys to HF keys; split the fused qkv and SwiGLU w12 projections."""
    converted: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key in _TOP_LEVEL:
            converted[_TOP_LEVEL[key]] = tensor
            continue
        match = _BLOCK_KEY.match(key)
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


def _unwrap(state: object, path: Path) -> dict[str, Tensor]:
    """Accept a bare state dict, or one under "teacher"/"model" with `backbone.`/`module.` prefixes."""
    if isinstance(state, dict):
        for wrapper in ("teacher", "model", "state_dict"):
            if wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointFormatError(f"{path} does not hold a state dict of tensors")
    # training checkpoints carry heads (dino_head, ibot_head) beside the backbone; drop them
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _mlp_ratio(state: dict[str, Tensor], hidden_size: int, swiglu: bool) -> int:
    """MLP width / model width, as HF's config expects it (SwiGLU: before HF's 2/3 rounding)."""
    if not swiglu:
        mlp_width = _first(state, ".mlp.fc1.weight").shape[0]
        if mlp_width % hidden_size:
            raise CheckpointFormatError(
                f"MLP width {mlp_width} is not a whole multiple of width {hidden_size}"
            )
        return mlp_width // hidden_size
    swiglu_width = _first(state, ".mlp.w12.weight").shape[0] // 2
    for ratio in range(1, 17):
        if (int(hidden_size * ratio * 2 / 3) + 7) // 8 * 8 == swiglu_width:
            return ratio
    raise CheckpointFormatError(f"SwiGLU width {swiglu_width} matches no mlp_ratio for width {hidden_size}")


def _first(state: dict[str, Tensor], suffix: str) -> Tensor:
    for key, tensor in state.items():
        if key.endswith(suffix):
            return tensor
    raise CheckpointFormatError(f"no tensor ending in {suffix!r}")
