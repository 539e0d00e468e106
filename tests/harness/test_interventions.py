"""Interventions (issue 21): readout-level zeroing is the decomposition's zeroed variants; model-level
replacement equals the model's own forward with those rows replaced, for every family; mean and
shuffle change nothing on a model whose states are the same for every image; partners and noise
follow the dataset index; the reference statistics are the same on 1 or 2 processes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.extras import Deletion, Intervention, ReferenceStatistics, parse_intervention
from harness.extras.interventions import ReferenceKey
from harness.extras.interventions.levels import model_rows, put_rows
from harness.extras.interventions.recording import record_reference
from tests.conftest import scaled, tiny_model
from tests.harness.test_families import tiny_clip, tiny_deit, tiny_dinov3, tiny_timm, tiny_vit

FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "dinov2": lambda: tiny_model(registers=4, hidden=32, heads=4, layers=3, patch=4, image=32),
    "dinov3": tiny_dinov3,
    "vit": tiny_vit,
    "deit": tiny_deit,
    "clip": tiny_clip,
    "timm": lambda: tiny_timm(init_values=0.5, reg_tokens=4, fc_norm=True),
}


def block_inputs(backbone: DecomposingBackbone, pixels: Tensor, blocks: list[int]) -> dict[int, Tensor]:
    """The clean input of each of `blocks` in the model's own forward (one pre-hook each)."""
    kept: dict[int, Tensor] = {}
    handles = [
        backbone.family.blocks[block - 1].register_forward_pre_hook(
            lambda module, inputs, block=block: kept.__setitem__(block, inputs[0])
        )
        for block in blocks
    ]
    try:
        backbone.family.pooled(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return kept


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(4, 3, 32, 40, generator=torch.Generator().manual_seed(3))


def test_specs_parse_and_name_target_blocks_mode_and_level() -> None:
    assert parse_intervention("register@last:mean", 12) == Intervention(
        ("register",), (12,), "mean", "model", spelled="last"
    )  # `last` kept in its name: models of different depths line up
    assert parse_intervention("cls@2-4:shuffle", 12).name == "model/cls@2-4/shuffle"
    assert parse_intervention("high_norm@all:noise:readout", 3).blocks == (1, 2, 3)
    assert parse_intervention("cls+register+skip@12:zero:readout", 12).prefix == (
        "intervened/readout/cls+register+skip@12/zero/"
    )
    for text, message in [
        ("register:mean", "expected TARGETS@BLOCKS:MODE"),
        ("token@last:zero", "unknown intervention target"),
        ("register@last:drop", "unknown intervention mode 'drop'"),
        ("register@last:zero:head", "unknown intervention level 'head'"),
        ("skip@last:zero", "only the readout level"),
        ("cls@0-2:zero", "blocks are numbered from 1"),
        ("cls@3-2:zero", "a range A-B needs A <= B"),
        ("cls@13:zero", "this backbone has blocks 1..12"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_intervention(text, 12)


@torch.no_grad()
def test_readout_zero_at_the_last_block_is_the_zeroed_variants(pixels: Tensor) -> None:
    """Zeroing every term of the last [CLS] update but one group's (and the bias) is that group's
    zeroed variant `output/{group}`."""
    backbone = DecomposingBackbone.from_model(
        tiny_model(registers=4, hidden=32, heads=4, layers=3, patch=4, image=32)
    )
    groups = ("cls", "register", "patch")
    interventions = [
        Intervention((*(g for g in groups if g != kept), "skip"), (3,), "zero", "readout") for kept in groups
    ]
    decomposition = backbone(pixels, extras=interventions)
    for kept, intervention in zip(groups, interventions, strict=True):
        expected = decomposition[f"output/{kept}"]
        assert_close(decomposition.pass_of(intervention.name)["output/full"], expected, **scaled(expected))
    # the last block's decomposition describes its [CLS] row before the rebuild: only the output is
    # reported, with what a released DINOv2 head reads beside it (the patches' rows are not rebuilt)
    reported = ["output/full", "linear_input/cls", "linear_input/patch_mean"]
    assert list(decomposition.pass_of(interventions[0].name)) == reported


def own_forward_with_rows_replaced(
    backbone: DecomposingBackbone, pixels: Tensor, block: int, target: str, value: Callable[[Tensor], Tensor]
) -> Tensor:
    """The model's own pooled output with `target`'s rows of block `block`'s input replaced by
    `value(rows)`: one pre-hook on the family's block, the model's own forward."""
    layout = backbone.layout_for(pixels)

    def replace(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        tokens = inputs[0]
        rows = model_rows(target, tokens, layout)
        current = tokens.gather(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return (put_rows(tokens, rows, value(current)), *inputs[1:])

    handle = backbone.family.blocks[block - 1].register_forward_pre_hook(replace)
    try:
        return backbone.family.pooled(pixels).float()
    finally:
        handle.remove()


def own_cls_rows(backbone: DecomposingBackbone, pixels: Tensor, block: int, target: str) -> Tensor:
    """The model's own [CLS] after the embeddings and every block (images, blocks + 1, hidden), with
    `target`'s rows of block `block`'s input zeroed."""
    rows: list[Tensor] = []
    family = backbone.family
    handles = [module.register_forward_hook(lambda module, inputs, output: rows.append(output[:, 0]))
               for module in (family.embeddings, *family.blocks)]  # fmt: skip
    try:
        own_forward_with_rows_replaced(backbone, pixels, block, target, torch.zeros_like)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(rows, dim=1).float()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_model_level_zero_is_the_models_own_forward_with_those_rows_zeroed(
    family: str, pixels: Tensor
) -> None:
    backbone = DecomposingBackbone.from_model(FAMILIES[family]())
    assert backbone.info.family == family
    targets = ["patch", "high_norm", "cls"] + (["register"] if backbone.info.num_registers else [])
    targets += ["distillation"] if backbone.info.num_distillation else []
    for target in targets:
        for block in (1, 3):
            intervention = Intervention((target,), (block,), "zero")
            decomposition = backbone(pixels, extras=[intervention])
            got = decomposition.pass_of(intervention.name)["output/full"]
            expected = own_forward_with_rows_replaced(backbone, pixels, block, target, torch.zeros_like)
            assert_close(got, expected, **scaled(expected))
            # the intervened pass's last block decomposes its own input: it rebuilds that output
            assert decomposition.pooler_error < 1e-5 * expected.abs().max()
            # its [CLS] after every block (the clean rows before the intervention): the layerwise probe's
            rows = own_cls_rows(backbone, pixels, block, target)
            assert_close(decomposition.pass_of(intervention.name)["hidden/cls"], rows, **scaled(rows))
            if target == "patch":  # the test can fail: zeroing every patch moves the output
                assert (got - backbone(pixels)["output/full"]).abs().max() > 1e-3 * expected.abs().max()


@torch.no_grad()
def test_model_level_mean_over_blocks_uses_each_blocks_clean_reference(pixels: Tensor) -> None:
    """`mean` at blocks 2-3: block 2's rows become their reference mean at block 2, then block 3's
    (already changed) rows become the reference mean at block 3 (of the clean pass)."""
    backbone = DecomposingBackbone.from_model(FAMILIES["dinov2"]())
    intervention = Intervention(("register",), (2, 3), "mean")
    reference = ReferenceStatistics(bank_size=4)
    indices = torch.arange(4)
    record_reference(backbone, pixels, indices, [intervention], reference)
    means = {block: reference.mean(ReferenceKey("model", "register", block)) for block in (2, 3)}
    assert reference.count(ReferenceKey("model", "register", 2)) == 4
    layout = backbone.layout_for(pixels)
    clean_inputs = block_inputs(backbone, pixels, [2, 3])
    for block in (2, 3):
        assert_close(means[block], clean_inputs[block][:, layout.slice("register")].float().mean(0))
    handles = [
        backbone.family.blocks[block - 1].register_forward_pre_hook(
            lambda module, inputs, block=block: (
                put_rows(
                    inputs[0], model_rows("register", inputs[0], layout), means[block].expand(4, -1, -1)
                ),
            )
        )
        for block in (2, 3)
    ]
    try:
        expected = backbone.family.pooled(pixels).float()
    finally:
        for handle in handles:
            handle.remove()
    got = backbone(pixels, indices, extras=[intervention.using(reference)]).pass_of(intervention.name)[
        "output/full"
    ]
    assert_close(got, expected, **scaled(expected))


def constant_model() -> DecomposingBackbone:
    """A DINOv2 with registers whose patch embedding ignores the image: every image's token states
    are the same, so a reference mean or a partner's state is each image's own."""
    model = tiny_model(registers=4, hidden=32, heads=4, layers=3, patch=4, image=32)
    with torch.no_grad():
        model.embeddings.patch_embeddings.projection.weight.zero_()
    return DecomposingBackbone.from_model(model)


@pytest.mark.parametrize("level", ["model", "readout"])
@pytest.mark.parametrize("mode", ["mean", "shuffle"])
@torch.no_grad()
def test_mean_and_shuffle_change_nothing_when_every_image_is_the_same(
    level: str, mode: str, pixels: Tensor
) -> None:
    backbone = constant_model()
    targets = ("register", "cls", "high_norm") + (("skip",) if level == "readout" else ())
    interventions = [Intervention((target,), (2, 3), mode, level) for target in targets]
    reference = ReferenceStatistics(bank_size=3)
    other = torch.randn(5, 3, 32, 40, generator=torch.Generator().manual_seed(9))  # other images, same states
    record_reference(backbone, other, torch.arange(100, 105), interventions, reference)
    using = [intervention.using(reference) for intervention in interventions]
    decomposition = backbone(pixels, torch.arange(4), extras=using)
    clean = decomposition["output/full"]
    for intervention in interventions:
        assert_close(decomposition.pass_of(intervention.name)["output/full"], clean, **scaled(clean))
    # zero does change it: the test can fail
    zero = Intervention(("register", "cls"), (2, 3), "zero", level)
    changed = backbone(pixels, extras=[zero]).pass_of(zero.name)["output/full"]
    assert (changed - clean).abs().max() > 1e-3 * clean.abs().max()  # rounding is ~1e-7


@torch.no_grad()
def test_shuffle_partners_and_noise_follow_the_dataset_index(pixels: Tensor) -> None:
    """The same image gets the same partner and the same noise in any batch position or batch, and
    never itself."""
    backbone = DecomposingBackbone.from_model(FAMILIES["dinov2"]())
    shuffle = Intervention(("patch",), (3,), "shuffle")
    noise = Intervention(("cls",), (3,), "noise", "readout")
    reference = ReferenceStatistics(bank_size=3, seed=7)
    indices = torch.tensor([10, 11, 12, 13])
    record_reference(backbone, pixels, indices, [shuffle, noise], reference)
    key, noise_key = ReferenceKey("model", "patch", 3), ReferenceKey("readout", "cls", 3)
    _, bank_indices, _ = reference.banks[key]
    assert len(bank_indices) == 3 and set(bank_indices.tolist()) <= set(indices.tolist())
    order = torch.tensor([2, 0, 3])  # another batch: other positions, one image left out
    assert torch.equal(reference.partners(key, indices[order]), reference.partners(key, indices)[order])
    assert torch.equal(reference.noise(noise_key, indices[order]), reference.noise(noise_key, indices)[order])
    partners = reference.partners(key, indices)
    layout = backbone.layout_for(pixels)
    own = block_inputs(backbone, pixels, [3])[3][:, layout.slice("patch")]
    for image in range(4):  # never its own patches
        assert not torch.equal(partners[image], own[image])
    using = [shuffle.using(reference), noise.using(reference)]
    together = backbone(pixels, indices, extras=using)
    apart = backbone(pixels[order], indices[order], extras=using)
    for intervention in (shuffle, noise):
        expected = together.pass_of(intervention.name)["output/full"][order]
        assert_close(apart.pass_of(intervention.name)["output/full"], expected, **scaled(expected))
    noise_key = ReferenceKey("readout", "cls", 3)
    draws = reference.noise(noise_key, torch.arange(2000) + 10_000)  # 2000 images: the reference moments
    assert_close(
        draws.mean(0), reference.mean(noise_key), atol=0.1 * reference.std(noise_key).max().item(), rtol=0
    )


def _reference_worker(rank: int, folder: str, batches: list[tuple[Tensor, Tensor]], deal: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        reference = ReferenceStatistics(bank_size=3)
        key = ReferenceKey("model", "register", 1)
        mine = batches[rank::2] if deal == "round-robin" else batches if rank == 0 else []
        for values, indices in mine:
            reference.update(key, values, indices)
        reference.reduce()
        computed = (reference.mean(key), reference.std(key), reference.banks[key])
        torch.save((*computed, reference.partners(key, torch.arange(6))), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("deal", ["round-robin", "one-rank-sees-nothing"])
def test_reference_statistics_are_the_same_on_one_or_two_processes(deal: str) -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 4, 8, generator=generator), torch.arange(start, start + n))
               for start, n in ((0, 3), (3, 2), (5, 4), (9, 1))]  # fmt: skip
    single = ReferenceStatistics(bank_size=3)
    key = ReferenceKey("model", "register", 1)
    for values, indices in reversed(batches):  # another order: the same bank
        single.update(key, values, indices)
    everything = torch.cat([values for values, _ in batches]).double()
    assert_close(single.mean(key), everything.mean(0).float())
    assert_close(single.std(key), everything.std(0, unbiased=False).float())
    expected = (single.mean(key), single.std(key), single.banks[key], single.partners(key, torch.arange(6)))
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(
            _reference_worker, args=(folder, batches, deal), nprocs=2, join=True, start_method="spawn"
        )
        for rank in range(2):
            got = torch.load(Path(folder) / f"rank{rank}.pt", weights_only=False)
            assert_close(got[0], expected[0])
            assert_close(got[1], expected[1])
            for part, want in zip(got[2], expected[2], strict=True):
                assert torch.equal(part, want)
            assert torch.equal(got[3], expected[3])


def test_reference_mismatch_and_missing_statistics_are_named(pixels: Tensor) -> None:
    backbone = DecomposingBackbone.from_model(FAMILIES["dinov2"]())
    intervention = Intervention(("patch",), (3,), "mean")
    with pytest.raises(ValueError, match="reads reference statistics"):
        backbone(pixels, extras=[intervention])
    reference = ReferenceStatistics(bank_size=2)
    record_reference(backbone, torch.randn(2, 3, 32, 32), torch.arange(2), [intervention], reference)
    with pytest.raises(ValueError, match=r"another resolution"):
        backbone(pixels, extras=[intervention.using(reference)])


@torch.no_grad()
def test_deletion_runs_under_a_model_level_intervention(pixels: Tensor) -> None:
    """Under `cls+register@2:zero`, the deletion passes order the patches by the intervened pass's own
    attention map and compare with its own output; checked against the model's own blocks run on the
    embeddings with those patches removed and a pre-hook zeroing [CLS] and the registers at block 2."""
    backbone = DecomposingBackbone.from_model(FAMILIES["dinov2"]())
    intervention = Intervention(("cls", "register"), (2,), "zero")
    deletion = Deletion((0.25, 0.5))
    decomposition = backbone(pixels, torch.arange(4), extras=[deletion, intervention.running([deletion])])
    under = decomposition.pass_of(intervention.name)
    layout = backbone.layout_for(pixels)
    top = under["map/attention"].flatten(1).argsort(dim=1, descending=True, stable=True)

    def zero_cls_and_registers(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        tokens = inputs[0].clone()
        tokens[:, : 1 + layout.num_registers] = 0
        return (tokens,)

    handle = backbone.family.blocks[1].register_forward_pre_hook(zero_cls_and_registers)
    try:
        embeddings = backbone.family.embed(pixels)
        for column, fraction in enumerate((0.25, 0.5)):
            kept = top[:, round(fraction * layout.num_patches) :].sort(dim=1).values + layout.num_prefix
            rows = torch.cat([torch.arange(layout.num_prefix).expand(len(pixels), -1), kept], dim=1)
            tokens = embeddings.gather(1, rows.unsqueeze(-1).expand(-1, -1, embeddings.shape[-1]))
            pooled = backbone.family.final_norm(backbone.family.encode(tokens, layout)[:, 0])
            expected = nn.functional.cosine_similarity(pooled, under["output/full"], dim=-1)
            assert_close(under["deletion/top"][:, column], expected, rtol=0, atol=1e-6)
    finally:
        handle.remove()
    # the clean curves are the clean pass's; a patch intervention cannot run them (its rows are deleted)
    assert not torch.equal(decomposition["deletion/top"], under["deletion/top"])
    patch = Intervention(("patch",), (2,), "zero")
    with pytest.raises(ValueError, match="deletion passes cannot run under it"):
        backbone(pixels, torch.arange(4), extras=[patch.running([deletion])])
