"""evaluate.py end to end, offline, on a saved tiny model and a folder of real photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cls_decoupling.cli import evaluate
from harness import variant_names
from probes import parse_probe_names
from tests.conftest import tiny_model, write_labelled_photos, write_photos
from tests.probes.metrics.test_cka import gram_linear_cka

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "tiny-reg"
    tiny_model(registers=4, swiglu=True, hidden=32, heads=2, patch=14, image=56).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder / "nested", 21)
    (folder / "broken.jpg").write_bytes(b"")  # a zero-byte file: skipped and counted, never a crash
    return folder


@pytest.fixture(scope="module")
def finished_run(model_dir: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run") / "out"
    argv = [
        "--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photo_dir),
        "--probe", "cka,split", "--save-features", "--output", str(output),
        "--resolution", "56", "--batch-size", "4", "--num-workers", "0",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    return output


def test_results_describe_the_run(finished_run: Path, model_dir: Path) -> None:
    summary = json.loads((finished_run / "results.json").read_text())
    assert summary["backbone"]["source"] == "folder" and summary["backbone"]["num_registers"] == 4
    assert summary["backbone"]["pos_interpolation"] == "hf"  # transformers' resize for HF folders
    assert summary["data"]["files"] == 22 and summary["data"]["num_images"] == 21
    assert summary["data"]["num_skipped"] == 1 and "broken.jpg" in summary["data"]["skipped"][0]["reason"]
    assert summary["run"]["max_pooler_error"] < 1e-4
    expected = {f"cka/{v}" for v in variant_names(4) if not v.endswith("/full")}
    expected |= {
        f"split/{g}/{s}" for g in ("cls", "register", "patch", "register_vs_patch") for s in ("mean", "std")
    }
    assert set(summary["results"]) == expected


def test_cka_equals_numpy_cka_of_saved_features(finished_run: Path) -> None:
    summary = json.loads((finished_run / "results.json").read_text())
    features = load_file(str(finished_run / "features.safetensors"))
    assert features["index"].tolist() == [i for i in range(22) if i != 0]  # broken.jpg sorts first
    for name, value in summary["results"].items():
        if name.startswith("cka/"):
            variant = name.removeprefix("cka/")
            reference = variant.split("/")[0] + "/full"
            expected = gram_linear_cka(
                features[reference].astype(np.float64), features[variant].astype(np.float64)
            )
            assert value == pytest.approx(expected, abs=1e-6), name


def test_split_equals_numpy_of_saved_features(finished_run: Path) -> None:
    summary = json.loads((finished_run / "results.json").read_text())
    features = load_file(str(finished_run / "features.safetensors"))
    for group in ("cls", "register", "patch"):
        values = features[f"split/{group}"].astype(np.float64)
        assert summary["results"][f"split/{group}/mean"] == pytest.approx(values.mean(), abs=1e-6)
        assert summary["results"][f"split/{group}/std"] == pytest.approx(values.std(), abs=1e-6)


def test_tensorboard_has_every_result(finished_run: Path) -> None:
    summary = json.loads((finished_run / "results.json").read_text())
    tags: set[str] = set()
    for events in (finished_run / "tensorboard").glob("events.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert set(summary["results"]) <= tags


def test_an_earlier_run_is_not_overwritten(
    finished_run: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (finished_run / "results.json").read_text()
    argv = [
        "--backbone",
        str(model_dir),
        "--data",
        "demo",
        "--output",
        str(finished_run),
        "--resolution",
        "56",
    ]
    assert evaluate.main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (finished_run / "results.json").read_text() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--probe", "cka,bogus"], "unknown probe"),
        (["--resolution", "50"], "not a multiple of the patch size 14"),
        (["--data", "folder"], "needs --data-dir"),
        (["--data", "folder", "--data-dir", "/nonexistent/photos"], "does not exist"),
        (["--intervene", "register@last:drop"], "unknown intervention mode 'drop'"),
        (["--intervene", "register@2-40:zero"], "this backbone has blocks 1..2"),
        (["--intervene", "skip@last:zero"], "only the readout level"),
        (["--probe", "interventions"], "add --intervene SPEC"),
        (["--intervene", "cls@1:mean", "--reference-dir", "/tmp"], "add --reference-data"),
        (["--intervene", "cls@1:mean", "--reference-split", "train"], "add --reference-data"),
        (
            [
                "--intervene",
                "cls@1:mean",
                "--reference-data",
                "imagenet",
                "--reference-dir",
                "/usr",
                "--reference-split",
                "validation",
            ],
            "split",
        ),
    ],
    ids=[
        "probe",
        "resolution",
        "no-dir",
        "missing-dir",
        "mode",
        "blocks",
        "skip-level",
        "no-intervention",
        "reference-dir",
        "reference-split",
        "reference-split-value",
    ],
)
def test_bad_options_are_one_line_errors(
    extra: list[str], message: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--backbone", str(model_dir), "--output", str(tmp_path / "run"), *extra]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_earlier_run_folders_inside_the_data_are_not_read_as_images(model_dir: Path, tmp_path: Path) -> None:
    """Issue 23: run folders of this tool inside the data folder (a finished one, an unfinished one
    in a class folder) are left out; the run gives the clean folder's images, classes and numbers."""
    from common.run_folders import COMPLETE_MARKER

    data = tmp_path / "data"
    write_labelled_photos(data, per_class=4)
    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(data),
            "--probe", "split,cka,oneshot,linear", "--resolution", "56", "--batch-size", "4",
            "--num-workers", "0"]  # fmt: skip
    assert evaluate.main([*argv, "--output", str(tmp_path / "clean")]) == 0
    assert len(list((tmp_path / "clean" / "figures").glob("*.png"))) == 4  # images a listing would find
    shutil.copytree(tmp_path / "clean", data / "earlier")
    shutil.copytree(tmp_path / "clean", data / "china" / "unfinished")
    (data / "china" / "unfinished" / COMPLETE_MARKER).unlink()
    assert evaluate.main([*argv, "--output", str(tmp_path / "again")]) == 0
    clean, again = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("clean", "again"))
    assert again["results"] == clean["results"]
    assert again["data"]["num_images"] == clean["data"]["num_images"] == 12
    assert again["data"]["class_names"] == clean["data"]["class_names"] == ["astronaut", "china", "flower"]
    assert again["data"]["skipped_run_folders"] == [str(data / "china" / "unfinished"), str(data / "earlier")]
    assert "skipped_run_folders" not in clean["data"]


