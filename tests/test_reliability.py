"""Bad options, damaged or unfinished run folders, concurrent runs and failures while writing: each is
one line and a non-zero exit status, found before any model loads where it can be, and a run folder is
complete (marker written last) or refused by everything that reads runs."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from cls_decoupling.cli import evaluate, train_probe
from cls_decoupling.cli.options import run_main
from cls_decoupling.outputs import output_lock
from cls_decoupling.outputs.runs import COMPLETE_MARKER
from tests.conftest import one_error

TINY = ["--data", "demo", "--limit", "4", "--resolution", "56", "--num-workers", "0", "--batch-size", "2"]
DATA_DIR = ["--data", "folder", "--data-dir"]
TRAIN_DIR = ["--probe", "knn", "--train-data", "folder", "--train-dir"]
REFERENCE_DIR = ["--intervene", "cls@1:mean", "--reference-data", "folder", "--reference-dir"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("finished") / "run"
    argv = ["--backbone", "random:tiny", *TINY, "--probe", "all", "--save-features", "--output", str(output)]
    assert evaluate.main(argv) == 0
    return output


def copy_of(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def test_a_finished_run_has_its_marker_and_strict_json(finished: Path) -> None:
    assert (finished / COMPLETE_MARKER).is_file()
    modes = {path.name: path.stat().st_mode & 0o777 for path in finished.iterdir() if path.is_file()}
    assert modes["arrays.safetensors"] == modes["features.safetensors"] == modes["results.json"], modes

    def refuse(constant: str) -> None:
        raise AssertionError(f"results.json holds {constant}")

    json.loads((finished / "results.json").read_text(), parse_constant=refuse)


def test_overwrite_replaces_the_run_as_a_whole(finished: Path, tmp_path: Path) -> None:
    output = copy_of(finished, tmp_path)
    assert (output / "features.safetensors").is_file() and (output / "faithfulness.csv").is_file()
    argv = [
        "--backbone",
        "random:tiny_reg",
        *TINY,
        "--probe",
        "split",
        "--overwrite",
        "--output",
        str(output),
    ]
    assert evaluate.main(argv) == 0
    assert sorted(path.name for path in (output / "figures").iterdir()) == ["split.png"]
    assert not (output / "features.safetensors").exists() and not (output / "faithfulness.csv").exists()
    assert (output / COMPLETE_MARKER).is_file()
    assert json.loads((output / "results.json").read_text())["backbone"]["name"] == "random:tiny_reg"


def test_an_unfinished_run_is_refused_by_every_reader(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unfinished = copy_of(finished, tmp_path, "unfinished")
    (unfinished / COMPLETE_MARKER).unlink()  # as a run killed while writing leaves it
    assert evaluate.main(["--compare", str(finished), str(unfinished), "--output", str(tmp_path / "c")]) == 2
    assert "holds an unfinished run" in one_error(capsys)
    assert evaluate.main(["--from-features", str(unfinished), "--output", str(tmp_path / "r")]) == 2
    assert "holds an unfinished run" in one_error(capsys)
    assert evaluate.main(["--backbone", "random:tiny", *TINY, "--output", str(unfinished)]) == 2
    assert "already holds an unfinished run" in one_error(capsys)


def test_overwrite_never_deletes_files_that_are_not_a_runs(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = copy_of(finished, tmp_path)
    (output / "my-notes.txt").write_text("mine")
    argv = ["--backbone", "random:tiny", *TINY, "--probe", "split", "--overwrite", "--output", str(output)]
    assert evaluate.main(argv) == 2
    assert "holds files that are not a run's (my-notes.txt)" in one_error(capsys)
    assert (output / "my-notes.txt").read_text() == "mine" and (output / "features.safetensors").is_file()


def test_a_second_run_into_the_same_folder_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    with output_lock(output):  # a first run is writing
        assert evaluate.main(["--backbone", "random:tiny", *TINY, "--output", str(output)]) == 2
        assert "another run is writing to" in one_error(capsys)
        assert evaluate.main(["--backbone", "random:tiny", *TINY, "--output", str(output)]) == 2
        assert "another run is writing to" in one_error(capsys)  # a refused run left the lock in place
    with output_lock(output):  # released when the first run ended
        pass


def test_the_lock_sits_beside_the_folder_however_it_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    with output_lock(Path(".")):
        assert (tmp_path / ".run.lock").is_file() and not list((tmp_path / "run").iterdir())
        assert evaluate.main(["--backbone", "random:tiny", *TINY, "--output", str(tmp_path / "run")]) == 2
        assert "another run is writing to" in one_error(capsys)


def test_a_comparison_never_writes_over_a_compared_run(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inside = copy_of(finished, tmp_path, "comparison")  # a run folder named like the comparison's run
    argv = ["--compare", str(inside), str(finished), "--output", str(tmp_path), "--overwrite"]
    assert evaluate.main(argv) == 2
    assert "would write over the run" in one_error(capsys)
    assert (inside / COMPLETE_MARKER).is_file() and (inside / "results.json").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--devices", "0"], "device options do not work here"),
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--resolution", "0"], "resolution must be positive"),
        (["--probe", "split", "--head", "missing.pt"], "read by the linear or attribution probe only"),
        (["--probe", "linear", "--head", "missing.pt"], "is not a linear head saved by train_probe.py"),
        (["--episodes", "0"], "--episodes and --shots must be positive"),
        (["--strategy", "ddp_spawn"], "use --strategy ddp"),
        (["--compile", "no_such_backend"], "not a torch.compile backend"),
        ([*DATA_DIR, "{tmp}/r"], "--output {tmp}/r is the --data-dir folder {tmp}/r: the next run"),
        ([*DATA_DIR, "{tmp}"], "--output {tmp}/r lies inside the --data-dir folder {tmp}: the next run"),
        ([*DATA_DIR, "{tmp}/r/photos"], "the --data-dir folder {tmp}/r/photos lies inside --output {tmp}/r"),
        ([*TRAIN_DIR, "{tmp}"], "--output {tmp}/r lies inside the --train-dir folder {tmp}: the next run"),
        ([*TRAIN_DIR, "{tmp}/r/bank"], "the --train-dir folder {tmp}/r/bank lies inside --output {tmp}/r"),
        (
            [*REFERENCE_DIR, "{tmp}"],
            "--output {tmp}/r lies inside the --reference-dir folder {tmp}: the next",
        ),
    ],
    ids=[
        "devices-0",
        "seed",
        "resolution",
        "head-without-linear",
        "missing-head",
        "episodes",
        "spawn",
        "compile",
        "output-is-data-dir",
        "output-in-data-dir",
        "data-dir-in-output",
        "output-in-train-dir",
        "train-dir-in-output",
        "output-in-reference-dir",
    ],
)
def test_bad_options_fail_before_any_model_loads(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, message = [arg.format(tmp=tmp_path) for arg in extra], message.format(tmp=tmp_path)
    # an unreachable checkpoint path as the backbone: any load attempt would fail with another message
    argv = [
        "--backbone",
        str(tmp_path / "never-loaded"),
        "--data",
        "demo",
        *extra,
        "--output",
        str(tmp_path / "r"),
    ]
    (tmp_path / "never-loaded").mkdir()  # resolves as a folder, so names are checked, but no model in it
    assert evaluate.main(argv) == 2
    assert message in one_error(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("cwd", "data_dir", "backbones", "output", "message"),
    [
        ("data", ".", ["random:tiny"], "run", "--output run (= {tmp}/data/run) lies inside the --data-dir "
         "folder . (= {tmp}/data): the next run over it would read this run's figures as images; write the "
         "run outside the data folder"),
        (".", "link", ["random:tiny"], "data/run", "--output data/run (= {tmp}/data/run) lies inside the "
         "--data-dir folder link (= {tmp}/data)"),
        (".", "data", ["random:tiny", "random:tiny_reg"], "data/sweep", "--output data/sweep (= "
         "{tmp}/data/sweep) lies inside the --data-dir folder data (= {tmp}/data)"),
        ("data", "../data", ["random:tiny"], "..", "the --data-dir folder ../data (= {tmp}/data) lies inside "
         "--output .. (= {tmp}): the run would be written around its own images; choose an --output outside "
         "the data folder"),
    ],
    ids=["relative", "symlink", "sweep", "data-in-parent-output"],
)  # fmt: skip
def test_an_output_and_its_data_never_overlap_however_spelled(
    cwd: str,
    data_dir: str,
    backbones: list[str],
    output: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Relative paths and symbolic links are resolved; refused before anything is written, even the
    output lock, so the data folder stays as it was."""
    from tests.conftest import write_labelled_photos

    write_labelled_photos(tmp_path / "data", per_class=1)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    before = sorted((tmp_path / "data").rglob("*"))
    monkeypatch.chdir(tmp_path / cwd)
    argv = ["--backbone", *backbones, *DATA_DIR, data_dir, *TINY[2:], "--output", output]
    assert evaluate.main(argv) == 2
    assert message.format(tmp=tmp_path.resolve()) in one_error(capsys)
    assert sorted((tmp_path / "data").rglob("*")) == before


