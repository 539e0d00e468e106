"""Original DINOv3 checkpoints (`dinov3_vit*16*_pretrain_*.pth`, the layout of the DINOv3
repository's `DinoVisionTransformer`) converted to transformers' `DINOv3ViTModel` on load.

The original holds: `storage_tokens` (the registers), `rope_embed.periods` (the RoPE periods, one per
quarter of a head: they give the head width, and their base), a fused `attn.qkv` whose key bias is
masked by `attn.qkv.bias_mask`, `mlp.fc1/fc2` or SwiGLU's `mlp.w1/w2/w3`, layer scale `ls1/ls2.gamma`.
The masked bias is applied here (transformers' model then has no key bias); a key bias the mask keeps
becomes transformers' `key_bias`. LayerNorm eps 1e-5 (the released models' `layernormbf16`); a
`cls_norm` of its own (`untie_cls_and_patch_norms`) has no place in transformers' model and is
refused; `local_cls_norm` (used for training's local crops only) is dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor
from transformers import DINOv3ViTConfig, DINOv3ViTModel

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

log = logging.getLogger(__name__)

LAYOUT = "DINOv3"
_TOP_LEVEL = {
    "cls_token": "embeddings.cls_token",
    "storage_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_IN_BLOCK = {
    **SHARED_BLOCK_KEYS,
    "mlp.fc1.weight": "mlp.up_proj.weight",
    "mlp.fc1.bias": "mlp.up_proj.bias",
    "mlp.fc2.weight": "mlp.down_proj.weight",
    "mlp.fc2.bias": "mlp.down_proj.bias",
    "mlp.w1.weight": "mlp.gate_proj.weight",  # silu(w1 x) * w2 x, then w3
    "mlp.w1.bias": "mlp.gate_proj.bias",
    "mlp.w2.weight": "mlp.up_proj.weight",
    "mlp.w2.bias": "mlp.up_proj.bias",
    "mlp.w3.weight": "mlp.down_proj.weight",
    "mlp.w3.bias": "mlp.down_proj.bias",
}
_TRAINING_ONLY = ("local_cls_norm.",)


def recognises(state: StateDict) -> bool:
    """DINOv3's own names: the registers as `storage_tokens`, the RoPE periods as a tensor."""
    return "rope_embed.periods" in state or "storage_tokens" in state


def convert(state: StateDict, path: Path, num_heads: int | None = None) -> DINOv3ViTModel:
    """transformers' DINOv3 holding the weights of an original DINOv3 state dict.

    Args:
        state: the backbone's tensors (`reading.read_state_dict`).
        path: the file they came from (for messages).
        num_heads: unused: the RoPE periods give the head width (kept for one signature).

    Raises:
        CheckpointFormatError: the state dict does not fit transformers' DINOv3.
    """
    require(state, ("cls_token", "rope_embed.periods", "patch_embed.proj.weight"), LAYOUT)
    if any(key.startswith("cls_norm.") for key in state):
        raise CheckpointFormatError(
            f"{path}: its [CLS] has a norm of its own (cls_norm), which transformers' DINOv3 has not; "
            "convert it with the DINOv3 repository or load the model's HF checkpoint"
        )
    dropped = [key for key in state if key.startswith(_TRAINING_ONLY)]
    if dropped:
        log.info("%s: left out %s (training's local crops only)", path, ", ".join(dropped))
    state = {key: value for key, value in state.items() if key not in dropped}
    config = infer_config(state, path, num_heads)
    model = DINOv3ViTModel(config)
    periods = state["rope_embed.periods"].double()
    if not torch.allclose(1 / model.rope_embeddings.inv_freq.double(), periods, rtol=1e-5, atol=0):
        raise CheckpointFormatError(
            f"{path}: its RoPE periods are not base {config.rope_theta:g} ** (2i / (head width / 2)), "
            "the only form transformers' DINOv3 has (min/max periods?)"
        )
    load_converted(model, convert_state_dict(state, config), path, LAYOUT)
    return model