def test_two_processes_give_the_single_process_numbers(
    model_dir: Path, photo_dir: Path, tmp_path: Path
) -> None:
    """DDP on 2 CPU processes (gloo): 21 images, which 2 does not divide, each counted once.

    Batch size 1 keeps every image's forward pass bit-identical in both runs (float32 matmuls
    depend slightly on batch composition, and this tiny random model has near-constant
    variants whose CKA amplifies that), so any difference left would be the reduction's.
    """
    photo_dir = tmp_path / "photos"
    write_labelled_photos(photo_dir, per_class=34)
    (photo_dir / "china" / "0.jpg").unlink()  # 101 images
    summaries = []
    for devices in ("1", "2"):
        output = tmp_path / f"devices{devices}"
        command = [
            sys.executable, "evaluate.py", "--backbone", str(model_dir), "--data", "folder",
            "--data-dir", str(photo_dir), "--probe", "all", "--output", str(output), "--resolution", "56",
            "--batch-size", "1", "--num-workers", "0", "--accelerator", "cpu", "--devices", devices,
            "--strategy", "ddp" if devices == "2" else "auto", "--save-features", "--layers", "all",
            "--train-data", "folder", "--train-dir", str(photo_dir),  # every rank holds the whole bank
            "--intervene", "register@last:mean", "patch@1:shuffle", "cls@2:noise:readout",
            "--reference-limit", "20",  # reduced across ranks, the same bank and partners
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        summaries.append(json.loads((output / "results.json").read_text()))
    single, double = summaries
    assert double["run"]["world_size"] == 2
    assert single["data"]["num_images"] == double["data"]["num_images"] == 101
    assert any(name.startswith("oneshot/") for name in single["results"])
    assert any(name.startswith("linear/") for name in single["results"])
    assert any(name.startswith("depth/") for name in single["results"])
    assert single["results"]["knn/bank_images"] == double["results"]["knn/bank_images"] == 101
    assert single["run"]["reference"]["num_images"] == double["run"]["reference"]["num_images"] == 20
    assert "intervened/model/patch@1/shuffle/knn/output/full/k20/top1" in single["results"]
    assert single["results"].keys() == double["results"].keys()
    for name, value in single["results"].items():
        assert double["results"][name] == pytest.approx(value, abs=1e-6), name
    assert any(name.startswith("maps/") for name in single["results"])
    for file in ("features.safetensors", "arrays.safetensors"):
        single_arrays = load_file(str(tmp_path / "devices1" / file))
        double_arrays = load_file(str(tmp_path / "devices2" / file))
        assert single_arrays.keys() == double_arrays.keys()
        for name in single_arrays:  # histograms, per-image cosines, the gallery's images and maps
            one, two = single_arrays[name], double_arrays[name]
            if np.issubdtype(
                one.dtype, np.floating
            ):  # each process runs its own threads: last-bit differences
                scale = float(np.abs(one).max()) if one.size else 1.0
                np.testing.assert_allclose(two, one, rtol=0, atol=1e-6 * scale, err_msg=f"{file} {name}")
            else:
                np.testing.assert_array_equal(two, one, err_msg=f"{file} {name}")


def test_from_features_reproduces_the_run_that_saved_them(model_dir: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_labelled_photos(photos, per_class=6)
    common = ["--probe", "all", "--seed", "3", "--episodes", "4"]
    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photos), "--resolution", "56",
            "--batch-size", "5", "--num-workers", "0", "--save-features", *common]  # fmt: skip
    assert evaluate.main([*argv, "--output", str(tmp_path / "saved")]) == 0
    assert (
        evaluate.main(
            ["--from-features", str(tmp_path / "saved"), *common, "--output", str(tmp_path / "replayed")]
        )
        == 0
    )
    saved = json.loads((tmp_path / "saved" / "results.json").read_text())
    replayed = json.loads((tmp_path / "replayed" / "results.json").read_text())
    assert replayed["backbone"] == saved["backbone"]
    assert replayed["data"]["from_features"] == str((tmp_path / "saved").resolve())
    for probe in ("maps", "heads"):  # they read the images or the backbone's own computations
        assert probe in saved["run"]["probes"] and probe not in replayed["run"]["probes"]
    unsaved = ("maps/", "heads/")
    replayable = {name for name in saved["results"] if not name.startswith(unsaved)}
    assert set(replayed["results"]) == replayable
    assert any(name.startswith(("oneshot/", "linear/", "cka_debiased/")) for name in saved["results"])
    for name in replayable:
        assert replayed["results"][name] == pytest.approx(saved["results"][name], rel=1e-9, abs=1e-15), name
    saved_arrays = load_file(str(tmp_path / "saved" / "arrays.safetensors"))
    replayed_arrays = load_file(str(tmp_path / "replayed" / "arrays.safetensors"))
    assert set(replayed_arrays) == {name for name in saved_arrays if not name.startswith(unsaved)}
    for name, array in replayed_arrays.items():
        np.testing.assert_array_equal(array, saved_arrays[name], err_msg=name)


