"""The seam extras plug into (`harness.backbone`, `harness.taps`): the clean pass runs once whatever the
extras; each extra checks itself against the model before anything runs; seeded draws follow the
dataset indices, which a call that draws must be given; taps of the clean pass may read, never
replace; a new extra is one class; what two consumers ask for runs once; the model runs in eval mode
for the whole call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import BlockParts, Call, DecomposingBackbone, Extra, ExtraResult, Tap, TokenLayout, merged_extras
from harness.extras import AttributionMaps, Deletion, Intervention, ReferenceStatistics
from harness.extras.interventions import ReferenceKey
from harness.extras.interventions.recording import record_reference
from tests.conftest import tiny_model

FRACTIONS = (0.25, 0.5)


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(8))


def registers_model() -> DecomposingBackbone:
    return DecomposingBackbone.from_model(tiny_model(registers=4, layers=3))


def first_block_calls(backbone: DecomposingBackbone) -> tuple[list[int], object]:
    """The batch size of every call of the first block's attention (the block really ran, not passed
    through), and the hook's handle."""
    calls: list[int] = []
    handle = backbone.view(1).attention.q_proj.register_forward_hook(
        lambda module, inputs, output: calls.append(output.shape[0])
    )
    return calls, handle


@torch.no_grad()
def test_the_clean_pass_runs_once_whatever_the_extras(pixels: Tensor) -> None:
    """Deletion, two interventions (one with the deletion passes under it) and five maps with one
    head's, scored: 1 clean pass, then only each extra's own passes (one per fraction for each order
    group; none of block 1 for an intervention from a later block; one gradient pass for Chefer's
    and LeGrad's maps together; one batched pass for the integrated gradients)."""
    backbone = registers_model()
    deletion = Deletion(FRACTIONS)
    maps = AttributionMaps(
        ("attention", "rollout", "chefer", "legrad", "integrated_gradients"), (1,), FRACTIONS
    )
    extras = [
        deletion,
        Intervention.parse("register@2:zero", 3).running([deletion]),
        Intervention.parse("cls+skip@3:zero:readout", 3),
        maps,
    ]
    calls, handle = first_block_calls(backbone)
    try:
        backbone(pixels, torch.arange(4), extras=extras)
    finally:
        handle.remove()
    scored = len(maps.maps) + len(maps.heads) + 1  # and the random control
    expected = 1 + len(FRACTIONS) + len(FRACTIONS) + 0 + (1 + 1 + 2 * scored * len(FRACTIONS))
    assert len(calls) == expected
    assert calls[0] == 4  # the clean pass, first


def test_a_target_the_model_lacks_is_refused_before_anything_runs(pixels: Tensor) -> None:
    backbone = DecomposingBackbone.from_model(tiny_model(registers=0, layers=3))
    calls, handle = first_block_calls(backbone)
    try:
        with pytest.raises(ValueError, match="model/register@last/zero: this model has no register tokens"):
            backbone(pixels, extras=[Intervention.parse("register@last:zero", 3)])
        with pytest.raises(ValueError, match=r"heads 1\.\.4, got \[5\]"):
            backbone(pixels, torch.arange(4), extras=[AttributionMaps(heads=(5,))])
    finally:
        handle.remove()
    assert calls == []


@torch.no_grad()
def test_a_loop_over_batches_draws_anew_per_batch_and_again_per_index(pixels: Tensor) -> None:
    """Two batches of the same pixels under other dataset indices, as a notebook loop over a loader
    gives them: other noise, other partners, other random orders; the same indices again: the same
    draws. A call that draws without indices is refused; noise draws anew at every block."""
    backbone = registers_model()
    reference = ReferenceStatistics(bank_size=6, seed=3)
    noise = Intervention.parse("cls@2-3:noise:readout", 3)
    shuffle = Intervention.parse("patch@2:shuffle", 3)
    record_reference(backbone, torch.randn(6, 3, 32, 32), torch.arange(100, 106), [noise, shuffle], reference)
    extras = [
        noise.using(reference),
        shuffle.using(reference),
        Deletion(FRACTIONS),
        AttributionMaps(("attention",)),
    ]
    batches = [backbone(pixels, torch.arange(start, start + 4), extras=extras) for start in (0, 4, 0)]
    first, second, again = batches
    for intervention in (noise, shuffle):
        outputs = [batch.pass_of(intervention.name)["output/full"] for batch in batches]
        assert not torch.allclose(outputs[0], outputs[1]), intervention.name
        assert torch.equal(outputs[0], outputs[2]), intervention.name
    for name in ("deletion/random", "maps/random/deletion"):
        assert not torch.equal(first[name], second[name]) and torch.equal(first[name], again[name]), name
    with pytest.raises(ValueError, match="Intervention, Deletion, AttributionMaps: seeded by dataset index"):
        backbone(pixels, extras=extras)
    block2, block3 = (
        reference.noise(ReferenceKey("readout", "cls", block), torch.arange(4)) for block in (2, 3)
    )
    correlation = torch.corrcoef(torch.stack([block2.flatten(), block3.flatten()]))[0, 1]
    assert abs(correlation) < 0.2  # independent draws (the same at every block before)