def infer_config(state: StateDict, path: Path, num_heads: int | None = None) -> DINOv3ViTConfig:
    """The transformers config of the architecture whose original weights are `state`."""
    width = state["cls_token"].shape[-1]
    periods = state["rope_embed.periods"].double()
    head_width = 4 * periods.numel()  # one period per quarter of a head
    gated = any(key.endswith(".mlp.w1.weight") for key in state)
    mlp = first(state, ".mlp.w1.weight" if gated else ".mlp.fc1.weight")
    key_bias = _key_bias(state) is not None
    return DINOv3ViTConfig(
        hidden_size=width,
        num_hidden_layers=block_count(state),
        num_attention_heads=heads_of(width, head_width, num_heads),
        intermediate_size=mlp.shape[0],
        patch_size=state["patch_embed.proj.weight"].shape[-1],
        num_register_tokens=state["storage_tokens"].shape[1] if "storage_tokens" in state else 0,
        rope_theta=_rope_base(periods, head_width),
        layer_norm_eps=1e-5,
        layerscale_value=1.0,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
        query_bias=_has(state, ".attn.qkv.bias"),
        key_bias=key_bias,
        value_bias=_has(state, ".attn.qkv.bias"),
        proj_bias=_has(state, ".attn.proj.bias"),
        mlp_bias=_has(state, ".mlp.w1.bias" if gated else ".mlp.fc1.bias"),
    )


def convert_state_dict(state: StateDict, config: DINOv3ViTConfig) -> StateDict:
    """Rename original DINOv3 keys to transformers' keys; split the fused qkv, its bias masked."""
    width = config.hidden_size
    converted: StateDict = {
        # the mask token is only used in training; some exports leave it out
        "embeddings.mask_token": state.get("mask_token", torch.zeros(width)).reshape(1, 1, width),
    }
    for key, tensor in state.items():
        if key in _TOP_LEVEL:
            converted[_TOP_LEVEL[key]] = tensor
            continue
        if key in ("mask_token", "rope_embed.periods"):
            continue
        match = BLOCK_KEY.match(key)
        if not match:
            raise CheckpointFormatError(f"unexpected tensor {key!r} in a DINOv3 checkpoint")
        prefix, name = f"model.layer.{match.group(1)}.", match.group(2)
        if name == "attn.qkv.weight":
            for projection, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3), strict=True):
                converted[f"{prefix}attention.{projection}.weight"] = part
        elif name == "attn.qkv.bias":
            query, key_part, value = _masked_bias(state, f"blocks.{match.group(1)}.attn.qkv").chunk(3)
            converted[f"{prefix}attention.q_proj.bias"] = query
            converted[f"{prefix}attention.v_proj.bias"] = value
            if config.key_bias:
                converted[f"{prefix}attention.k_proj.bias"] = key_part
        elif name == "attn.qkv.bias_mask":
            continue  # applied with the bias
        elif name in _IN_BLOCK:
            converted[prefix + _IN_BLOCK[name]] = tensor
        else:
            raise CheckpointFormatError(f"unexpected tensor {key!r} in a DINOv3 checkpoint")
    if not any(key.endswith(".ls1.gamma") for key in state):
        for block in range(config.num_hidden_layers):  # no layer scale: x + attn(norm1(x))
            for scale in ("layer_scale1", "layer_scale2"):
                converted[f"model.layer.{block}.{scale}.lambda1"] = torch.ones(width)
    return converted


def _masked_bias(state: StateDict, qkv: str) -> Tensor:
    """The qkv bias as the model adds it: times its mask where the layout masks the key bias."""
    bias = state[f"{qkv}.bias"]
    mask = state.get(f"{qkv}.bias_mask")
    if mask is None:
        return bias
    if not torch.isfinite(mask).all():
        raise CheckpointFormatError(
            f"{qkv}.bias_mask holds NaN: the mask was never set (an untrained model?)"
        )
    return bias * mask.to(bias.dtype)


def _key_bias(state: StateDict) -> Tensor | None:
    """The key bias any block adds after its mask; None when every block's is zero (or absent)."""
    for key in state:
        if key.endswith(".attn.qkv.bias"):
            key_part = _masked_bias(state, key.removesuffix(".bias")).chunk(3)[1]
            if key_part.any():
                return key_part
    return None


def _has(state: StateDict, suffix: str) -> bool:
    return any(key.endswith(suffix) for key in state)


def _rope_base(periods: Tensor, head_width: int) -> float:
    """The base of periods = base ** (2i / (head_width / 2)), read off the second period (100, DINOv3's,
    when there is only one); `convert` checks every period against it."""
    if periods.numel() < 2:
        return 100.0
    return float(periods[1] ** (head_width / 4))
