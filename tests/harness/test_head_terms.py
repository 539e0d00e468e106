"""Per-head terms of the [CLS] update (`HeadTerms`) against each family's own attention modules: one
head's term is the output projection's [CLS] output with the other heads' columns (and the bias)
zeroed, in the model's own forward pass; over heads the terms sum to each group's contribution."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.decomposition import output_bias_term
from harness.extras import HeadTerms, head_prefix
from harness.extras.head_terms import head_term_names
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_clip, tiny_deit, tiny_dinov3, tiny_timm, tiny_vit

FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "dinov2_registers": lambda: tiny_model(registers=2, layers=3),
    "dinov2_swiglu": lambda: tiny_model(swiglu=True, layers=3),
    "dinov3_rope": tiny_dinov3,
    "vit": tiny_vit,
    "clip": tiny_clip,
    "deit_distilled": tiny_deit,
    "timm": tiny_timm,
}


def own_head_term(model: nn.Module, block: int, head: int, pixels: Tensor) -> Tensor:
    """gamma1 * the [CLS] row of block `block`'s output projection, run by the model itself with every
    other head's columns and the projection's bias zeroed: head `head`'s whole term (batch, hidden)."""
    alone = copy.deepcopy(model)
    backbone = DecomposingBackbone.from_model(alone)
    view = backbone.view(block)
    projection = view.attention.o_proj
    width = projection.weight.shape[1] // view.attention.num_attention_heads
    kept: list[Tensor] = []
    with torch.no_grad():
        keep = torch.zeros_like(projection.weight)
        keep[:, head * width : (head + 1) * width] = 1
        projection.weight.mul_(keep)
        if projection.bias is not None:
            projection.bias.zero_()
    handle = projection.register_forward_hook(lambda module, inputs, output: kept.append(output[:, 0]))
    try:
        backbone.pooled(pixels)
    finally:
        handle.remove()
    return view.layer_scale1.lambda1.float() * kept[0].float()


@pytest.mark.parametrize("size", [(32, 40), (48, 36)])
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_each_heads_term_is_the_models_own_and_they_sum_to_the_groups(
    family: str, size: tuple[int, int]
) -> None:
    pixels = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))
    model = FAMILIES[family]()
    backbone = DecomposingBackbone.from_model(model)
    layers = backbone.info.num_layers
    decomposition = backbone(pixels, extras=[HeadTerms((1, layers))])
    groups = decomposition.layout.groups
    assert set(head_term_names(layers, layers, groups)) | set(head_term_names(1, layers, groups)) == {
        name for name in decomposition if "heads/" in name
    }
    heads = backbone.last_block.attention.num_attention_heads
    for block in (1, layers):
        prefix = head_prefix(block, layers)
        terms = {group: decomposition[prefix + group] for group in groups}  # batch, heads, hidden
        assert terms[groups[0]].shape == (pixels.shape[0], heads, backbone.info.hidden_size)
        masses = torch.stack([decomposition[f"{prefix}split/{group}"] for group in groups])
        assert_close(masses.sum(0), torch.ones_like(masses[0]), atol=1e-5, rtol=0)
        for head in (0, heads - 1):
            own = own_head_term(model, block, head, pixels)
            got = sum(terms[group][:, head] for group in groups)
            assert_close(got, own, atol=1e-5 * float(own.abs().max()), rtol=1e-4)
    bias = output_bias_term(backbone.last_block)
    scale = max(float(decomposition[f"attention/{group}"].abs().max()) for group in groups)
    for group in groups:  # over heads, the group's contribution c_g = attention/{group} - c_b
        total = decomposition[f"heads/{group}"].sum(dim=1)
        expected = decomposition[f"attention/{group}"] - bias
        assert_close(total, expected, atol=1e-5 * scale, rtol=1e-4)
        split = decomposition[f"heads/split/{group}"].mean(dim=1)
        assert_close(split, decomposition[f"split/{group}"], atol=1e-6, rtol=0)


@torch.no_grad()
def test_blocks_before_the_last_are_read_as_they_run(pixels: Tensor) -> None:
    """Block 2's terms in a call that also decomposes the last block equal those of a model cut after
    block 2 (its last block then), where the capture supplies them."""
    model = tiny_model(registers=2, layers=3)
    got = DecomposingBackbone.from_model(model)(pixels, extras=[HeadTerms((2,))])
    cut = copy.deepcopy(model)
    cut.encoder.layer = cut.encoder.layer[:2]
    cut.config.num_hidden_layers = 2
    alone = DecomposingBackbone.from_model(cut)(pixels, extras=[HeadTerms()])
    for name in ("register", "patch", "split/cls"):
        assert_close(got[f"depth/layer2/heads/{name}"], alone[f"heads/{name}"], atol=1e-6, rtol=1e-5)


def test_blocks_outside_the_model_are_refused(pixels: Tensor) -> None:
    backbone = DecomposingBackbone.from_model(tiny_model(layers=2))
    with pytest.raises(ValueError, match=r"layers are numbered 1\.\.2"):
        backbone(pixels, extras=[HeadTerms((3,))])
