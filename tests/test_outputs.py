"""What a run folder holds besides results.json: arrays, per-image faithfulness, figures, report.md."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cls_decoupling.cli import evaluate
from tests.conftest import tiny_model, write_labelled_photos

EVERY_FIGURE = {
    "split.png", "registers.png", "cka.png", "cka_debiased.png", "oneshot.png", "linear.png", "maps.png",
    "faithfulness.png", "norms.png", "layerwise.png", "heads.png", "heads_update.png",
}  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every probe on 18 labelled photos (3 classes), features saved."""
    root = tmp_path_factory.mktemp("full")
    tiny_model(registers=4, hidden=32, heads=2, patch=14, image=56).save_pretrained(root / "model")
    write_labelled_photos(root / "photos", per_class=6)
    argv = [
        "--backbone", str(root / "model"), "--data", "folder", "--data-dir", str(root / "photos"),
        "--probe", "all", "--save-features", "--output", str(root / "run"), "--resolution", "56",
        "--batch-size", "5", "--num-workers", "0",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    return root / "run"


def test_every_probe_draws_a_valid_png_and_a_tensorboard_image(full_run: Path) -> None:
    names = {path.name for path in (full_run / "figures").iterdir()}
    assert names == EVERY_FIGURE
    for name in names:
        with Image.open(full_run / "figures" / name) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 300
    accumulator = EventAccumulator(str(full_run / "tensorboard"))
    accumulator.Reload()
    assert {f"figures/{Path(name).stem}" for name in EVERY_FIGURE} <= set(accumulator.Tags()["images"])


def test_split_histograms_equal_numpy_histograms_of_the_saved_splits(full_run: Path) -> None:
    arrays, features = (
        load_file(str(full_run / "arrays.safetensors")),
        load_file(str(full_run / "features.safetensors")),
    )
    edges = arrays["split/bin_edges"]
    assert edges[0] == 0 and edges[-1] == 1
    for group in ("cls", "register", "patch"):
        expected, _ = np.histogram(features[f"split/{group}"].astype(np.float64), bins=edges)
        np.testing.assert_array_equal(arrays[f"split/{group}/histogram"], expected, err_msg=group)
    register, patch = (
        features["split/register"].astype(np.float64),
        features["split/patch"].astype(np.float64),
    )
    expected, _ = np.histogram(register / (register + patch), bins=edges)
    np.testing.assert_array_equal(arrays["split/register_vs_patch/histogram"], expected)


def test_registers_positions_are_the_saved_top_tokens(full_run: Path) -> None:
    arrays, features = (
        load_file(str(full_run / "arrays.safetensors")),
        load_file(str(full_run / "features.safetensors")),
    )
    counts = arrays["registers/top_token_counts"]
    assert counts.shape == (1 + 4 + 16,)  # [CLS], 4 registers, 4 x 4 patches at 56 px
    np.testing.assert_array_equal(
        counts, np.bincount(features["penultimate/top_token"].astype(np.int64), minlength=21)
    )


def test_faithfulness_csv_is_the_cosine_of_the_saved_features(full_run: Path) -> None:
    features = load_file(str(full_run / "features.safetensors"))
    with (full_run / "faithfulness.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["index"]) for row in rows] == features["index"].tolist()
    assert all(Path(row["file"]).is_file() for row in rows)
    for readout in ("attention", "output"):
        full, patch = (features[f"{readout}/{v}"].astype(np.float64) for v in ("full", "patch"))
        cosine = (full * patch).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(patch, axis=1)
        saved = np.array([float(row[f"maps/{readout}/patch"]) for row in rows])
        np.testing.assert_allclose(saved, cosine, atol=1e-6, err_msg=readout)
    summary = json.loads((full_run / "results.json").read_text())
    assert summary["results"]["maps/attention/patch/mean"] == pytest.approx(
        np.mean([float(row["maps/attention/patch"]) for row in rows]), abs=1e-12
    )


def test_gallery_shows_the_least_and_most_faithful_images(full_run: Path) -> None:
    arrays = load_file(str(full_run / "arrays.safetensors"))
    cosine, index = arrays["maps/attention/patch"], arrays["maps/index"]
    order = np.argsort(cosine, kind="stable")
    expected = [*index[order[:6]], *index[order[::-1][:6]]]
    assert arrays["maps/gallery/index"].tolist() == expected and int(arrays["maps/gallery/least"]) == 6
    assert (
        arrays["maps/gallery/image"].shape == (12, 3, 56, 56)
        and arrays["maps/gallery/image"].dtype == np.uint8
    )
    assert arrays["maps/gallery/map"].shape == (12, 4, 4)
    features = load_file(str(full_run / "features.safetensors"))
    rows = np.searchsorted(features["index"], arrays["maps/gallery/index"])
    # a map is the head-averaged [CLS] attention on each patch: it sums to the image's patch share
    np.testing.assert_allclose(
        arrays["maps/gallery/map"].sum((1, 2)), features["split/patch"][rows], atol=1e-5
    )


def test_report_lists_configuration_numbers_and_figures(full_run: Path) -> None:
    report = (full_run / "report.md").read_text()
    summary = json.loads((full_run / "results.json").read_text())
    assert report.startswith("# ") and "18 images" in report.splitlines()[0]
    assert "Random weights" not in report  # a saved model folder is not flagged as random
    for section in ("## Key numbers", "## Backbone", "## Data", "## Run", "## Figures", "## Results: maps"):
        assert section in report, section
    linked = set(re.findall(r"!\[[^\]]*\]\(figures/([\w.]+)\)", report))
    assert linked == EVERY_FIGURE
    for name in summary["results"]:  # every number is in the report, by name
        assert re.search(rf"\| {re.escape(name)} \| [^|]+ \|", report), name
