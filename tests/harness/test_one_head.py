"""One attention head as an intervention target (`head5@12`): at model level, its slice of the
attention output before the output projection replaced for every token, against the model's own
forward with a pre-hook doing that; at readout level, its term of the [CLS] update, the heads' terms
summing to the update's token terms; knockout and heads the model lacks refused in one line."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.decomposition import output_readout
from harness.extras import HeadTerms, Intervention, ReferenceStatistics, parse_intervention
from harness.extras.interventions.recording import record_reference
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_clip, tiny_timm
from tests.harness.test_interventions import scaled

FAMILIES = {
    "dinov2": lambda: tiny_model(registers=2, layers=3),
    "clip": tiny_clip,
    "timm": lambda: tiny_timm(init_values=0.5),
}


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(3, 3, 32, 40, generator=torch.Generator().manual_seed(6))


def own_forward_with_head_zeroed(
    backbone: DecomposingBackbone, pixels: Tensor, block: int, head: int
) -> Tensor:
    """The model's own pooled output with head `head`'s columns of block `block`'s output-projection
    input zeroed (a pre-hook on that projection)."""
    attention = backbone.view(block).attention
    width = attention.head_dim

    def zero(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        value = inputs[0].clone()
        value[..., head * width : (head + 1) * width] = 0
        return (value, *inputs[1:])

    handle = attention.o_proj.register_forward_pre_hook(zero)
    try:
        return backbone.family.pooled(pixels).float()
    finally:
        handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_model_level_zero_is_the_models_own_forward_without_that_head(family: str, pixels: Tensor) -> None:
    backbone = DecomposingBackbone.from_model(FAMILIES[family]())
    clean = backbone(pixels)["output/full"]
    for block, head in ((1, 1), (backbone.info.num_layers, backbone.info.num_heads)):
        intervention = parse_intervention(f"head{head}@{block}:zero", backbone.info.num_layers)
        got = backbone(pixels, extras=[intervention]).pass_of(intervention.name)["output/full"]
        expected = own_forward_with_head_zeroed(backbone, pixels, block, head - 1)
        assert_close(got, expected, **scaled(expected))
        assert (got - clean).abs().max() > 1e-4 * clean.abs().max()  # it acts


@torch.no_grad()
def test_readout_level_removes_the_heads_own_term(pixels: Tensor) -> None:
    """At the last block, zeroing head h's term at readout level leaves the update without exactly
    that head's per-head terms (`HeadTerms`): rebuilt, it is the output of s + c - t_h + c_b; and
    zeroing every head is zeroing every token group's term."""
    backbone = DecomposingBackbone.from_model(tiny_model(registers=2, layers=3))
    layers, heads = backbone.info.num_layers, backbone.info.num_heads
    every = Intervention(tuple(f"head{h}" for h in range(1, heads + 1)), (layers,), "zero", "readout")
    groups = Intervention(("cls", "register", "patch"), (layers,), "zero", "readout")
    got = backbone(pixels, extras=[every, groups, HeadTerms()])
    expected = got.pass_of(groups.name)["output/full"]
    assert_close(got.pass_of(every.name)["output/full"], expected, **scaled(expected))
    one = Intervention(("head2",), (layers,), "zero", "readout")
    alone = backbone(pixels, extras=[one]).pass_of(one.name)["output/full"]
    term = sum(got[f"heads/{group}"][:, 1] for group in ("cls", "register", "patch"))
    last = backbone.last_block
    capture = backbone.capture(pixels)
    state = capture.block_input[:, 0].float() + got["attention/full"] - term
    rebuilt = backbone.family.final_norm(output_readout(last, None, state).unsqueeze(1))[:, 0].float()
    assert_close(alone, rebuilt, **scaled(rebuilt))


@pytest.mark.parametrize("level", ["model", "readout"])
@torch.no_grad()
def test_reference_modes_record_the_heads_own_values(pixels: Tensor, level: str) -> None:
    backbone = DecomposingBackbone.from_model(tiny_model(registers=2, layers=3))
    intervention = Intervention(("head3",), (2,), "mean", level)
    statistics = ReferenceStatistics(bank_size=3)
    record_reference(backbone, pixels, torch.arange(3), [intervention], statistics)
    held = statistics.mean(intervention.reference_keys()[0]).shape
    tokens = backbone.layout_for(pixels).num_tokens
    assert held == ((tokens, backbone.view(2).attention.head_dim) if level == "model" else (1, 32))
    # over the same images, each image's own values averaged: mean replacement moves the output
    got = backbone(pixels, torch.arange(3), extras=[intervention.using(statistics)])
    assert torch.isfinite(got.pass_of(intervention.name)["output/full"]).all()


def test_knockout_and_heads_the_model_lacks_are_refused() -> None:
    backbone = DecomposingBackbone.from_model(tiny_model(layers=2))
    with pytest.raises(ValueError, match=r"this model has heads 1\.\.4"):
        parse_intervention("head5@last:zero", 2).check_model(backbone.info)
    with pytest.raises(ValueError, match="head1 is no token"):
        parse_intervention("head1@last:knockout", 2).check_model(backbone.info)
    assert not parse_intervention("head1@1:zero", 2).allows_deletion
