"""The interventions probe against numpy (cosine, relative change, CKA, split shift), the wrapper that
reads a label probe again on an intervened pass, and a run with interventions end to end (results,
figure, report lines, results.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
from harness import BackboneInfo, Decomposition, TokenLayout
from harness.extras import Intervention
from probes import build_probes
from probes.base import ProbeContext
from probes.interventions import Intervened, InterventionsProbe
from probes.oneshot import OneShotProbe
from tests.conftest import tiny_model, write_labelled_photos
from tests.probes.metrics.test_cka import gram_linear_cka

INFO = BackboneInfo("tiny", "random", "", 8, 2, 1, 0, 4, False, True)
MEAN = Intervention(("patch",), (2,), "mean")
ZERO = Intervention(("cls", "skip"), (2,), "zero", "readout")


def batches(count: int = 3, size: int = 7) -> list[Decomposition]:
    """Clean entries and the passes under MEAN and ZERO (ZERO's: readout at the last block, no split)."""
    generator = torch.Generator().manual_seed(0)
    layout, error = TokenLayout.for_image(8, 8, 4, 0), torch.zeros(())
    out = []
    for _ in range(count):
        clean = torch.randn(size, 8, generator=generator)
        split = torch.rand(size, generator=generator)
        mean = {
            "output/full": clean + 0.3 * torch.randn(size, 8, generator=generator),
            "split/cls": split * 0.5, "split/register": torch.zeros(size), "split/patch": 1 - split * 0.5,
        }  # fmt: skip
        zero = {"output/full": torch.randn(size, 8, generator=generator)}
        passes = {
            MEAN.name: Decomposition(mean, layout, error),
            ZERO.name: Decomposition(zero, layout, error),
        }
        entries = {"output/full": clean, "split/cls": split, "split/register": torch.zeros(size),
                   "split/patch": 1 - split}  # fmt: skip
        out.append(Decomposition(entries, layout, error, passes))
    return out


def test_what_each_intervention_does_to_the_output_equals_numpy() -> None:
    probe = InterventionsProbe.from_context(ProbeContext(INFO, interventions=(MEAN, ZERO)))
    data = batches()
    for batch in data:
        probe.update(batch, torch.full((7,), -1), torch.arange(7))
    results = probe.compute()
    clean = np.concatenate([b["output/full"].numpy() for b in data]).astype(np.float64)
    for intervention in (MEAN, ZERO):
        prefix = intervention.prefix
        moved = np.concatenate([b.pass_of(intervention.name)["output/full"].numpy() for b in data])
        moved = moved.astype(np.float64)
        cosine = (clean * moved).sum(1) / np.linalg.norm(clean, axis=1) / np.linalg.norm(moved, axis=1)
        change = np.linalg.norm(moved - clean, axis=1) / np.linalg.norm(clean, axis=1)
        assert results[prefix + "cosine_to_clean"] == pytest.approx(cosine.mean(), rel=1e-5)
        assert results[prefix + "cosine_to_clean_std"] == pytest.approx(cosine.std(ddof=0), rel=1e-4)
        assert results[prefix + "relative_change"] == pytest.approx(change.mean(), rel=1e-5)
        assert results[prefix + "cka_to_clean"] == pytest.approx(gram_linear_cka(clean, moved), rel=1e-4)
    shift = np.concatenate([(b.pass_of(MEAN.name)["split/cls"] - b["split/cls"]).numpy() for b in data])
    assert results[MEAN.prefix + "split_shift/cls"] == pytest.approx(shift.mean(), rel=1e-5)
    assert ZERO.prefix + "split_shift/cls" not in results  # that pass reports no split


def test_a_label_probe_reads_the_intervened_pass_under_its_prefix() -> None:
    """The wrapped one-shot probe on the intervened entries equals a plain one-shot probe fed the
    intervened outputs under their clean names; its results carry the intervention's prefix."""
    labels = torch.arange(21) % 3
    context = ProbeContext(INFO, class_names=("a", "b", "c"), episodes=3, interventions=(ZERO,))
    built = build_probes(["oneshot"], context)
    wrapped = built[f"oneshot@{ZERO.name}"]
    assert isinstance(wrapped, Intervened) and set(built) == {"oneshot", f"oneshot@{ZERO.name}"}
    plain = OneShotProbe.from_context(
        ProbeContext(INFO, ("a", "b", "c"), episodes=3, only_variants=("output/full",))
    )
    for i, batch in enumerate(batches()):
        wrapped.update(batch, labels[7 * i : 7 * i + 7], torch.arange(7 * i, 7 * i + 7))
        plain.update(
            {"output/full": batch.pass_of(ZERO.name)["output/full"]},
            labels[7 * i : 7 * i + 7],
            torch.arange(7 * i, 7 * i + 7),
        )
    expected = {ZERO.prefix + name: value for name, value in plain.compute().items()}
    assert wrapped.compute() == expected
    assert ZERO.prefix + "oneshot/output/full/top1" in expected
    assert not any("output/patch" in name for name in expected)  # that pass reports output/full only


def test_a_run_with_interventions_writes_their_results_figure_and_report(tmp_path: Path) -> None:
    model = tmp_path / "model"
    tiny_model(registers=4, hidden=32, heads=2, layers=3, patch=14, image=56).save_pretrained(model)
    write_labelled_photos(tmp_path / "photos", per_class=4)
    argv = ["--backbone", str(model), "--data", "folder", "--data-dir", str(tmp_path / "photos"),
            "--probe", "oneshot,deletion", "--resolution", "56", "--num-workers", "0", "--batch-size", "5",
            "--intervene", "register@2:shuffle", "register@last:shuffle", "cls+skip@3:zero:readout",
            "distillation@2:zero",
            "--output", str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["run"]["probes"] == ["oneshot", "deletion", "interventions"]
    assert summary["run"]["interventions"] == [
        "model/register@2/shuffle", "model/register@last/shuffle", "readout/cls+skip@3/zero",
    ]  # fmt: skip
    assert summary["run"]["intervention_blocks"]["model/register@last/shuffle"] == [3]
    assert summary["run"]["reference"]["num_images"] == 12
    # a group the model lacks: left out, and why (so one command compares models with and without it)
    assert summary["run"]["skipped_interventions"] == {
        "model/distillation@2/zero": "this model has no distillation tokens"
    }
    results = summary["results"]
    for name in summary["run"]["interventions"]:
        assert -1 <= results[f"intervened/{name}/cosine_to_clean"] <= 1
        assert f"intervened/{name}/oneshot/output/full/top1" in results
    # deletion curves under the model-level interventions (ordered by their own maps), not the readout one
    assert "intervened/model/register@last/shuffle/deletion/area/random_minus_top" in results
    assert not any(name.startswith("intervened/readout/cls+skip@3/zero/deletion/") for name in results)
    for figure in ("interventions.png", "interventions_blocks.png"):  # register/shuffle at blocks 2 and 3
        assert (tmp_path / "run" / "figures" / figure).is_file()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "cosine of output/full under model/register@last/shuffle to the clean one" in report


def test_probes_of_the_decomposition_are_read_again_where_the_pass_reports_one() -> None:
    """split, cka and norms read the last block's decomposition: built again for a model-level
    intervention, not for one that rebuilds the last [CLS] row (it reports output/full only)."""
    context = ProbeContext(INFO, ("a", "b", "c"), interventions=(MEAN, ZERO))
    built = build_probes(["split", "cka", "norms", "oneshot"], context)
    assert set(built) == {
        "split", "cka", "norms", "oneshot",
        f"split@{MEAN.name}", f"cka@{MEAN.name}", f"norms@{MEAN.name}", f"oneshot@{MEAN.name}",
        f"oneshot@{ZERO.name}",
    }  # fmt: skip
    data = batches()
    for batch in data:
        built[f"split@{MEAN.name}"].update(batch, torch.full((7,), -1), torch.arange(7))
    results = built[f"split@{MEAN.name}"].compute()
    expected = np.concatenate([b.pass_of(MEAN.name)["split/cls"].numpy() for b in data])
    assert results[MEAN.prefix + "split/cls/mean"] == pytest.approx(expected.mean(), rel=1e-6)


def test_registers_one_at_a_time_against_all_together_in_the_report() -> None:
    """report.md's table: the joint drop beside the sum and the largest of the single drops, for the
    cosine and the label probes every pass has; nothing for a group without its singles."""
    from types import SimpleNamespace

    from probes.interventions import InterventionsProbe

    names = [
        "model/register1@12/zero",
        "model/register2@12/zero",
        "model/register@12/zero",
        "model/cls@12/zero",
    ]
    cosines = {"model/register1@12/zero": 0.9, "model/register2@12/zero": 0.8, "model/register@12/zero": 0.5,
               "model/cls@12/zero": 0.7}  # fmt: skip
    linear = "linear/output/full/top1"
    results = {linear: 0.75}
    for name, cosine in cosines.items():
        results[f"intervened/{name}/cosine_to_clean"] = cosine
        results[f"intervened/{name}/{linear}"] = {"model/register@12/zero": 0.25}.get(name, 0.7)
    run = SimpleNamespace(results=results, interventions=names, num_layers=12)
    tables = InterventionsProbe.report_tables(run)  # type: ignore[arg-type]
    (header, rows), = tables.values()  # fmt: skip
    assert header[3:] == ("drop together", "sum of single drops", "largest single drop")
    assert [row[:3] for row in rows] == [
        ("model/register@12/zero", 2, "1 - cosine to the clean output/full"),
        ("model/register@12/zero", 2, "linear accuracy drop"),
    ]
    assert rows[0][3:] == pytest.approx((0.5, 0.1 + 0.2, 0.2))
    assert rows[1][3:] == pytest.approx((0.5, 0.1, 0.05))