def test_from_features_needs_saved_features(
    tmp_path: Path, finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate.main(["--from-features", str(tmp_path), "--output", str(tmp_path / "x")]) == 2
    assert "holds no results.json: not a run folder" in capsys.readouterr().err
    without = tmp_path / "without-features"
    shutil.copytree(finished_run, without)
    (without / "features.safetensors").unlink()
    assert evaluate.main(["--from-features", str(without), "--output", str(tmp_path / "x")]) == 2
    assert "holds no features.safetensors; run it with --save-features first" in capsys.readouterr().err
    argv = ["--from-features", str(finished_run), "--probe", "split,maps", "--output", str(tmp_path / "y")]
    assert evaluate.main(argv) == 2
    assert "maps read the images or the [CLS] hidden states" in capsys.readouterr().err
    assert (
        evaluate.main(["--from-features", str(finished_run), "--output", str(finished_run), "--overwrite"])
        == 2
    )
    assert "--output must differ" in capsys.readouterr().err


def test_figures_are_valid_pngs_and_in_tensorboard(finished_run: Path) -> None:
    from PIL import Image

    names = sorted(path.name for path in (finished_run / "figures").iterdir())
    assert names == ["cka.png", "split.png"]  # the run asked for cka and split only
    for name in names:
        with Image.open(finished_run / "figures" / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    tags: set[str] = set()
    for events in (finished_run / "tensorboard").glob("events.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"])
    assert {"figures/cka", "figures/split"} <= tags


def test_only_user_errors_become_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A bug (any other exception) keeps its traceback instead of turning into `error: ...`."""
    from cls_decoupling.cli import evaluate as cli
    from common.errors import UserError

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug, not the user's doing")

    monkeypatch.setattr(cli, "run_one", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["--backbone", "random:tiny", "--output", str(tmp_path / "run")])

    def refused(*args: object, **kwargs: object) -> None:
        raise UserError("the user's doing")

    monkeypatch.setattr(cli, "run_one", refused)
    assert cli.main(["--backbone", "random:tiny", "--output", str(tmp_path / "run")]) == 2


def test_the_position_interpolation_is_chosen_and_recorded(model_dir: Path, tmp_path: Path) -> None:
    argv = ["--backbone", str(model_dir), "--data", "demo", "--limit", "3", "--probe", "split",
            "--resolution", "42", "--num-workers", "0", "--pos-interpolation", "original"]  # fmt: skip
    assert evaluate.main([*argv, "--output", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        summary["backbone"]["pos_interpolation"] == "original" and summary["run"]["max_pooler_error"] < 1e-4
    )


def test_compiled_backbone_gives_the_same_results(finished_run: Path, model_dir: Path, photo_dir: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    """--compile runs the blocks under torch.compile (aot_eager here: no C++ compiler needed) and
    records it; the numbers are the eager run's, and every phase of the run is timed."""
    argv = [
        "--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photo_dir),
        "--probe", "cka,split", "--output", str(tmp_path / "compiled"), "--compile", "aot_eager",
        "--resolution", "56", "--batch-size", "4", "--num-workers", "0",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    eager = json.loads((finished_run / "results.json").read_text())
    compiled = json.loads((tmp_path / "compiled" / "results.json").read_text())
    assert eager["run"]["compile"] is None and compiled["run"]["compile"] == "aot_eager"
    assert compiled["run"]["max_pooler_error"] < 1e-4
    assert set(compiled["results"]) == set(eager["results"])
    for name, value in eager["results"].items():
        assert compiled["results"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    for summary in (eager, compiled):
        timings = summary["run"]["timings"]
        assert set(timings) == {"load", "setup", "first_batch", "loop", "compute"}
        assert all(seconds >= 0 for seconds in timings.values())


def test_layers_add_the_depth_probe_and_replay(model_dir: Path, photo_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """--layers all decomposes every block: depth/layer{l}/... are the means of the saved per-image
    values, depth.png is drawn, run.layers is recorded, and --from-features replays them."""
    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photo_dir),
            "--resolution", "56", "--batch-size", "4", "--num-workers", "0"]  # fmt: skip
    saved = tmp_path / "saved"
    assert (
        evaluate.main([*argv, "--probe", "all", "--layers", "all", "--save-features", "--output", str(saved)])
        == 0
    )
    summary = json.loads((saved / "results.json").read_text())
    assert summary["run"]["layers"] == [1, 2] and "depth" in summary["run"]["probes"]
    features = load_file(str(saved / "features.safetensors"))
    for quantity in ("split/patch", "split/register", "norm/skip", "cosine/patch"):
        values = features[f"depth/{quantity}"].astype(np.float64)  # images, blocks
        for column, layer in enumerate((1, 2)):
            assert summary["results"][f"depth/layer{layer}/{quantity}"] == pytest.approx(
                values[:, column].mean(), rel=1e-6
            )
            assert summary["results"][f"depth/layer{layer}/{quantity}/std"] == pytest.approx(
                values[:, column].std(), rel=1e-5, abs=1e-9
            )
    last = summary["results"]["depth/layer2/split/patch"]
    assert last == pytest.approx(summary["results"]["split/patch/mean"], rel=1e-6)
    assert (saved / "figures" / "depth.png").is_file()
    replayed = tmp_path / "replayed"
    assert evaluate.main(["--from-features", str(saved), "--probe", "depth", "--output", str(replayed)]) == 0
    again = json.loads((replayed / "results.json").read_text())["results"]
    assert set(again) == {name for name in summary["results"] if name.startswith("depth/")}
    for name, value in again.items():
        assert value == pytest.approx(summary["results"][name], rel=1e-9, abs=1e-15), name
    everything = tmp_path / "replayed-all"  # `all` leaves out what needs the hidden states (cka_layers)
    assert evaluate.main(["--from-features", str(saved), "--output", str(everything)]) == 0
    replayed_probes = json.loads((everything / "results.json").read_text())["run"]["probes"]
    assert "depth" in replayed_probes and "cka_layers" not in replayed_probes
    for extra, message in (
        (["--probe", "depth"], "read the per-layer decomposition: add --layers"),
        (["--layers", "2,x"], "--layers takes last, all or block numbers"),
        (["--layers", "3"], "this backbone has blocks 1..2"),
    ):
        assert evaluate.main([*argv, *extra, "--output", str(tmp_path / "refused")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused" / "results.json").exists()


def test_deletion_is_opt_in_and_written(model_dir: Path, photo_dir: Path, tmp_path: Path) -> None:
    """--probe deletion runs the extra passes and writes its curves; `all` leaves it out."""
    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photo_dir),
            "--resolution", "56", "--batch-size", "4", "--num-workers", "0", "--seed", "2"]  # fmt: skip
    assert evaluate.main([*argv, "--probe", "split,deletion", "--output", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    for order in ("top", "random", "bottom"):
        for percent in (10, 25, 50):
            assert -1.0 <= results[f"deletion/{order}/{percent}"] <= 1.0 + 1e-6
    assert {"deletion/area/random_minus_top", "deletion/area/bottom_minus_top"} <= set(results)
    assert (tmp_path / "run" / "figures" / "deletion.png").is_file()
    assert "deletion" not in parse_probe_names("all")


def test_maps_chooses_the_attribution_maps_from_the_registry(
    model_dir: Path, photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--maps: only the maps named (and a head's when asked) are computed and scored, in the
    registry's order; a wrong name lists the registered maps, a head the model lacks and --maps
    without the attribution probe are one line each, before any model loads."""
    from harness.extras import map_names

    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photo_dir),
            "--resolution", "56", "--batch-size", "4", "--num-workers", "0", "--limit", "4"]  # fmt: skip
    output = tmp_path / "run"
    assert evaluate.main([*argv, "--probe", "attribution", "--maps", "legrad,rollout,attention_head1",
                          "--output", str(output)]) == 0  # fmt: skip
    results = json.loads((output / "results.json").read_text())["results"]
    scored = {name.split("/")[1] for name in results if name.endswith("/rank_agreement")}
    assert scored == {"rollout", "legrad", "attention_head1"}
    assert "maps/random/deletion/cosine/area" in results
    for extra, message in (
        (
            ["--probe", "attribution", "--maps", "nope"],
            f"unknown map 'nope'; choose from all, {', '.join(map_names())}",
        ),
        (["--probe", "attribution", "--maps", "attention_head9"], "this backbone has heads 1..2, got [9]"),
        (["--probe", "split", "--maps", "rollout"], "--maps chooses the attribution probe's maps"),
    ):
        assert evaluate.main([*argv, *extra, "--output", str(tmp_path / "refused")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused" / "results.json").exists()


def test_attribution_maps_explain_the_knn_banks_class(
    photo_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    """--probe attribution --train-data: without a head the bank's 20-NN vote gives the class the maps
    explain; `maps/full/accuracy` equals a numpy 20-NN on the saved features."""
    from tests.probes.test_knn import numpy_knn_accuracy

    photos = tmp_path / "photos"
    write_labelled_photos(photos, per_class=4)
    output = tmp_path / "run"
    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photos), "--resolution", "56",
            "--batch-size", "4", "--num-workers", "0", "--train-data", "folder", "--train-dir", str(photos),
            "--probe", "attribution", "--save-features", "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 0
    results = json.loads((output / "results.json").read_text())["results"]
    features = load_file(str(output / "features.safetensors"))
    bank, labels = features["output/full"].astype(np.float64), features["label"]
    expected = numpy_knn_accuracy(bank, labels, bank, labels, 3, 20, 1)
    assert results["maps/full/accuracy"] == pytest.approx(expected, abs=1e-9)
    assert 0 <= results["maps/rollout/insertion/probability/area/top"] <= 1


def test_knn_bank_from_training_data(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--train-data builds the bank from output/full of the training images; the knn results equal a
    numpy k-NN on the saved features (the same folder serves as training and evaluated data here)."""
    from tests.probes.test_knn import numpy_knn_accuracy

    photos = tmp_path / "photos"
    write_labelled_photos(photos, per_class=5)
    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photos), "--resolution", "56",
            "--batch-size", "4", "--num-workers", "0"]  # fmt: skip
    train = ["--train-data", "folder", "--train-dir", str(photos)]
    output = tmp_path / "run"
    assert evaluate.main([*argv, *train, "--probe", "knn", "--save-features", "--output", str(output)]) == 0
    summary = json.loads((output / "results.json").read_text())
    assert summary["data"]["train"]["num_images"] == 15 and summary["results"]["knn/bank_images"] == 15
    features = load_file(str(output / "features.safetensors"))
    bank, labels = features["output/full"].astype(np.float64), features["label"]
    for variant in ("output/full", "output/patch", "output/skip"):
        for k in (10, 20):
            expected = numpy_knn_accuracy(bank, labels, features[variant].astype(np.float64), labels, 3, k, 1)
            assert summary["results"][f"knn/{variant}/k{k}/top1"] == pytest.approx(expected, abs=1e-9), (
                variant,
                k,
            )
    # the probe's own figure, report line and comparison figure (declared on KnnProbe, nowhere else)
    assert (output / "figures" / "knn.png").is_file()
    patch_top1 = summary["results"]["knn/output/patch/k20/top1"]
    assert (
        "| knn/output/patch/k20/top1 | 20-NN top-1 accuracy of the patch-only output"
        in (output / "report.md").read_text()
    )
    assert "![knn.png](figures/knn.png)" in (output / "report.md").read_text() and patch_top1 >= 0
    assert evaluate.main(["--compare", str(output), str(output), "--output", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "figures" / "compare_knn.png").is_file()
    assert evaluate.main([*argv, "--probe", "knn", "--output", str(tmp_path / "no-bank")]) == 2
    assert "add --train-data and --train-dir" in capsys.readouterr().err
    other = tmp_path / "other"
    for name in ("x", "y"):
        write_photos(other / name, 2)
    assert evaluate.main([*argv, "--probe", "knn", "--train-data", "folder", "--train-dir", str(other),
                          "--output", str(tmp_path / "mismatch")]) == 2  # fmt: skip
    assert "the knn probe needs the same classes" in capsys.readouterr().err


def evaluate_saved_model(
    model: object, tmp_path: Path, probes: str, photo_size: tuple[int, int], count: int
) -> tuple[dict, dict[str, np.ndarray], list[Path]]:
    """Save `model`, run evaluate.py on `count` photos at 56 px with --save-features: results.json,
    the saved features, and the photos in dataset-index order."""
    model.save_pretrained(tmp_path / "model")  # type: ignore[attr-defined]
    photos = sorted(write_photos(tmp_path / "photos", count, size=photo_size))
    output = tmp_path / "run"
    argv = ["--backbone", str(tmp_path / "model"), "--data", "folder", "--data-dir", str(tmp_path / "photos"),
            "--probe", probes, "--save-features", "--resolution", "56", "--batch-size", "2",
            "--num-workers", "0", "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 0
    summary = json.loads((output / "results.json").read_text())
    return summary, load_file(str(output / "features.safetensors")), photos


def prepared(photos: list[Path], prepare: object) -> torch.Tensor:
    """The photos as one batch, each read with PIL and passed through `prepare` (a torchvision transform)."""
    return torch.stack([prepare(Image.open(path).convert("RGB")) for path in photos])  # type: ignore[operator]


def test_a_vit_runs_end_to_end_with_its_own_preprocessing(tmp_path: Path) -> None:
    """A transformers ViT folder (DINO v1's layout) through evaluate.py: its family and preprocessing
    are recorded, and output/full is the model's own [CLS] output on images prepared its way
    (resized square, bilinear, mean/std 0.5), computed here with torchvision and PIL directly."""
    from torchvision import transforms
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=56, patch_size=14)  # fmt: skip
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False).eval()
    summary, features, photos = evaluate_saved_model(model, tmp_path, "all", (64, 48), 5)
    assert summary["backbone"]["family"] == "vit" and summary["backbone"]["image_std"] == [0.5, 0.5, 0.5]
    assert summary["data"]["preprocessing"] == {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize": "square", "interpolation": "bilinear",
        "resize_ratio": 1.0,
    }  # fmt: skip
    assert summary["run"]["max_pooler_error"] < 1e-4
    prepare = transforms.Compose([
        transforms.Resize((56, 56), interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])  # fmt: skip
    with torch.no_grad():
        expected = model(pixel_values=prepared(photos, prepare)).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(features["output/full"], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def clip_preparation(size: int = 56) -> object:
    """CLIP's processor in torchvision: shorter side to `size` (bicubic), centre crop, CLIP's mean/std."""
    from torchvision import transforms

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    bicubic = transforms.InterpolationMode.BICUBIC
    return transforms.Compose([
        transforms.Resize(size, interpolation=bicubic), transforms.CenterCrop(size),
        transforms.ToTensor(), transforms.Normalize(mean, std),
    ])  # fmt: skip


def test_a_clip_tower_runs_end_to_end_with_its_own_preprocessing(tmp_path: Path) -> None:
    """A transformers CLIP image tower through evaluate.py: output/full is its pooled output on images
    prepared as CLIP's processor does (shorter side to the crop size, bicubic, centre crop, CLIP's
    mean/std), computed here with torchvision and PIL directly."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, image_size=56, patch_size=14)  # fmt: skip
    torch.manual_seed(0)
    model = CLIPVisionModel(config).eval()
    summary, features, photos = evaluate_saved_model(model, tmp_path, "split,norms", (80, 60), 4)
    assert summary["backbone"]["family"] == "clip" and summary["data"]["preprocessing"]["resize_ratio"] == 1.0
    with torch.no_grad():
        expected = model(pixel_values=prepared(photos, clip_preparation())).pooler_output.numpy()
    np.testing.assert_allclose(features["output/full"], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_a_dinov3_runs_end_to_end_with_its_own_preprocessing(tmp_path: Path) -> None:
    """A transformers DINOv3 folder (4 registers, RoPE) through evaluate.py --probe all: output/full is
    its pooled output on images prepared as its processor does (square bilinear resize, ImageNet
    mean/std), computed here with torchvision and PIL directly; its register variants are reported."""
    from torchvision import transforms
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=56, patch_size=14, num_register_tokens=4)  # fmt: skip
    torch.manual_seed(0)
    model = DINOv3ViTModel(config).eval()
    summary, features, photos = evaluate_saved_model(model, tmp_path, "all", (64, 48), 5)
    backbone = summary["backbone"]
    assert (backbone["family"], backbone["num_registers"]) == ("dinov3", 4)
    assert backbone["pos_interpolation"] == "hf"
    assert summary["data"]["preprocessing"]["resize"] == "square"
    assert summary["run"]["max_pooler_error"] < 1e-4
    assert "cka/output/register" in summary["results"] and "split/register/mean" in summary["results"]
    prepare = transforms.Compose([
        transforms.Resize((56, 56), interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])  # fmt: skip
    with torch.no_grad():
        expected = model(pixel_values=prepared(photos, prepare)).pooler_output.numpy()
    np.testing.assert_allclose(features["output/full"], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_a_whole_clip_runs_with_its_projection_readout(tmp_path: Path) -> None:
    """A whole CLIP checkpoint (text and image towers) loads as its image tower with the projection:
    every probe also reports the projection readout, whose full variant is CLIP's own image embedding
    (`get_image_features`) on images prepared as its processor does; the figures get its panel."""
    from transformers import CLIPConfig, CLIPModel

    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "image_size": 56, "patch_size": 14}  # fmt: skip
    text = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=24)).eval()
    summary, features, photos = evaluate_saved_model(model, tmp_path, "all", (80, 60), 6)
    assert summary["backbone"]["family"] == "clip" and summary["backbone"]["projection_dim"] == 24
    results = summary["results"]
    for name in ("cka/projection/patch", "cka/output/patch", "norm/projection/skip"):
        assert name in results, name
    with torch.no_grad():
        pixels = prepared(photos, clip_preparation())
        expected = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    got = features["projection/full"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert (tmp_path / "run" / "figures" / "cka.png").is_file()
    again = tmp_path / "again"
    argv = ["--from-features", str(tmp_path / "run"), "--probe", "cka,norms", "--output", str(again)]
    assert evaluate.main(argv) == 0
    replayed = json.loads((again / "results.json").read_text())["results"]
    for name in ("cka/projection/patch", "norm/projection/skip"):
        assert replayed[name] == pytest.approx(results[name], rel=1e-6), name


def test_the_bank_pass_is_a_plain_forward(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --probe knn,deletion --layers all, the k-NN bank pass runs the model once per batch (no
    deletion passes, no per-layer decomposition); the evaluated pass does both."""
    import harness.extras.depth

    photos = tmp_path / "photos"
    write_labelled_photos(photos, per_class=4)  # 12 images: 3 batches of 4
    calls = {"encoder": 0, "depth": 0}
    phases: dict[str, dict[str, int]] = {}
    decompose_block, load, build_bank = (
        harness.extras.depth.decompose_block, evaluate.load_checked_backbone, evaluate.build_bank
    )  # fmt: skip

    def counting_decompose_block(*args: Any, **kwargs: Any) -> Any:
        calls["depth"] += 1
        return decompose_block(*args, **kwargs)

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        backbone, layers = load(*args, **kwargs)
        backbone.family.blocks[0].register_forward_pre_hook(
            lambda *hook_args: calls.__setitem__("encoder", calls["encoder"] + 1)
        )  # on the tool's own model, which lives for this run only
        return backbone, layers

    def counting_bank(*args: Any) -> Any:
        before = dict(calls)
        try:
            return build_bank(*args)
        finally:
            phases["bank"] = {name: calls[name] - before[name] for name in calls}
            phases["before_bank"] = before

    monkeypatch.setattr(harness.extras.depth, "decompose_block", counting_decompose_block)
    monkeypatch.setattr(evaluate, "load_checked_backbone", counting_load)
    monkeypatch.setattr(evaluate, "build_bank", counting_bank)
    argv = ["--backbone", str(model_dir), "--data", "folder", "--data-dir", str(photos), "--resolution", "56",
            "--batch-size", "4", "--num-workers", "0", "--train-data", "folder", "--train-dir", str(photos),
            "--probe", "knn,deletion", "--layers", "all", "--output", str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main(argv) == 0
    assert phases["before_bank"] == {"encoder": 0, "depth": 0}
    assert phases["bank"] == {"encoder": 3, "depth": 0}  # one pass per batch, nothing else
    # the evaluated pass: per batch the model once and once per deletion fraction (the three orders
    # batched together); both of the model's blocks decomposed as they run
    evaluated = {name: calls[name] - phases["bank"][name] for name in calls}
    assert evaluated == {"encoder": 3 * (1 + 3), "depth": 3 * 2}


def test_reference_split_chooses_the_reference_images_split() -> None:
    """`--reference-split train` reads the reference images of `--reference-data` from that split (the
    Sun et al. recipe averages ImageNet's training images); without it they follow the evaluated split."""
    common = [
        "--backbone",
        "random:tiny",
        "--output",
        "o",
        "--data",
        "imagenet",
        "--data-dir",
        "/in",
        "--intervene",
        "cls@1:mean",
        "--reference-data",
        "imagenet",
        "--reference-dir",
        "/in",
    ]
    chosen = evaluate.ProbeOptions.from_args(evaluate.parse_args([*common, "--reference-split", "train"]))
    plain = evaluate.ProbeOptions.from_args(evaluate.parse_args(common))
    assert chosen.reference is not None and chosen.reference.split == "train"
    assert plain.reference is not None and plain.reference.split is None  # the evaluated data's