class _Values(Tap):
    """Block 2's value projections, as the clean pass computed them."""

    reads = frozenset({"values"})
    blocks = (2,)

    def __init__(self) -> None:
        self.values: Tensor | None = None

    def leave(self, parts: BlockParts) -> None:
        self.values = parts.read("values")


@dataclass(frozen=True)
class ValueNorms(Extra):
    """An extra written outside the package: the norm of every token's value at block 2."""

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        return {"values": _Values()}

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        tap = taps["values"]
        assert isinstance(tap, _Values) and tap.values is not None
        return ExtraResult({"values/norm": tap.values.norm(dim=-1)})


@torch.no_grad()
def test_a_new_extra_is_one_class_and_reads_the_clean_pass(pixels: Tensor) -> None:
    backbone = registers_model()
    kept: list[Tensor] = []
    handle = backbone.model.encoder.layer[1].attention.v_proj.register_forward_hook(
        lambda module, inputs, output: kept.append(output)
    )
    try:
        found = backbone(pixels, extras=[ValueNorms()])
    finally:
        handle.remove()
    assert len(kept) == 1  # no pass of its own
    assert_close(found["values/norm"], kept[0].norm(dim=-1))


@dataclass(frozen=True)
class _Meddling(Extra):
    """An extra whose tap replaces a block's output in the clean pass."""

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        class Zeroing(Tap):
            blocks = (1,)

            def leave(self, parts: BlockParts) -> Tensor:
                return torch.zeros_like(parts.output)

        return {"zeroing": Zeroing()}

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        return ExtraResult()


def test_the_clean_pass_stays_clean(pixels: Tensor) -> None:
    with pytest.raises(ValueError, match="replaced block 1's tokens in a clean pass"):
        registers_model()(pixels, extras=[_Meddling()])


@torch.no_grad()
def test_what_two_consumers_ask_runs_once_or_is_refused(pixels: Tensor) -> None:
    """An intervention asked plainly and with the deletion passes under it is one pass; two deletion
    extras with other seeds write the same names: refused, not one silently dropped."""
    backbone = registers_model()
    deletion = Deletion(FRACTIONS)
    plain = Intervention.parse("register@2:zero", 3)
    merged = merged_extras([deletion, plain, plain.running([deletion]), Deletion(FRACTIONS)])
    assert len(merged) == 2 and merged[1].under == (deletion,)  # type: ignore[attr-defined]
    found = backbone(pixels, torch.arange(4), extras=merged)
    assert "deletion/top" in found.pass_of(plain.name)
    with pytest.raises(ValueError, match="two extras of one call write"):
        backbone(pixels, torch.arange(4), extras=[deletion, Deletion(FRACTIONS, seed=1)])


@torch.no_grad()
def test_class_scores_reach_the_deletion_passes(pixels: Tensor) -> None:
    backbone = registers_model()
    torch.manual_seed(0)
    head = nn.Linear(backbone.info.hidden_size, 3).requires_grad_(False)
    found = backbone(pixels, torch.arange(4), extras=[Deletion(FRACTIONS, class_scores=head)])
    explained = head(found["output/full"]).argmax(dim=1)
    for order in ("top", "random", "bottom"):
        probability = found[f"deletion/{order}/probability"]
        assert probability.shape == (4, 2) and torch.all((probability > 0) & (probability < 1))
        assert found[f"deletion/{order}/predicted"].shape == (4, 2)
    assert explained.shape == (4,)


def test_a_model_in_training_mode_is_decomposed_in_eval_mode(pixels: Tensor) -> None:
    """Dropout in the blocks is off for the whole call (the model's pass and the readouts rebuilt from
    its modules), and the model's flags are set back."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, depth=2, embed_dim=32, num_heads=4, img_size=32,
        patch_size=4, dynamic_img_size=True, num_classes=0, drop_rate=0.5, proj_drop_rate=0.5,
    )  # fmt: skip
    model.train()
    backbone = DecomposingBackbone.from_model(model)
    with torch.no_grad():
        found = backbone(pixels)
        model.eval()
        expected = model(pixels)
        model.train()
    assert_close(found["output/full"], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert found.pooler_error < 1e-5 * expected.abs().max()
    assert all(module.training for module in model.modules())
