"""timm's `NaFlexVit` on whole images: RADIO v3's layout ([CLS] and 7 registers, its position table
resized to the grid) and timm's NaFlex SigLIP (an attention pool), at square and non-square sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.decomposition import DEPTH_PREFIX
from harness.extras import Depth
from tests.conftest import scaled
from tests.families import perturbed
from tests.harness.pools import own_cls_rows, pool_reference


def tiny_naflex(name: str = "naflexvit_base_patch16_radio_v3", **options: Any) -> nn.Module:
    """A seeded random timm `NaFlexVit` (width 32, 2 blocks, 4 heads, patch 16) whose biases, tokens,
    layer scales are off their init (`tests.families.perturbed`)."""
    torch.manual_seed(0)
    settings = dict(embed_dim=32, depth=2, num_heads=4, num_classes=0) | options
    return perturbed(timm.create_model(name, pretrained=False, **settings), seed=0)


MODELS = {"radio_v3": tiny_naflex, "siglip": lambda: tiny_naflex("naflexvit_base_patch16_siglip")}


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
@torch.no_grad()
def test_naflex_decomposes_exactly(family: str, size: tuple[int, int]) -> None:
    model = MODELS[family]()
    backbone = DecomposingBackbone.from_model(model)
    info = backbone.info
    assert info.family == "naflex"
    assert (info.readout, info.num_cls, info.num_registers) == (
        ("cls", 1, 7) if family == "radio_v3" else ("map", 0, 0)
    )
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[1]))
    layout = backbone.layout_for(pixels)
    extras = [Depth((1, 2))] if info.num_cls else []
    decomposition = backbone(pixels, extras=extras)
    own = model.forward_head(model.forward_features(pixels), pre_logits=True)
    assert_close(decomposition["output/full"], own, **scaled(own))
    assert decomposition.pooler_error < 1e-5 * own.abs().max()
    if info.num_cls:  # every block's [CLS] attention is the model's own
        for block, row in enumerate(own_cls_rows(model, pixels)):
            for group in layout.groups:
                expected = row[:, :, layout.slice(group)].sum(dim=-1).mean(dim=1)
                got = decomposition[f"{DEPTH_PREFIX}split/{group}"][:, block]
                assert_close(got, expected, rtol=1e-5, atol=1e-6)
    else:
        _, weights, attended = pool_reference(backbone, pixels)
        assert_close(decomposition["attention/full"], attended, **scaled(attended))
        assert_close(decomposition["split/patch"], weights[:, :, layout.slice("patch")].sum(-1).mean(1))


@torch.no_grad()
def test_removing_patches_is_masking_their_keys() -> None:
    model = tiny_naflex()
    backbone = DecomposingBackbone.from_model(model)
    pixels = torch.randn(2, 3, 48, 64)
    layout = backbone.layout_for(pixels)
    tokens = backbone.embed(pixels)
    prefix = layout.slice("patch").start
    kept = torch.tensor([[0, 2, 3, 5, 9], [1, 4, 6, 7, 8]])
    rows = torch.cat([torch.arange(prefix).expand(2, -1), kept + prefix], dim=1)
    shortened = tokens.gather(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    got = backbone.pooled_from(shortened, layout, patches=kept)
    visible = torch.zeros(2, layout.num_tokens, dtype=torch.bool)
    visible.scatter_(1, rows, True)
    mask = visible[:, None, None, :].expand(-1, 1, layout.num_tokens, -1)
    expected = model.forward_head(model.forward_features(pixels, attn_mask=mask), pre_logits=True)
    assert_close(got, expected, **scaled(expected))


def test_what_naflex_cannot_take_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="'max'"):
        DecomposingBackbone.from_model(tiny_naflex("naflexvit_base_patch16_gap", global_pool="max"))
    with pytest.raises(ValueError, match="leaves the prefix tokens out"):
        DecomposingBackbone.from_model(tiny_naflex("naflexvit_base_patch16_map"))


def test_a_saved_naflex_folder_loads_as_timm_saves_it(tmp_path: Path) -> None:
    """timm's hub layout (save_for_hf) of a NaFlexVit: loaded without `dynamic_img_size`, which it
    does not take (its embedding resizes its positions itself)."""
    from timm.models import save_for_hf

    from harness import load_backbone

    model = tiny_naflex()
    save_for_hf(model, tmp_path / "radio")
    backbone = load_backbone(str(tmp_path / "radio"))
    pixels = torch.randn(1, 3, 48, 32)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(pixels), pre_logits=True)
        assert_close(backbone(pixels)["output/full"], expected, **scaled(expected))
