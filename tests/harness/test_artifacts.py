"""The patch group split by norm (`--artifact-threshold`, docs/design.md#artifacts): a model built so
that one patch is huge in the last block's input has that patch as its artifact group, with the
share and contribution a hand computation gives; a threshold above every norm changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.extras import Intervention
from tests.conftest import scaled, tiny_model

BRIGHT = 7  # the sequence position made huge: a patch (after [CLS] and 2 registers)


@contextmanager
def bright_patch(backbone: DecomposingBackbone, factor: float = 60.0) -> Iterator[None]:
    """The model with patch `BRIGHT` scaled by `factor` as it enters the last block (a pre-hook: part
    of the model's own forward while it lasts)."""

    def scale(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        tokens = inputs[0].clone()
        tokens[:, BRIGHT] *= factor
        return (tokens, *inputs[1:])

    handle = backbone.family.blocks[-1].register_forward_pre_hook(scale)
    try:
        yield
    finally:
        handle.remove()


def last_input(backbone: DecomposingBackbone, pixels: Tensor) -> Tensor:
    kept: list[Tensor] = []
    handle = backbone.family.blocks[-1].register_forward_pre_hook(lambda m, inputs: kept.append(inputs[0]))
    try:
        backbone.family.pooled(pixels)
    finally:
        handle.remove()
    return kept[-1].float()


@pytest.fixture
def backbone() -> DecomposingBackbone:
    return DecomposingBackbone.from_model(tiny_model(registers=2, layers=2, patch=8, image=32))


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_a_huge_patch_is_the_artifact_group_with_its_hand_computed_share_and_term(
    backbone: DecomposingBackbone, pixels: Tensor
) -> None:
    with bright_patch(backbone):
        tokens = last_input(backbone, pixels)
        norms = tokens.norm(dim=-1)
        others = torch.cat([norms[:, 1:BRIGHT], norms[:, BRIGHT + 1 :]], dim=1)
        assert norms[:, BRIGHT].min() > 10 * others.max()  # the test can fail: the patch stands out
        threshold = float(others.max() * 3)
        decomposition = backbone.with_artifacts(threshold)(pixels)
    assert decomposition["artifact/count"].tolist() == [1.0, 1.0, 1.0]
    # by hand, from the last block's own modules: the [CLS] query's softmax and the bright patch's value
    block = backbone.last_block
    attention = block.attention
    heads, width = attention.num_attention_heads, attention.head_dim
    normed = block.norm1(tokens)
    query = attention.q_proj(normed[:, :1]).view(-1, 1, heads, width).transpose(1, 2)
    keys = attention.k_proj(normed).view(-1, normed.shape[1], heads, width).transpose(1, 2)
    values = attention.v_proj(normed).view(-1, normed.shape[1], heads, width).transpose(1, 2)
    weights = ((query @ keys.transpose(-1, -2)) * attention.scaling).softmax(dim=-1)[:, :, 0]  # b, h, t
    assert_close(decomposition["split/artifact"], weights[:, :, BRIGHT].mean(dim=1), rtol=1e-5, atol=1e-7)
    written = (weights[:, :, BRIGHT, None] * values[:, :, BRIGHT]).flatten(1)  # heads side by side
    term = block.layer_scale1.lambda1 * (attention.o_proj(written))  # gamma1 (W_o s + b_o)
    assert_close(decomposition["attention/artifact"], term, **scaled(term))
    # the two parts of the patch group: their terms add up to the patches' (the bias once)
    bias = block.layer_scale1.lambda1 * attention.o_proj.bias
    parts = decomposition["attention/artifact"] + decomposition["attention/ordinary"] - bias
    assert_close(parts, decomposition["attention/patch"], **scaled(parts))
    patches = weights[:, :, backbone.layout_for(pixels).slice("patch")].sum(-1).mean(1)
    assert_close(decomposition["split/patch"], patches, rtol=1e-5, atol=1e-6)  # of which the artifact's
    assert (decomposition["output/artifact"] - decomposition["output/ordinary"]).abs().max() > 1e-3


@torch.no_grad()
def test_a_threshold_above_every_norm_splits_nothing_off_and_changes_nothing(
    backbone: DecomposingBackbone, pixels: Tensor
) -> None:
    clean = backbone(pixels)
    split = backbone.with_artifacts(1e9)(pixels)
    assert split["artifact/count"].sum() == 0 and split["split/artifact"].abs().max() == 0
    for name in clean:
        assert torch.equal(clean[name], split[name]), name
    assert_close(split["attention/ordinary"], split["attention/patch"])
    variants = {
        f"{readout}/{group}{end}"
        for readout in ("attention", "output")
        for group in ("artifact", "ordinary")
        for end in ("", "_renorm")
    }
    assert set(split) - set(clean) == {"artifact/count", "split/artifact", *variants}


@torch.no_grad()
def test_a_pooled_model_splits_the_tokens_its_head_reads() -> None:
    from tests.harness.test_pooled import tiny_siglip

    backbone = DecomposingBackbone.from_model(tiny_siglip())
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    norms = last_input(backbone, pixels).norm(dim=-1)
    threshold = float(norms.median())
    decomposition = backbone.with_artifacts(threshold)(pixels)
    assert decomposition["artifact/count"].tolist() == (norms > threshold).sum(dim=1).float().tolist()
    bias = backbone.read_view.attention.o_proj.bias
    parts = decomposition["attention/artifact"] + decomposition["attention/ordinary"] - bias
    assert_close(parts, decomposition["attention/full"], **scaled(parts))  # SigLIP: every token a patch
    assert 0 < decomposition["split/artifact"].min() < 1


@torch.no_grad()
def test_zeroing_the_artifacts_is_the_models_own_forward_without_them(
    backbone: DecomposingBackbone, pixels: Tensor
) -> None:
    with bright_patch(backbone):
        norms = last_input(backbone, pixels).norm(dim=-1)
        threshold = float(norms[:, BRIGHT].min() / 2)
        split = backbone.with_artifacts(threshold)
        intervention = Intervention(("artifact",), (2,), "zero")
        got = split(pixels, extras=[intervention]).pass_of(intervention.name)["output/full"]
        clean = split.family.pooled(pixels)

        def zeroed(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            tokens = inputs[0].clone()
            tokens[:, BRIGHT] = 0
            return (tokens, *inputs[1:])

        handle = split.family.blocks[-1].register_forward_pre_hook(zeroed)  # after the bright patch's hook
        try:
            expected = split.family.pooled(pixels)
        finally:
            handle.remove()
    assert_close(got, expected, **scaled(expected))
    assert (got - clean).abs().max() > 1e-4 * clean.abs().max()  # it does something


def test_the_artifact_target_needs_a_threshold_and_is_zeroed_only(backbone: DecomposingBackbone) -> None:
    pixels = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="add --artifact-threshold"):
        backbone(pixels, extras=[Intervention(("artifact",), (2,), "zero")])
    split = backbone.with_artifacts(10.0)
    with pytest.raises(ValueError, match="zeroed only"):
        split(pixels, extras=[Intervention(("artifact",), (2,), "knockout")])
    with pytest.raises(ValueError, match="not a target of the readout level"):
        Intervention(("artifact",), (2,), "zero", "readout")
    with pytest.raises(ValueError, match="norm above 0"):
        backbone.with_artifacts(float("nan"))


def test_the_command_line_records_the_threshold_and_names_the_runs_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cls_decoupling.cli import evaluate

    common = ["--data", "demo", "--limit", "4", "--resolution", "28", "--num-workers", "0",
              "--probe", "split,cka"]  # fmt: skip
    wrong = ["--backbone", "random:tiny", "--artifact-threshold", "1", "2", "--output", str(tmp_path / "no")]
    assert evaluate.main([*common, *wrong]) == 2
    assert "one per backbone (1); got 2" in capsys.readouterr().err
    both = ["--backbone", "random:tiny", "random:tiny_reg", "--artifact-threshold", "0", "40",
            "--intervene", "artifact@last:zero", "--output", str(tmp_path / "both")]  # fmt: skip
    assert evaluate.main([*common, *both]) == 0
    runs = sorted(path.name for path in (tmp_path / "both").iterdir() if (path / "results.json").exists())
    assert runs == ["random_tiny", "random_tiny_reg_art40"]
    plain = json.loads((tmp_path / "both" / "random_tiny" / "results.json").read_text())
    split = json.loads((tmp_path / "both" / "random_tiny_reg_art40" / "results.json").read_text())
    assert "artifact_threshold" not in plain["backbone"] and split["backbone"]["artifact_threshold"] == 40
    assert "split/artifact/mean" in split["results"] and "cka/output/artifact" in split["results"]
    assert "intervened/model/artifact@last/zero/cosine_to_clean" in split["results"]
    assert plain["run"]["skipped_interventions"]  # no threshold: the target is skipped, and said
