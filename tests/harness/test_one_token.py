"""One register or one token position as an intervention target: at every level and mode, the single
registers together act as the whole register group (zero, knockout, and readout terms summing to
the group's), a token position is the register at that position, and a register or position the
model lacks is refused in one line (a model without registers skips it, as it skips `register`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.extras import AbsentTargetError, Intervention, ReferenceStatistics, parse_intervention
from harness.extras.interventions.levels import readout_terms
from harness.extras.interventions.recording import record_reference
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_timm
from tests.harness.test_interventions import own_forward_with_rows_replaced, scaled

REGISTERS = 3


@pytest.fixture(scope="module")
def backbone() -> DecomposingBackbone:
    return DecomposingBackbone.from_model(tiny_model(registers=REGISTERS, layers=3))


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(4, 3, 32, 40, generator=torch.Generator().manual_seed(5))


def each_register() -> tuple[str, ...]:
    return tuple(f"register{n}" for n in range(1, REGISTERS + 1))


def test_names_round_trip() -> None:
    intervention = parse_intervention("register3+token0@last:zero:readout", 12)
    assert intervention.name == "readout/register3+token0@last/zero"
    assert Intervention.from_name(intervention.name, 12) == intervention
    assert Intervention.from_name(intervention.name, 12).blocks == (12,)
    with pytest.raises(ValueError, match="needs the model's number of blocks"):
        Intervention.from_name(intervention.name)
    with pytest.raises(ValueError, match="unknown intervention target"):
        parse_intervention("registers3@last:zero", 12)


@pytest.mark.parametrize("level", ["model", "readout"])
@pytest.mark.parametrize("mode", ["zero", "knockout"])
@torch.no_grad()
def test_the_single_registers_together_are_the_register_group(
    backbone: DecomposingBackbone, pixels: Tensor, level: str, mode: str
) -> None:
    for block in (2, 3):  # with [CLS] too, so that the pass surely moves
        one_by_one = Intervention((*each_register(), "cls"), (block,), mode, level)
        whole = Intervention(("register", "cls"), (block,), mode, level)
        got = backbone(pixels, extras=[one_by_one, whole])
        expected = got.pass_of(whole.name)["output/full"]
        assert_close(got.pass_of(one_by_one.name)["output/full"], expected, **scaled(expected))
        assert (expected - got["output/full"]).abs().max() > 1e-4 * expected.abs().max()  # it acts


@torch.no_grad()
def test_one_register_and_its_position_are_the_models_own_forward_with_that_row_zeroed(
    backbone: DecomposingBackbone, pixels: Tensor
) -> None:
    """`register2` at model level, against a pre-hook on the model's own block; `token2` is the same
    token (position 2: [CLS], register1, register2)."""
    second = own_forward_with_rows_replaced(  # the register rows, the second of them zeroed
        backbone, pixels, 1, "register", lambda rows: rows.index_fill(1, torch.tensor([1]), 0.0)
    )
    for target in ("register2", "token2"):
        intervention = Intervention((target,), (1,), "zero")
        got = backbone(pixels, extras=[intervention]).pass_of(intervention.name)["output/full"]
        assert_close(got, second, **scaled(second))


@torch.no_grad()
def test_readout_terms_of_single_tokens_sum_to_their_group(
    backbone: DecomposingBackbone, pixels: Tensor
) -> None:
    capture = backbone.capture(pixels)
    tokens = [f"token{p}" for p in range(capture.layout.num_tokens)]
    terms = readout_terms(
        backbone.last_block, capture.block_input, capture.keys, capture.values, capture.layout,
        (*each_register(), *tokens),
    )  # fmt: skip
    largest = max(float(terms[group].abs().max()) for group in ("cls", "register", "patch"))
    for group in ("cls", "register", "patch"):  # to rounding against the update's largest term
        span = capture.layout.slice(group)
        total = sum(terms[f"token{p}"] for p in range(span.start, span.stop))
        assert_close(total, terms[group], atol=1e-5 * largest, rtol=1e-5)
    for n, register in enumerate(each_register()):
        assert_close(terms[register], terms[f"token{capture.layout.slice('register').start + n}"])


@pytest.mark.parametrize("mode", ["mean", "shuffle", "noise"])
@torch.no_grad()
def test_reference_modes_read_one_registers_own_statistics(
    backbone: DecomposingBackbone, pixels: Tensor, mode: str
) -> None:
    """A mode that reads a reference records the single register's rows (1 row per image) and runs."""
    intervention = Intervention(("register1",), (2,), mode)
    statistics = ReferenceStatistics(bank_size=4)
    record_reference(backbone, pixels, torch.arange(4), [intervention], statistics)
    key = intervention.reference_keys()[0]
    assert statistics.mean(key).shape == (1, backbone.info.hidden_size)
    got = backbone(pixels, torch.arange(4), extras=[intervention.using(statistics)])
    assert torch.isfinite(got.pass_of(intervention.name)["output/full"]).all()


def test_a_register_or_position_the_model_lacks_is_refused(
    backbone: DecomposingBackbone, pixels: Tensor
) -> None:
    with pytest.raises(ValueError, match=r"this model has registers 1\.\.3"):
        parse_intervention("register4@last:zero", 3).check_model(backbone.info)
    with pytest.raises(ValueError, match=r"token90: the sequence has positions 0\.\.83 at this image size"):
        backbone(pixels, extras=[parse_intervention("token90@last:zero", 3)])
    no_registers = DecomposingBackbone.from_model(tiny_timm())
    with pytest.raises(AbsentTargetError, match="no register1 tokens"):
        parse_intervention("register1@last:zero", no_registers.info.num_layers).check_model(no_registers.info)


def test_the_command_line_refuses_a_position_beyond_the_sequence_before_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cls_decoupling.cli import evaluate

    argv = ["--backbone", "random:tiny", "--data", "demo", "--limit", "2", "--resolution", "56",
            "--num-workers", "0", "--probe", "split", "--output", str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main([*argv, "--intervene", "token17@last:zero"]) == 2
    assert "token17: the sequence has positions 0..16 at this image size" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
