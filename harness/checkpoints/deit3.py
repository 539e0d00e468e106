"""Original DeiT III checkpoints (`deit_3_*_{224,384}_{1k,21k}.pth`, `{'model': ...}` in the layout of
the DeiT repository's `models_v2.vit_models`) loaded into timm's DeiT III, whose blocks are the same
computation: [CLS] without a position, `pos_embed` over the patch grid only, layer scale as
`blocks.N.gamma_1` / `gamma_2` (timm's `ls1.gamma` / `ls2.gamma`), LayerNorm eps 1e-6.

The architecture is read off the tensors (width from `cls_token`, depth from `blocks.N`, patch size
from `patch_embed.proj`, the training grid from `pos_embed`, the MLP width from `fc1`); heads as the
released sizes have them (head width 64, but 80 for ViT-H). A classifier the file holds (`head`) is
kept as the model's own (timm's `head`, on the pre-logits output the tool reads: `--head model`).
timm's own checkpoint filter renames the layer scales.
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from harness.checkpoints.reading import StateDict, block_count, first, heads_of, load_converted, require
from harness.errors import CheckpointFormatError

LAYOUT = "DeiT III"
_SIZES = {192: "tiny", 384: "small", 512: "medium", 768: "base", 1024: "large", 1280: "huge"}
_HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16}
EVAL_CROP_RATIO = 1.0
"""The crop of DeiT III's evaluation (its README: `--eval-crop-ratio 1.0`), for these files' preparation."""


def recognises(state: StateDict) -> bool:
    """models_v2's layer scale: `blocks.N.gamma_1` (DINOv2's is `ls1.gamma`, DINO v1 has none)."""
    return any(key.endswith(".gamma_1") for key in state)


def convert(
    state: StateDict, path: Path, num_heads: int | None = None, classifier: StateDict | None = None
) -> VisionTransformer:
    """timm's DeiT III holding the weights of an original DeiT III state dict.

    Args:
        state: the backbone's tensors (`reading.read_state_dict`).
        path: the file they came from (for messages).
        num_heads: override the released sizes' heads (only for non-standard test models).
        classifier: its classifier (`head.weight`, `head.bias`), where the file holds one.

    Raises:
        CheckpointFormatError: the state dict does not fit a DeiT III model.
    """
    require(state, ("cls_token", "pos_embed", "patch_embed.proj.weight"), LAYOUT)
    width = state["cls_token"].shape[-1]
    patch_size = state["patch_embed.proj.weight"].shape[-1]
    positions = state["pos_embed"].shape[1]
    side = math.isqrt(positions)
    if side * side != positions:
        raise CheckpointFormatError(
            f"{path}: pos_embed holds {positions} positions, not a square grid of patches (DeiT III)"
        )
    mlp_width = first(state, ".mlp.fc1.weight").shape[0]
    heads = heads_of(width, 64, num_heads if num_heads is not None else _HEADS.get(width))
    model = timm.create_model(
        _architecture(width, patch_size, side * patch_size),
        pretrained=False,
        num_classes=classifier["head.weight"].shape[0] if classifier else 0,
        dynamic_img_size=True,  # any image size, as every timm model this tool loads
        img_size=side * patch_size,
        patch_size=patch_size,
        embed_dim=width,
        depth=block_count(state),
        num_heads=heads,
        mlp_ratio=mlp_width / width,
        pretrained_cfg_overlay={"crop_pct": EVAL_CROP_RATIO},
    )
    assert isinstance(model, VisionTransformer)  # every deit3_* architecture is one
    converted = checkpoint_filter_fn({**state, **(classifier or {})}, model, adapt_layer_scale=True)
    load_converted(model, converted, path, LAYOUT)
    return model


def _architecture(width: int, patch_size: int, resolution: int) -> str:
    """timm's name of the released DeiT III of this width, patch and resolution (its pretrained
    config: DeiT III's normalisation and resize); the base model's for another shape."""
    name = f"deit3_{_SIZES.get(width, 'base')}_patch{patch_size}_{resolution}"
    if timm.is_model(name):
        return name
    name = f"deit3_{_SIZES.get(width, 'base')}_patch{patch_size}_224"
    return name if timm.is_model(name) else "deit3_base_patch16_224"