def test_a_typo_in_any_backbone_is_found_before_the_first_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--backbone", "random:tiny", "random:tinyy", *TINY, "--output", str(tmp_path / "sweep")]
    assert evaluate.main(argv) == 2
    assert "unknown backbone 'random:tinyy'" in one_error(capsys)
    assert not (tmp_path / "sweep").exists()
    assert evaluate.main(["--backbone", str(tmp_path / "model.pth"), "--output", str(tmp_path / "r")]) == 2
    assert "no checkpoint file" in one_error(capsys)


def test_output_locations_that_cannot_hold_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    assert evaluate.main(["--backbone", "random:tiny", *TINY, "--output", str(tmp_path / "a-file")]) == 2
    assert "is a file, not a folder" in one_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU where there is none")
def test_a_gpu_that_is_not_there_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--backbone", "random:tiny", *TINY, "--accelerator", "gpu", "--output", str(tmp_path / "r")]
    assert evaluate.main(argv) == 2
    assert "device options do not work here" in one_error(capsys)


def test_half_precision_everywhere_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluate.parse_args(["--backbone", "random:tiny", "--precision", "bf16-true", "--output", "x"])
    assert exit_info.value.code == 2 and "invalid choice: 'bf16-true'" in capsys.readouterr().err


def test_the_precision_that_ran_is_recorded(tmp_path: Path) -> None:
    argv = ["--backbone", "random:tiny", *TINY, "--probe", "split", "--precision", "16-mixed"]
    assert evaluate.main([*argv, "--output", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    expected = "16-mixed" if torch.cuda.is_available() else "bf16-mixed"  # fp16 AMP does not exist on CPUs
    assert summary["run"]["precision"] == expected and summary["run"]["shots"] == 1


def test_damaged_files_of_a_finished_run_are_one_line(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated_arrays = copy_of(finished, tmp_path, "arrays")
    data = (truncated_arrays / "arrays.safetensors").read_bytes()
    (truncated_arrays / "arrays.safetensors").write_bytes(data[: len(data) // 2])
    assert (
        evaluate.main(["--compare", str(finished), str(truncated_arrays), "--output", str(tmp_path / "c")])
        == 2
    )
    assert "cannot read" in (line := one_error(capsys)) and "arrays.safetensors" in line
    truncated_json = copy_of(finished, tmp_path, "json")
    text = (truncated_json / "results.json").read_text()
    (truncated_json / "results.json").write_text(text[: len(text) // 2])
    assert (
        evaluate.main(["--compare", str(finished), str(truncated_json), "--output", str(tmp_path / "d")]) == 2
    )
    assert "cannot read" in (line := one_error(capsys)) and "results.json" in line
    truncated_features = copy_of(finished, tmp_path, "features")
    data = (truncated_features / "features.safetensors").read_bytes()
    (truncated_features / "features.safetensors").write_bytes(data[:100])
    assert evaluate.main(["--from-features", str(truncated_features), "--output", str(tmp_path / "e")]) == 2
    assert "cannot read" in (line := one_error(capsys)) and "features.safetensors" in line


def test_a_full_disk_while_writing_leaves_an_unfinished_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cls_decoupling.outputs import writing

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writing, "write_figures", full_disk)  # after results.json, before the marker
    output = tmp_path / "run"
    assert (
        evaluate.main(["--backbone", "random:tiny", *TINY, "--probe", "split", "--output", str(output)]) == 2
    )
    assert "could not write the run" in (line := one_error(capsys)) and "No space left on device" in line
    assert (output / "results.json").is_file() and not (output / COMPLETE_MARKER).exists()


def test_ctrl_c_is_one_line_and_status_130(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    assert run_main(interrupted) == 130
    assert "interrupted" in one_error(capsys)


def test_ctrl_c_inside_the_pass_reaches_the_caller(tmp_path: Path) -> None:
    """Lightning turns Ctrl-C during trainer.test into sys.exit(1); run_test gives it back as Ctrl-C."""
    import lightning as L  # noqa: N812

    from cls_decoupling.cli.options import TrainerOptions, run_test
    from datamodules import ImageDataModule
    from tests.conftest import write_photos

    class Interrupted(L.LightningModule):
        def test_step(self, batch: object, batch_idx: int) -> None:
            raise KeyboardInterrupt

    write_photos(tmp_path, 2)
    data = ImageDataModule("folder", tmp_path, resolution=28, batch_size=1, num_workers=0)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_test(TrainerOptions(accelerator="cpu").trainer(), Interrupted(), data)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "--epochs and --train-batch-size must be positive"),
        (["--train-batch-size", "0"], "--epochs and --train-batch-size must be positive"),
        (["--learning-rates", "0"], "learning rates must be positive"),
        (["--data", "demo"], "needs a labelled source"),
    ],
    ids=["epochs", "batch", "rates", "unlabelled"],
)
def test_train_probe_refuses_before_extracting(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "a").mkdir(parents=True)
    argv = ["--backbone", "random:tiny", "--data", "folder", "--data-dir", str(tmp_path / "data"), *extra]
    assert train_probe.main([*argv, "--output", str(tmp_path / "head.pt")]) == 2
    assert message in one_error(capsys)
    assert train_probe.main([*argv, "--output", str(tmp_path)]) == 2
    assert "is a folder" in one_error(capsys)


def test_undefined_numbers_are_null_and_noted(tmp_path: Path) -> None:
    """One patch per image (14 px): the registers probe's norm ratio divides by zero, the debiased
    CKA of 3 images is undefined; results.json stays strict JSON and says which numbers are missing."""
    argv = ["--backbone", "random:tiny", "--data", "demo", "--limit", "3", "--resolution", "14"]
    assert evaluate.main([*argv, "--num-workers", "0", "--output", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["results"]["registers/norm_ratio"] is None
    assert "results.registers/norm_ratio is undefined (NaN or infinite), written as null" in summary["notes"]
    assert all(value is not None for name, value in summary["results"].items() if name.startswith("split/"))


def test_a_probe_with_too_few_images_is_skipped_and_the_others_written(tmp_path: Path) -> None:
    """One image: the registers probe cannot compute, the others (and the maps of that one image,
    whose rows torchmetrics would squeeze to 0-dim) are written, on the run and on its replay."""
    argv = [
        "--backbone",
        "random:tiny",
        "--data",
        "demo",
        "--limit",
        "1",
        "--resolution",
        "28",
        "--save-features",
    ]
    assert evaluate.main([*argv, "--num-workers", "0", "--output", str(tmp_path / "run")]) == 0
    assert evaluate.main(["--from-features", str(tmp_path / "run"), "--output", str(tmp_path / "again")]) == 0
    reason = "the registers probe needs at least 2 images, got 1"
    for folder in ("run", "again"):
        summary = json.loads((tmp_path / folder / "results.json").read_text())
        assert summary["run"]["skipped_probes"] == {"registers": reason}
        assert "split/patch/mean" in summary["results"]
        assert not any(name.startswith("registers/") for name in summary["results"])
    rows = (tmp_path / "run" / "faithfulness.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("0,")


def test_one_class_leaves_the_label_probes_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import write_photos

    write_photos(tmp_path / "data" / "only", 4)
    argv = ["--backbone", "random:tiny", "--data", "folder", "--data-dir", str(tmp_path / "data"),
            "--resolution", "28", "--num-workers", "0"]  # fmt: skip
    assert evaluate.main([*argv, "--output", str(tmp_path / "all")]) == 0
    probes = json.loads((tmp_path / "all" / "results.json").read_text())["run"]["probes"]
    assert "linear" not in probes and "oneshot" not in probes and "split" in probes
    assert evaluate.main([*argv, "--probe", "linear", "--output", str(tmp_path / "linear")]) == 2
    assert "need class labels of 2 classes or more, and this data has 1 class" in one_error(capsys)


def test_a_head_for_the_other_position_resize_is_refused(tmp_path: Path) -> None:
    from harness import HeadMismatchError, LinearHead

    head = LinearHead(
        torch.zeros(2, 4), torch.zeros(2), "b", "output/full", ("x", "y"), 224, 0.1, 0.5, "original"
    )
    head.save(tmp_path / "head.pt")
    loaded = LinearHead.load(tmp_path / "head.pt")
    loaded.check_compatible("b", ("x", "y"), 224, "original")
    with pytest.raises(HeadMismatchError, match="--pos-interpolation original"):
        loaded.check_compatible("b", ("x", "y"), 224, "hf")


def broken_checkpoint(kind: str, folder: Path) -> Path:
    """A checkpoint of each loading route whose weights do not fit its model."""
    from tests.conftest import tiny_model
    from tests.harness.test_checkpoint import to_original_format
    from tests.harness.test_loading import tiny_timm_folder
    from tests.harness.test_weights_fit import dinov2_folder, rewritten

    if kind == "hf-folder":
        return rewritten(dinov2_folder(folder), lambda s: {f"module.{k}": v for k, v in s.items()})
    if kind == "timm-folder":
        tiny_timm_folder(folder)
        return rewritten(folder, lambda s: {k: v for k, v in s.items() if "blocks.1." not in k})
    state = to_original_format(tiny_model(0, False, hidden=64, heads=1))
    torch.save({**state, "blocks.0.attn.proj.weight": torch.zeros(64, 63)}, folder.with_suffix(".pth"))
    return folder.with_suffix(".pth")


@pytest.mark.parametrize("kind", ["hf-folder", "timm-folder", "pth"])
def test_weights_that_do_not_fit_their_model_are_one_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No run on partly random weights: the run is refused before any image is read."""
    checkpoint = broken_checkpoint(kind, tmp_path / kind)
    argv = ["--backbone", str(checkpoint), *TINY, "--output", str(tmp_path / "r")]
    assert evaluate.main(argv) == 2
    line = one_error(capsys)
    assert "do not fit" in line or "does not match a DINOv2 model" in line, line
    assert not (tmp_path / "r").exists()


class _Runs:
    """Code a pickle would run on load (weights-only loading refuses it)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must not run",))


def bad_head(kind: str, path: Path) -> Path:
    """A `--head` file of each kind that is no usable head (issue 34)."""
    from harness import LinearHead

    good = LinearHead(
        torch.zeros(2, 64), torch.zeros(2), "random:tiny", "output/full", ("a", "b"), 28, 0.1, 0.5
    )
    if kind == "bytes":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "code":
        import pickle

        path.write_bytes(pickle.dumps(_Runs()))
    elif kind == "nan":
        dataclasses.replace(good, weight=torch.full((2, 64), float("nan"))).save(path)
    elif kind == "width":
        dataclasses.replace(good, weight=torch.zeros(2, 65)).save(path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bytes", "is not a linear head saved by train_probe.py"),
        ("empty", "is not a linear head saved by train_probe.py"),
        ("tensor", "it holds a Tensor, not a head's record"),
        ("code", "is not a linear head saved by train_probe.py"),
        ("nan", "the head's weights hold NaN or infinite values"),
        ("width", "the head reads 65 features, this backbone's output/full has 64"),
    ],
)
def test_a_head_file_that_is_no_usable_head_is_one_line(
    kind: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every kind of bad --head file (issue 34) ends in one line, exit 2, nothing written and no code run."""
    from tests.conftest import write_labelled_photos

    write_labelled_photos(tmp_path / "data", per_class=2)
    head = bad_head(kind, tmp_path / "head.pt")
    argv = ["--backbone", "random:tiny", "--data", "folder", "--data-dir", str(tmp_path / "data"),
            "--resolution", "28", "--num-workers", "0", "--probe", "linear", "--head", str(head),
            "--output", str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main(argv) == 2
    assert message in one_error(capsys)
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_replay_records_the_seed_it_used(tmp_path: Path) -> None:
    """--from-features --seed 5 (issue 34): the probes' seed is recorded as the one that ran; the data's
    seed stays the one that chose the saved images."""
    argv = ["--backbone", "random:tiny", "--limit", "4", "--resolution", "28", "--num-workers", "0",
            "--probe", "split", "--save-features", "--output", str(tmp_path / "saved")]  # fmt: skip
    assert evaluate.main(argv) == 0
    replay = ["--from-features", str(tmp_path / "saved"), "--seed", "5", "--probe", "split",
              "--output", str(tmp_path / "replayed")]  # fmt: skip
    assert evaluate.main(replay) == 0
    record = json.loads((tmp_path / "replayed" / "results.json").read_text())
    assert (record["data"]["seed"], record["run"]["seed"]) == (0, 5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--accelerator", "tpu"], "the device options do not work here"),
        (["--num-workers", "-1"], "--num-workers counts loader processes: 0 or more, got -1"),
    ],
    ids=["accelerator", "workers"],
)
def test_device_and_loader_options_that_cannot_work_are_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--backbone",
        "random:tiny",
        "--limit",
        "2",
        "--probe",
        "split",
        "--output",
        str(tmp_path / "run"),
    ]
    assert evaluate.main([*argv, *extra]) == 2
    assert message in one_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spelled", ["", "."])
def test_a_folder_of_other_files_is_never_written_into(
    spelled: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output '' (the working directory) or a folder of the user's files (issue 34), with or without
    --overwrite: refused, the folder left as it was."""
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    argv = ["--backbone", "random:tiny", "--limit", "2", "--probe", "split", "--output", spelled]
    for overwrite in ([], ["--overwrite"]):
        assert evaluate.main([*argv, *overwrite]) == 2
        assert "holds files that are not a run's (notes.txt)" in one_error(capsys)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--compare", "A", "B", "--probe", "split"], "it runs no probe or intervention"),
        (["--compare", "A", "B", "--intervene", "register@last:zero"], "it runs no probe or intervention"),
        (["--from-features", "A", "--crop-ratio", "0.9"], "it takes no --resize or --crop-ratio"),
        (["--backbone", "random:tiny", "--reference-data", "demo"],
         "add --intervene or --test-time-registers"),
        (["--backbone", "random:tiny", "--intervene", "register@last:mean", "--reference-data", "folder"],
         "--reference-data folder reads a folder: add --reference-dir"),
        (["--backbone", "random:tiny", "--intervene", "register@last:mean", "--reference-limit", "0"],
         "--reference-limit counts reference images: 1 or more, got 0"),
        (["--backbone", "random:tiny", "--probe", "all,deletion"], "'all' stands alone"),
        (["--backbone", "random:tiny", "--intervene", "register@0:zero"], "blocks are numbered from 1"),
        (["--backbone", "random:tiny", "--intervene", "register@3-1:zero"], "a range A-B needs A <= B"),
    ],
    ids=["compare-probe", "compare-intervene", "replay-crop", "reference-alone", "reference-no-dir",
         "reference-limit", "all-and-more", "block-0", "range"],
)  # fmt: skip
def test_an_option_that_would_be_ignored_or_misread_is_refused_by_its_name(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 34: options ignored without a word, and messages that named another option or range."""
    argv = [str(tmp_path / part) if part in ("A", "B") else part for part in argv]
    assert evaluate.main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert message in one_error(capsys)
    assert not (tmp_path / "out").exists()


def _edited(kind: str, folder: Path) -> None:
    """A run folder edited by hand as issue 34's attack did."""
    results = folder / "results.json"
    record = json.loads(results.read_text())
    if kind == "text-result":
        record["results"][next(iter(record["results"]))] = "oops"
    elif kind == "list":
        record = []
    elif kind == "hidden-size":
        record["backbone"]["hidden_size"] = 999
    elif kind == "other-features":
        record["data"]["num_images"] = 3
    results.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text-result", "is 'oops', not a number"),
        ("list", "is not a results.json of evaluate.py (it holds a list)"),
        ("hidden-size", "is 64 wide, and results.json says 999"),
        ("other-features", "holds 4 images, and results.json says 3"),
    ],
)
def test_a_hand_edited_run_folder_is_one_line_for_every_reader(
    kind: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--compare and --from-features read an edited folder (issue 34): one line, nothing written."""
    argv = ["--backbone", "random:tiny", "--limit", "4", "--resolution", "28", "--num-workers", "0",
            "--probe", "split", "--save-features"]  # fmt: skip
    for name in ("edited", "clean"):
        assert evaluate.main([*argv, "--output", str(tmp_path / name)]) == 0
    _edited(kind, tmp_path / "edited")
    readers = [["--from-features", str(tmp_path / "edited")]]
    if kind in ("text-result", "list"):  # what --compare reads: results.json
        readers.append(["--compare", str(tmp_path / "edited"), str(tmp_path / "clean")])
    for reader in readers:
        assert evaluate.main([*reader, "--output", str(tmp_path / "out")]) == 2
        assert message in one_error(capsys)
        assert not (tmp_path / "out").exists()


def test_a_run_missing_its_arrays_is_compared_with_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 34: the split distributions vanished from the comparison without a word."""
    argv = ["--backbone", "random:tiny", "--limit", "4", "--resolution", "28", "--num-workers", "0",
            "--probe", "split"]  # fmt: skip
    for name in ("first", "second"):
        assert evaluate.main([*argv, "--output", str(tmp_path / name)]) == 0
    (tmp_path / "first" / "arrays.safetensors").unlink()
    with caplog.at_level("WARNING"):
        assert evaluate.main(["--compare", str(tmp_path / "first"), str(tmp_path / "second"),
                              "--output", str(tmp_path / "compared")]) == 0  # fmt: skip
    assert any("holds no arrays.safetensors" in record.getMessage() for record in caplog.records)


def test_the_same_intervention_twice_runs_once_and_a_repeated_target_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 34: `cls@last` beside `cls@2` (a 2-block model), `@all` beside `@1-2`, ran twice."""
    argv = ["--backbone", "random:tiny", "--limit", "2", "--resolution", "28", "--num-workers", "0",
            "--probe", "split"]  # fmt: skip
    specs = ["cls@last:zero", "cls@2:zero", "cls@1-2:zero", "cls@all:zero"]
    with caplog.at_level("WARNING"):
        assert evaluate.main([*argv, "--intervene", *specs, "--output", str(tmp_path / "run")]) == 0
    ran = json.loads((tmp_path / "run" / "results.json").read_text())["run"]["interventions"]
    assert ran == ["model/cls@last/zero", "model/cls@1-2/zero"]
    assert sum("run once" in record.getMessage() for record in caplog.records) == 2
    assert (
        evaluate.main([*argv, "--intervene", "cls+cls@last:zero", "--output", str(tmp_path / "twice")]) == 2
    )
    assert "name cls twice" in one_error(capsys)


@torch.no_grad()
def test_from_model_takes_the_wrappers_the_command_line_loads_and_refuses_unloaded_weights() -> None:
    """Issue 34: `from_model` refused ViTForImageClassification and CLIPModel (the CLI loads their
    folders), and failed inside autocast on a meta-device model."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, ViTConfig, ViTForImageClassification

    from harness import DecomposingBackbone

    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    vit = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    image_size=32, patch_size=4, num_labels=5)  # fmt: skip
    classifier = ViTForImageClassification(vit).eval()
    backbone = DecomposingBackbone.from_model(classifier)
    assert backbone.info.family == "vit" and backbone.info.num_classes == 5
    logits = classifier(pixel_values=pixels).logits
    assert torch.allclose(backbone.classifier(backbone(pixels)["output/full"]), logits, atol=1e-5)
    tower = CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             image_size=32, patch_size=4)  # fmt: skip
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                vocab_size=50, bos_token_id=0, eos_token_id=1)  # fmt: skip
    clip = CLIPModel(CLIPConfig(vision_config=tower.to_dict(), text_config=text, projection_dim=8)).eval()
    backbone = DecomposingBackbone.from_model(clip)
    embedded = clip.get_image_features(pixel_values=pixels)
    embedded = getattr(embedded, "pooler_output", embedded)
    assert backbone.info.projection_dim == 8
    assert torch.allclose(backbone(pixels)["projection/full"], embedded, atol=1e-5)
    with torch.device("meta"):
        unloaded = ViTForImageClassification(vit)
    with pytest.raises(ValueError, match="weights are on the meta device"):
        DecomposingBackbone.from_model(unloaded)


def test_an_intervention_at_the_last_block_lines_up_across_depths(tmp_path: Path) -> None:
    """Issue 34: `cls@last` was recorded as `cls@2` on a 2-block model and `cls@12` on a 12-block one,
    so the comparison never set them side by side; the resolved block is recorded beside the name."""
    argv = ["--backbone", "random:tiny", "random:dinov2_vits14", "--limit", "2", "--resolution", "28",
            "--num-workers", "0", "--probe", "split", "--intervene", "cls@last:zero",
            "--output", str(tmp_path / "both")]  # fmt: skip
    assert evaluate.main(argv) == 0
    blocks = {}
    for run in ("random_tiny", "random_dinov2_vits14"):
        record = json.loads((tmp_path / "both" / run / "results.json").read_text())["run"]
        assert record["interventions"] == ["model/cls@last/zero"]
        blocks[run] = record["intervention_blocks"]["model/cls@last/zero"]
    assert blocks == {"random_tiny": [2], "random_dinov2_vits14": [12]}
    header, *rows = (tmp_path / "both" / "comparison.csv").read_text().splitlines()
    column = header.split(",").index("intervened/model/cls@last/zero/cosine_to_clean")
    assert all(row.split(",")[column] for row in rows) and len(rows) == 2
    # and the figure has one group of bars for it (it had one per depth, each with one bar)
    from cls_decoupling.outputs import load_run
    from cls_decoupling.outputs.compare import Compared
    from probes.interventions import InterventionsProbe

    compared = [Compared(run, load_run(tmp_path / "both" / run)) for run in blocks]
    figure = InterventionsProbe.comparison_figures(compared)["compare_interventions.png"]
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert labels == ["model/cls@last/zero"]


def test_the_one_shot_key_number_is_not_trivially_true_with_few_classes() -> None:
    """Issue 34: with 3 classes report.md's first key number was a one-shot top-5 of 1.0."""
    from types import SimpleNamespace

    from probes.oneshot import OneShotProbe

    few = SimpleNamespace(results={OneShotProbe.CLASSES: 3.0})
    many = SimpleNamespace(results={OneShotProbe.CLASSES: 10.0})
    assert OneShotProbe.run_headlines(few)[0][0] == OneShotProbe.result_name("output/patch", 1)  # type: ignore[arg-type]
    assert OneShotProbe.run_headlines(many)[0][0] == OneShotProbe.result_name("output/patch", 5)  # type: ignore[arg-type]


def test_a_run_that_did_not_measure_a_probe_is_marked_in_comparison_figures() -> None:
    """Issue 34: a run without the probe was drawn as an empty slot that looked like 0 (its legend
    entry still there); its name now says it was not measured, in grey, and no line joins models."""
    from dataclasses import dataclass, field

    import matplotlib.pyplot as plt

    from harness import BackboneInfo
    from probes.registers import RegistersProbe
    from probes.split import SplitProbe

    model = BackboneInfo("m", "random", "", 8, 2, 2, 0, 4, False, True)

    @dataclass(frozen=True)
    class Fake:
        results: dict[str, float]
        arrays: dict[str, object] = field(default_factory=dict)
        info: BackboneInfo = model
        num_registers: int = 0
        num_distillation: int = 0

    @dataclass(frozen=True)
    class Labelled:
        label: str
        run: Fake

    split = {SplitProbe.result_name(c, s): 0.5 for c in SplitProbe.COLUMNS for s in SplitProbe.STATS}
    registers = {RegistersProbe.result_name(key): 0.5 for key in RegistersProbe.RESULTS}
    compared = [Labelled("measured", Fake(split | registers)), Labelled("other", Fake({}))]
    for probe, file in ((SplitProbe, "compare_split.png"), (RegistersProbe, "compare_registers.png")):
        figure = probe.comparison_figures(compared)[file]  # type: ignore[arg-type]
        labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
        assert labels == ["measured", "other\n(not measured)"], probe.name
        assert all(line.get_linestyle() == "None" for line in figure.axes[0].get_lines() if line.get_marker())
        plt.close(figure)


def test_ctrl_c_after_a_folder_was_finished_says_what_was_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 34: Ctrl-C during shutdown, after `.complete` or the head file, said nothing of what was
    kept; the line names what the command finished (complete) besides the unfinished rule."""
    from cls_decoupling.cli.options import run_main
    from cls_decoupling.outputs import writing

    monkeypatch.setattr(writing, "KEPT", [])

    def finished_then_interrupted() -> None:
        writing._finish(tmp_path)
        raise KeyboardInterrupt

    assert run_main(finished_then_interrupted) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: interrupted; kept, complete: ") and str(tmp_path) in err
    assert err.count("\n") == 0
    monkeypatch.setattr(writing, "KEPT", [])

    def interrupted() -> None:
        raise KeyboardInterrupt

    assert run_main(interrupted) == 130
    assert (
        capsys.readouterr().err.strip()
        == "error: interrupted; an unfinished output folder has no .complete marker"
    )


def _edits() -> dict[str, tuple[str, Callable[[Path], None]]]:
    """Hand-edits of a finished run folder: name -> (the file, how it is edited)."""

    def remove(path: Path) -> None:
        path.unlink()

    def empty(path: Path) -> None:
        path.write_bytes(b"")

    def garbage(path: Path) -> None:
        path.write_bytes(bytes(range(256)) * 4)

    def truncated(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def json_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
        def edit(path: Path) -> None:
            path.write_text(json.dumps(change(json.loads(path.read_text()))))

        return edit

    edits: dict[str, tuple[str, Callable[[Path], None]]] = {}
    for file in ("results.json", "arrays.safetensors", "features.safetensors"):
        for name, edit in (
            ("removed", remove),
            ("empty", empty),
            ("garbage", garbage),
            ("truncated", truncated),
        ):
            edits[f"{file} {name}"] = (file, edit)
    edits["results.json a list"] = ("results.json", json_edit(lambda data: []))
    edits["results.json no backbone"] = ("results.json", json_edit(lambda data: {**data, "backbone": None}))
    edits["results.json results a string"] = (
        "results.json",
        json_edit(lambda data: {**data, "results": "x"}),
    )
    edits["results.json hidden size edited"] = (
        "results.json", json_edit(lambda data: {**data, "backbone": {**data["backbone"], "hidden_size": 7}}),
    )  # fmt: skip
    return edits


def test_every_reader_of_a_run_folder_survives_every_hand_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 34, as a property: every reader of a finished run folder (`--compare`, `--from-features`)
    answers each hand-edit of each of its files with a result or one `error:` line (exit 2), never a
    traceback, and never leaves a folder that looks finished when it refused."""
    argv = ["--backbone", "random:tiny", "--data", "demo", "--limit", "3", "--resolution", "28",
            "--num-workers", "0", "--probe", "split,cka", "--save-features"]  # fmt: skip
    assert evaluate.main([*argv, "--output", str(tmp_path / "clean")]) == 0
    assert evaluate.main([*argv, "--output", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    for number, (name, (file, edit)) in enumerate(_edits().items()):
        edited = tmp_path / f"edited{number}"
        shutil.copytree(tmp_path / "clean", edited)
        edit(edited / file)
        readers = {
            "compare": [
                "--compare",
                str(edited),
                str(tmp_path / "other"),
                "--output",
                str(tmp_path / f"c{number}"),
            ],
            "replay": [
                "--from-features",
                str(edited),
                "--probe",
                "split",
                "--output",
                str(tmp_path / f"r{number}"),
            ],
        }
        for reader, command in readers.items():
            try:
                status = evaluate.main(command)
            except Exception as error:  # a traceback: the defect this test is for
                pytest.fail(f"{reader} of a folder with {name}: {type(error).__name__}: {error}")
            err = capsys.readouterr().err
            assert status in (0, 2), (reader, name, status)
            if status == 2:
                assert err.strip().splitlines()[-1].startswith("error:"), (reader, name, err)
                assert not (Path(command[-1]) / ".complete").exists(), (reader, name)


_OPTION_VALUES = {
    "--backbone": ["random:tiny"], "--layers": ["1"], "--intervene": ["cls@1:zero"], "--maps": ["attention"],
    "--register-neurons": ["1:0"], "--probe": ["split"], "--compare": ["a", "b"], "--accelerator": ["cpu"],
    "--devices": ["2"], "--strategy": ["ddp"], "--head": ["model"], "--resolution": ["28"],
    "--crop-ratio": ["0.5"], "--learning-rates": ["0.1"], "--val-fraction": ["0.2"],
}  # fmt: skip
"""A valid value for the options whose value has a form of its own; the others take one by type."""


def _options(parse: Callable[[list[str]], Any]) -> list[Any]:
    """Every option of an entry point's parser (its argparse actions but --help)."""
    import argparse
    from unittest import mock

    seen: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args

    def parsing(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        seen.append(self)
        return real(self, *args, **kwargs)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parsing):
        parse(["--output", "o"])
    return [action for action in seen[0]._actions if action.option_strings and action.dest != "help"]


def _value_for(action: Any) -> list[str]:
    """A value of `action` other than its default."""
    name = action.option_strings[-1]
    if name in _OPTION_VALUES:
        return _OPTION_VALUES[name]
    if action.nargs == 0 or (action.const is not None and action.nargs == "?"):
        return []
    if action.choices:
        return [next(str(choice) for choice in action.choices if choice != action.default)]
    if action.type is int:
        return [str((action.default or 0) + 2)]
    return ["3.0"] if action.type is float else ["x"]


@pytest.mark.parametrize("entry", ["evaluate", "train_probe"])
def test_every_option_of_every_entry_point_has_an_effect_or_a_refusal(entry: str) -> None:
    """Issue 34, as a property: each option given alone (with a valid value other than its default)
    either changes what the entry point hands its work function (the typed options) or is refused in
    one line; none is parsed and dropped (`--train-split` without `--train-data` was)."""
    from unittest import mock

    module = {"evaluate": evaluate, "train_probe": train_probe}[entry]
    work = {"evaluate": "evaluate", "train_probe": "train_probe"}[entry]

    def handed(argv: list[str]) -> tuple[int, dict[str, Any]]:
        got: dict[str, Any] = {}
        with mock.patch.object(module, work, lambda **arguments: got.update(arguments)):
            return module.main(argv), got

    status, default = handed(["--output", "o"])
    assert status == 0
    options = _options(module.parse_args)
    assert len(options) > 15
    for action in options:
        if action.dest == "output":
            continue
        argv = ["--output", "o", action.option_strings[-1], *_value_for(action)]
        status, arguments = handed(argv)
        changed = [name for name in arguments if repr(arguments[name]) != repr(default.get(name))]
        assert status == 2 or changed, f"{' '.join(argv[2:])} is parsed and dropped"
