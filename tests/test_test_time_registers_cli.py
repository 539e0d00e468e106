"""`--test-time-registers` end to end: one command runs a model without registers, the same model with
a test-time register and a model with trained registers, and compares them; the register neurons are
searched over the reference images (the run records them, and they are the neurons a search written
here finds) or given; what cannot run is refused in one line before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cls_decoupling.cli import evaluate
from harness import load_backbone
from harness.extras import NeuronScores, RegisterNeurons, neurons_by_block, ranked_neurons
from tests.conftest import write_photos

COMMON = ["--resolution", "56", "--batch-size", "4", "--num-workers", "0", "--limit", "6"]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ttr-photos")
    write_photos(folder, 6)
    return folder


def test_one_command_compares_no_test_time_and_trained_registers(photo_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "compare"
    argv = [
        "--backbone", "random:tiny", "random:tiny", "random:tiny_reg", "--test-time-registers", "0", "1", "0",
        "--neuron-threshold", "4", "--neuron-top-k", "5", "--data", "folder", "--data-dir", str(photo_dir),
        "--probe", "split,norms,heads,register_neurons", "--output", str(output), *COMMON,
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    runs = {name: json.loads((output / name / "results.json").read_text()) for name in
            ("random_tiny", "random_tiny_ttr1", "random_tiny_reg")}  # fmt: skip
    assert [runs[name]["backbone"]["num_registers"] for name in runs] == [0, 1, 4]
    assert runs["random_tiny_ttr1"]["backbone"]["test_time_registers"] == 1
    assert "test_time_registers" not in runs["random_tiny"]["run"]
    assert runs["random_tiny_ttr1"]["results"]["split/register/mean"] > 0
    assert runs["random_tiny"]["results"]["split/register/mean"] == 0
    record = runs["random_tiny_ttr1"]["run"]["test_time_registers"]
    assert record["found_by"] == "search" and record["reference"]["num_images"] == 6
    assert (record["threshold"], record["detection_block"], record["max_block"]) == (4.0, 1, 2)

    # the same search written here over the same images, as the run prepared them
    backbone = load_backbone("random:tiny")
    from datamodules import ImageDataModule

    data = ImageDataModule(source="folder", data_dir=photo_dir, resolution=56, batch_size=6, num_workers=0)
    data.preprocessing = backbone.info.preprocessing
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    search = RegisterNeurons(4.0, 1, 2)
    with torch.no_grad():
        found = backbone(batch["pixels"], extras=[search])
    scores = NeuronScores(2, backbone.info.mlp_size)
    scores.update(found["register_neurons/scores"], found["register_neurons/outliers"])
    ranked = ranked_neurons(scores.compute()["scores"], 5)
    assert record["neurons"] == {str(b): list(n) for b, n in neurons_by_block(ranked).items()}
    assert [item[:2] for item in record["ranked"]] == [[item.block, item.neuron] for item in ranked]
    assert (output / "comparison.csv").exists()
    # the probe's search on the evaluated images is the same search: the same top neurons
    probed = runs["random_tiny"]["results"]
    assert (probed["register_neurons/top_block"], probed["register_neurons/top_neuron"]) == (
        ranked[0].block,
        ranked[0].neuron,
    )
    assert (output / "random_tiny" / "figures" / "register_neurons.png").stat().st_size > 0


def test_given_register_neurons_are_used_as_given(photo_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "given"
    argv = [
        "--backbone", "random:tiny", "--test-time-registers", "2", "--register-neurons", "2:7,3;1:250",
        "--probe", "split,register_neurons", "--neuron-threshold", "4",  # the probe's own search
        "--data", "folder", "--data-dir", str(photo_dir), "--output", str(output), *COMMON,
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    run = json.loads((output / "results.json").read_text())
    assert run["run"]["test_time_registers"] == {
        "count": 2,
        "found_by": "given",
        "neurons": {"1": [250], "2": [3, 7]},
    }
    assert run["backbone"]["num_registers"] == 2
    assert run["results"]["register_neurons/threshold"] == 4.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--test-time-registers", "1", "1"], "one number, or one per backbone (1)"),
        (["--test-time-registers", "-1"], "0 or more"),
        (["--neuron-threshold", "3"], "add one"),
        (["--register-neurons", "1:3"], "--register-neurons gives the neurons of --test-time-registers"),
        (["--probe", "register_neurons"], "publish no norm threshold"),
        (["--test-time-registers", "1", "--register-neurons", "a:1"], "write BLOCK:I,J;BLOCK:K"),
        (["--test-time-registers", "1", "--register-neurons", "1:3", "--neuron-top-k", "3"], "do not apply"),
        (["--test-time-registers", "1", "--register-neurons", "9:3"], "the model has blocks 1..2"),
        (["--test-time-registers", "1"], "publish no norm threshold for random:tiny"),
        (["--test-time-registers", "1", "--neuron-threshold", "1e9"], "no token's norm exceeds 1e+09"),
        (["--test-time-registers", "1", "--neuron-threshold", "-1"], "a positive number, got -1.0"),
        (["--probe", "register_neurons", "--neuron-threshold", "nan"], "a positive number, got nan"),
        (["--test-time-registers", "1", "--register-neurons", "1:3", "--neuron-sparse"], "do not apply"),
    ],
    ids=[
        "counts",
        "negative",
        "no-registers",
        "given-alone",
        "probe-threshold",
        "syntax",
        "both",
        "block",
        "threshold",
        "no-outliers",
        "negative-threshold",
        "nan-threshold",
        "given-sparse",
    ],
)
def test_what_cannot_run_is_one_line(
    extra: list[str], message: str, photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--backbone", "random:tiny", "--data", "folder", "--data-dir", str(photo_dir), "--probe", "split",
            "--output", str(tmp_path / "run"), *COMMON, *extra]  # fmt: skip
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not (tmp_path / "run" / "results.json").exists()
