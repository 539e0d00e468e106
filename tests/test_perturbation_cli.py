"""`--perturbation pixels` end to end (a random ViT classifier read with `--head model`, prepared as
Chefer et al. prepare theirs: the whole image to a square, no crop), and its one-line refusals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from cls_decoupling.cli import evaluate
from harness.extras.attribution import PIXEL_FRACTIONS
from tests.test_train_probe import common_args, own_classifier_model


def test_pixels_and_tokens_end_to_end(classifier_folders: dict[str, Path]) -> None:
    folders = classifier_folders
    output = folders["root"] / "run"
    argv = [*common_args(folders["vit"]), "--data", "folder", "--data-dir", str(folders["val"]),
            "--probe", "attribution", "--head", "model", "--maps", "attention,rollout",
            "--perturbation", "tokens,pixels", "--resize", "square", "--crop-ratio", "1",
            "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 0
    written = json.loads((output / "results.json").read_text())
    results = written["results"]
    prepared = written["data"]["preprocessing"]  # theirs: 0.5 / 0.5, the whole image to the square
    assert prepared["mean"] == prepared["std"] == [0.5] * 3 and prepared["resize"] == "square"
    full = results["maps/full/accuracy"]
    for name in ("attention", "rollout"):
        for order in ("positive", "negative"):
            prefix = f"maps/{name}/pixels/{order}"
            steps = [results[f"{prefix}/{round(100 * f)}"] for f in PIXEL_FRACTIONS]
            assert all(0 <= step <= 1 for step in steps)
            assert 0 <= results[f"{prefix}/area"] <= 90
            # the area is the trapezoid of the mean curve from the full images' accuracy
            curve = [full, *steps]
            expected = sum((a + b) / 2 * 10 for a, b in itertools.pairwise(curve))
            assert results[f"{prefix}/area"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert f"maps/{name}/deletion/accuracy/gain" in results  # the token scores ran too
    assert 0 <= results["maps/random/pixels/area"] <= 90
    assert (output / "figures" / "attribution_pixels.png").is_file()
    assert (output / "figures" / "attribution_curves.png").is_file()
    assert "maps/rollout/pixels/negative/area" in (output / "report.md").read_text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--probe", "split", "--perturbation", "pixels"],
            "--perturbation chooses how the attribution probe",
        ),
        (["--probe", "attribution", "--perturbation", "pixels"], "add --head (a head file, or model)"),
        (["--probe", "attribution", "--perturbation", "voxels"], "--perturbation: unknown voxels"),
    ],
    ids=["without the probe", "without class scores", "unknown"],
)
def test_refused_in_one_line_before_any_model(
    classifier_folders: dict[str, Path], options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folders = classifier_folders
    output = folders["root"] / "refused"
    argv = [*common_args(folders["vit"]), "--data", "folder", "--data-dir", str(folders["val"]), *options,
            "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1 and not output.exists()


def test_labels_that_do_not_index_the_classifier_are_refused(
    classifier_folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folders = classifier_folders
    own_classifier_model(folders["root"] / "vit5", classes=5)
    output = folders["root"] / "five"
    argv = [*common_args(folders["root"] / "vit5"), "--data", "folder", "--data-dir", str(folders["val"]),
            "--probe", "attribution", "--head", "model", "--perturbation", "pixels",
            "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 2
    assert "do not index the class scores' classes" in capsys.readouterr().err
