"""Backbones side by side: two tiny models (with and without registers) in one command, or their folders."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cls_decoupling.cli import evaluate
from tests.conftest import tiny_model, write_labelled_photos
from tests.families import FAMILY_FOLDERS, save_family_models

COMPARISON_FIGURES = {
    "compare_split.png", "compare_registers.png", "compare_cka.png", "compare_cka_debiased.png",
    "compare_oneshot.png", "compare_linear.png", "compare_faithfulness.png", "compare_norms.png",
    "compare_layerwise.png", "compare_depth.png", "compare_cka_models.png", "compare_heads.png",
}  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`--backbone with-registers without-registers` on 12 labelled photos, every probe, every block
    decomposed, features saved."""
    root = tmp_path_factory.mktemp("sweep")
    tiny_model(registers=4, hidden=32, layers=2, heads=2, patch=14, image=56).save_pretrained(root / "reg4")
    tiny_model(registers=0, hidden=48, layers=3, heads=2, patch=14, image=56, swiglu=True).save_pretrained(
        root / "plain"
    )
    write_labelled_photos(root / "photos", per_class=4)
    argv = [
        "--backbone", str(root / "reg4"), str(root / "plain"), "--data", "folder", "--data-dir",
        str(root / "photos"), "--probe", "all", "--output", str(root / "out"), "--resolution", "56",
        "--batch-size", "4", "--num-workers", "0", "--layers", "all", "--save-features",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    return root / "out"


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_each_backbone_gets_a_full_run_folder(sweep: Path) -> None:
    for label, registers in (("reg4", 4), ("plain", 0)):
        summary = json.loads((sweep / label / "results.json").read_text())
        assert summary["backbone"]["num_registers"] == registers and summary["data"]["num_images"] == 12
        assert (sweep / label / "report.md").is_file() and (sweep / label / "figures" / "maps.png").is_file()


def test_table_has_one_row_per_backbone_with_every_scalar(sweep: Path) -> None:
    rows = read_table(sweep / "comparison.csv")
    assert [row["run"] for row in rows] == ["reg4", "plain"]
    for row in rows:
        summary = json.loads((sweep / row["run"] / "results.json").read_text())
        for name, value in summary["results"].items():
            assert float(row[name]) == value, name  # repr round-trips floats exactly
    assert rows[0]["cka/output/register"] != "" and rows[1]["cka/output/register"] == ""  # no registers
    markdown = (sweep / "comparison.md").read_text()
    tables = [block for block in markdown.split("\n## ") if block.splitlines()[0] in ("split", "cka", "maps")]
    assert len(tables) == 3
    for table in tables:  # header, rule, one row per backbone
        body = [line for line in table.splitlines() if line.startswith("|")]
        assert len(body) == 4 and body[2].startswith("| reg4 |") and body[3].startswith("| plain |")


def test_cross_model_figures_are_valid_pngs_and_in_tensorboard(sweep: Path) -> None:
    assert {path.name for path in (sweep / "figures").iterdir()} == COMPARISON_FIGURES
    for name in COMPARISON_FIGURES:
        with Image.open(sweep / "figures" / name) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 300
        assert f"(figures/{name})" in (sweep / "comparison.md").read_text()
    accumulator = EventAccumulator(str(sweep / "comparison"))
    accumulator.Reload()
    assert {f"figures/{Path(name).stem}" for name in COMPARISON_FIGURES} <= set(accumulator.Tags()["images"])
    assert "backbones/text_summary" in accumulator.Tags()["tensors"]  # step -> backbone, in words
    steps = [event.step for event in accumulator.Scalars("cka/output/patch")]
    assert steps == [0, 1]  # one point per backbone, in the order given: a sweep over models


def test_compare_over_run_folders_gives_the_same_table(sweep: Path, tmp_path: Path) -> None:
    argv = ["--compare", str(sweep / "reg4"), str(sweep / "plain"), "--output", str(tmp_path / "again")]
    assert evaluate.main(argv) == 0
    assert (tmp_path / "again" / "comparison.csv").read_text() == (sweep / "comparison.csv").read_text()
    assert {path.name for path in (tmp_path / "again" / "figures").iterdir()} == COMPARISON_FIGURES


def test_a_comparison_is_not_overwritten(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (sweep / "comparison.csv").read_text()
    argv = ["--compare", str(sweep / "reg4"), str(sweep / "plain"), "--output", str(sweep)]
    assert evaluate.main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (sweep / "comparison.csv").read_text() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--compare", "RUN"], "at least two runs"),
        (["--compare", "RUN", "NOWHERE"], "not a run folder"),
        (["--backbone", "random:tiny", "random:tiny"], "each backbone once"),
        (["--compare", "RUN", "RUN", "--backbone", "random:tiny"], "takes no --backbone"),
    ],
    ids=["one-run", "not-a-run", "same-backbone-twice", "compare-and-backbone"],
)
def test_bad_comparisons_are_one_line_errors(
    argv: list[str], message: str, sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        str(sweep / "reg4") if arg == "RUN" else str(tmp_path / arg) if arg == "NOWHERE" else arg
        for arg in argv
    ]
    assert evaluate.main([*argv, "--output", str(tmp_path / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


def test_runs_in_folders_of_the_same_name_keep_their_paths_as_labels(sweep: Path, tmp_path: Path) -> None:
    for side, label in (("a", "reg4"), ("b", "plain")):
        shutil.copytree(sweep / label, tmp_path / side / "run")
    argv = [
        "--compare",
        str(tmp_path / "a" / "run"),
        str(tmp_path / "b" / "run"),
        "--output",
        str(tmp_path / "c"),
    ]
    assert evaluate.main(argv) == 0
    rows = read_table(tmp_path / "c" / "comparison.csv")
    assert [row["run"] for row in rows] == [str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")]


def test_model_cka_is_the_cka_of_the_saved_outputs(
    sweep: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """compare_cka_models.png holds linear_cka of output/full of the two runs on the same images; runs
    on other images leave it out with one log line."""
    from cls_decoupling.outputs.compare import Compared, model_cka
    from cls_decoupling.outputs.runs import load_run
    from tests.probes.metrics.test_cka import debiased_gram_cka, gram_linear_cka

    runs = [Compared(name, load_run(sweep / name)) for name in ("reg4", "plain")]
    found = model_cka(runs)
    assert found is not None
    labels, matrices = found
    assert labels == ["reg4", "plain"]
    first, second = (
        load_file(str(sweep / name / "features.safetensors"))["output/full"].astype("float64")
        for name in labels
    )
    assert matrices["cka"][0, 1] == pytest.approx(gram_linear_cka(first, second), rel=1e-9)
    assert matrices["cka_debiased"][0, 1] == pytest.approx(
        debiased_gram_cka(first, second), rel=1e-6, abs=1e-9
    )
    assert matrices["cka"][1, 0] == matrices["cka"][0, 1] and matrices["cka"][0, 0] == 1.0
    shrunk = tmp_path / "fewer"
    shutil.copytree(sweep / "plain", shrunk)
    features = load_file(str(shrunk / "features.safetensors"))
    save_file({name: array[:-1] for name, array in features.items()}, str(shrunk / "features.safetensors"))
    with caplog.at_level("WARNING"):
        assert model_cka([runs[0], Compared("fewer", load_run(shrunk))]) is None
    assert "evaluated other images" in caplog.text


def test_a_comparison_across_families(tmp_path: Path) -> None:
    """One random model of every family in one command: each run records its family and is exact
    (pooler error), the comparison has a row each, and the per-layer figures put every model on one
    relative-depth axis."""
    paths = save_family_models(tmp_path / "models")
    argv = [
        "--backbone", *map(str, paths.values()), "--data", "demo",
        "--probe", "split,cka,norms,layerwise,depth", "--layers", "all", "--output", str(tmp_path / "out"),
        "--resolution", "56", "--batch-size", "8", "--num-workers", "0",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    rows = read_table(tmp_path / "out" / "comparison.csv")
    assert [row["run"] for row in rows] == list(FAMILY_FOLDERS)
    for label, family in FAMILY_FOLDERS.items():
        summary = json.loads((tmp_path / "out" / label / "results.json").read_text())
        assert summary["backbone"]["family"] == family, label
        assert summary["run"]["max_pooler_error"] < 1e-4, label
        groups = ("cls", "distillation", "register", "patch")
        shares = [summary["results"].get(f"split/{g}/mean", 0.0) for g in groups]
        assert abs(sum(shares) - 1) < 1e-5, label
    clip = json.loads((tmp_path / "out" / "clip" / "results.json").read_text())["results"]
    assert "cka/projection/patch" in clip and rows[2]["cka/projection/patch"] != ""
    deit = json.loads((tmp_path / "out" / "deit" / "results.json").read_text())["results"]
    assert deit["split/distillation/mean"] > 0 and "cka/output/distillation" in deit
    assert rows[0]["split/distillation/mean"] == ""  # only the distilled DeiT has the group
    assert rows[0]["cka/projection/patch"] == ""  # only CLIP has the projection readout
    overview = (tmp_path / "out" / "comparison.md").read_text()
    assert "| clip | " in overview and " | clip | 16 | demo |" in overview  # run, backbone, family, ...
    for name in ("compare_split.png", "compare_cka.png", "compare_layerwise.png", "compare_depth.png"):
        assert (tmp_path / "out" / "figures" / name).is_file(), name
