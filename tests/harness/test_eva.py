"""timm's `Eva` (EVA-02, Perception Encoder core): RoPE on the patches, read from [CLS] or by an
attention pool; each block's [CLS] attention checked against the model's own softmax."""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch
from torch import nn
from torch.testing import assert_close

from harness import DecomposingBackbone, with_test_time_registers
from harness.decomposition import DEPTH_PREFIX
from harness.extras import Depth
from tests.conftest import scaled
from tests.families import perturbed
from tests.harness.pools import own_cls_rows, pool_reference


def tiny_eva(name: str = "eva02_tiny_patch14_224", **options: Any) -> nn.Module:
    """A seeded random timm `Eva` (32 px, patch 8, 2 blocks of width 32, 4 heads) whose biases,
    tokens and layer scales are off their init (`tests.families.perturbed`)."""
    torch.manual_seed(0)
    settings = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0,
                    dynamic_img_size=True) | options  # fmt: skip
    return perturbed(timm.create_model(name, pretrained=False, **settings), seed=0)


MODELS = {
    "eva02": lambda: tiny_eva(global_pool="token"),
    "eva02_registers_layer_scale": lambda: tiny_eva(global_pool="token", num_reg_tokens=2, init_values=0.5),
    "eva02_map": lambda: tiny_eva(global_pool="map"),
    "pe_core": lambda: tiny_eva("vit_pe_core_tiny_patch16_384"),
}


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("side", [32, 48])
@torch.no_grad()
def test_eva_decomposes_exactly_and_every_blocks_split_is_its_own_attention(family: str, side: int) -> None:
    model = MODELS[family]()
    backbone = DecomposingBackbone.from_model(model)
    info = backbone.info
    pooled_by_attention = family in ("eva02_map", "pe_core")
    assert info.family == "eva" and info.readout == ("map" if pooled_by_attention else "cls")
    pixels = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
    decomposition = backbone(pixels, extras=[Depth((1, 2))])
    own = model.forward_head(model.forward_features(pixels), pre_logits=True)
    assert_close(decomposition["output/full"], own, **scaled(own))
    assert decomposition.pooler_error < 1e-5 * own.abs().max()  # every block's rebuilt [CLS] output too
    layout = backbone.layout_for(pixels)
    for block, row in enumerate(own_cls_rows(model, pixels)):  # RoPE: the keys as the softmax sees them
        for group in layout.groups:
            expected = row[:, :, layout.slice(group)].sum(dim=-1).mean(dim=1)
            got = decomposition[f"{DEPTH_PREFIX}split/{group}"][:, block]
            assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if info.readout == "map":
        _, weights, attended = pool_reference(backbone, pixels)
        assert_close(decomposition["attention/full"], attended, **scaled(attended))
        assert_close(decomposition["split/patch"], weights[:, :, layout.slice("patch")].sum(-1).mean(1))


@torch.no_grad()
def test_removing_patches_is_masking_their_keys_with_each_images_own_rotations() -> None:
    model = MODELS["eva02_registers_layer_scale"]()
    backbone = DecomposingBackbone.from_model(model)
    pixels = torch.randn(2, 3, 32, 32)
    layout = backbone.layout_for(pixels)
    tokens = backbone.embed(pixels)
    prefix = layout.slice("patch").start
    kept = torch.tensor([[0, 2, 3, 5, 9, 15], [1, 4, 6, 7, 8, 12]])  # patches kept, per image
    rows = torch.cat([torch.arange(prefix).expand(2, -1), kept + prefix], dim=1)
    shortened = tokens.gather(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    got = backbone.pooled_from(shortened, layout, patches=kept)
    visible = torch.zeros(2, layout.num_tokens, dtype=torch.bool)
    visible.scatter_(1, rows, True)
    mask = visible[:, None, None, :].expand(-1, 1, layout.num_tokens, -1)  # every query sees the kept keys
    expected = model.forward_head(model.forward_features(pixels, attn_mask=mask), pre_logits=True)
    assert_close(got, expected, **scaled(expected))


def test_what_eva_cannot_take_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="a norm or gate between attention and its output projection"):
        DecomposingBackbone.from_model(tiny_eva("eva02_base_patch16_clip_224"))  # EVA-02-CLIP's sub-LN
    with pytest.raises(ValueError, match="'max'"):
        DecomposingBackbone.from_model(tiny_eva(global_pool="max"))
    with pytest.raises(ValueError, match="no token can be added: eva's blocks count the prefix tokens"):
        with_test_time_registers(MODELS["eva02"](), {1: [0]})


@torch.no_grad()
def test_a_pooling_head_of_its_own_width_is_recorded_and_its_heads_are_the_maps_heads() -> None:
    """PE-core's pool has 8 heads over 4-head blocks (here): recorded, the head maps are the pool's
    (its attention over the patches), and the heads probe, one head count for every block, refuses."""
    from harness.extras import AttributionMaps
    from probes import ProbeSelection

    backbone = DecomposingBackbone.from_model(MODELS["pe_core"]())
    info = backbone.info
    assert (info.num_heads, info.readout_heads, info.heads_read) == (4, 8, 8)
    assert info.as_dict()["readout_heads"] == 8
    pixels = torch.randn(2, 3, 32, 32)
    maps = AttributionMaps(("attention",), heads=(8,), scored=False)
    decomposition = backbone(pixels, extras=[maps])
    _, weights, _ = pool_reference(backbone, pixels)
    layout = backbone.layout_for(pixels)
    patches = weights[:, :, layout.slice("patch")].unflatten(-1, (layout.grid_height, layout.grid_width))
    assert_close(decomposition["attribution/attention_heads"], patches, rtol=1e-5, atol=1e-7)  # all 8
    with pytest.raises(ValueError, match="8 heads to its blocks' 4"):
        ProbeSelection.parse("heads").for_model(info)
    assert "heads" not in ProbeSelection.parse("all").for_model(info).names
