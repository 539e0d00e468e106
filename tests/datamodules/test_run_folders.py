"""A run or comparison folder of this tool inside the data, finished or not, is left out of every
listing (its figures are not images), counted and recorded; the rule knows what the outputs write."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from common import run_folders
from common.run_folders import COMPLETE_MARKER, FIGURES_DIR, RESULTS_FILE, lock_name
from datamodules import DataError, ImageDataModule, folder_images
from datamodules.coco import coco_images
from datamodules.imagenet import imagenet_images
from tests.conftest import write_photos
from tests.datamodules.test_imagenet import class_folder_layout, kaggle_layout


def test_the_rule_knows_the_names_the_outputs_write(tmp_path: Path) -> None:
    from cls_decoupling.outputs import output_lock, runs
    from cls_decoupling.outputs.compare import COMPARISON_CSV, COMPARISON_MARKDOWN

    assert (runs.RESULTS_FILE, runs.COMPLETE_MARKER, runs.FIGURES_DIR) == (
        RESULTS_FILE,
        COMPLETE_MARKER,
        FIGURES_DIR,
    )
    assert set(run_folders.COMPARISON_TABLES) == {COMPARISON_MARKDOWN, COMPARISON_CSV}
    with output_lock(tmp_path / "run"):
        pass
    assert run_folders.locked_folders(os.listdir(tmp_path)) == {"run"}
    assert (tmp_path / lock_name("run")).is_file()


def finished_run(folder: Path) -> None:
    write_photos(folder / FIGURES_DIR, 2)
    (folder / RESULTS_FILE).write_text("{}")
    (folder / "report.md").write_text("# run")
    (folder / COMPLETE_MARKER).write_text("finished\n")


def unfinished_run(folder: Path) -> None:
    """Killed while drawing its figures: results.json (written first) and some figures, no marker."""
    write_photos(folder / FIGURES_DIR, 1)
    (folder / RESULTS_FILE).write_text("{")


def finished_comparison(folder: Path) -> None:
    finished_run(folder / "random_tiny")
    finished_run(folder / "random_tiny_reg")
    write_photos(folder / FIGURES_DIR, 2)
    (folder / "comparison.md").write_text("# comparison")
    (folder / "comparison.csv").write_text("backbone\n")
    (folder / COMPLETE_MARKER).write_text("finished\n")


def comparison_killed_in_place(folder: Path) -> None:
    """A comparison killed while drawing its first figure: only figures/, and its lock beside it."""
    write_photos(folder / FIGURES_DIR, 1)
    (folder.parent / lock_name(folder.name)).write_text("")


def replaced_comparison(folder: Path) -> None:
    """A sweep writing again over an earlier comparison: its marker removed, its files still there."""
    finished_comparison(folder)
    (folder / COMPLETE_MARKER).unlink()


RUN_FOLDERS = [
    pytest.param(finished_run, id="finished-run"),
    pytest.param(unfinished_run, id="unfinished-run"),
    pytest.param(finished_comparison, id="finished-comparison"),
    pytest.param(comparison_killed_in_place, id="comparison-killed-in-place"),
    pytest.param(replaced_comparison, id="comparison-being-replaced"),
]


@pytest.mark.parametrize("write_run", RUN_FOLDERS)
@pytest.mark.parametrize("where", ["top", "in-a-class"])
def test_a_run_folder_in_the_data_is_left_out(
    write_run: Callable[[Path], None], where: str, tmp_path: Path
) -> None:
    clean, data = tmp_path / "clean", tmp_path / "data"
    for root in (clean, data):
        write_photos(root / "ant", 3)
        write_photos(root / "zebra", 2, seed=1)
    run = data / "earlier" if where == "top" else data / "ant" / "earlier"
    write_run(run)
    expected, images = folder_images(clean), folder_images(data)
    assert [path.relative_to(data) for path in images.files] == [
        path.relative_to(clean) for path in expected.files
    ]
    assert images.labels == expected.labels and images.class_names == ("ant", "zebra")
    assert images.run_folders == (run,) and expected.run_folders == ()


@pytest.mark.parametrize(
    "lookalike",
    [
        pytest.param(lambda d: (d / COMPLETE_MARKER).write_text("md5\n"), id="download-marker"),
        pytest.param(lambda d: (d.parent / lock_name(d.name)).write_text(""), id="stale-lock"),
        pytest.param(lambda d: None, id="class-named-figures"),
        pytest.param(lambda d: (d / RESULTS_FILE).write_text("{}"), id="a-datasets-own-results-json"),
        pytest.param(lambda d: (d / "comparison.csv").write_text("a,b\n"), id="a-datasets-own-csv"),
    ],
)
def test_folders_that_only_look_like_a_run_are_listed(
    lookalike: Callable[[Path], None], tmp_path: Path
) -> None:
    """A download's marker, a lock left by a run once written there, or a dataset's own results.json
    or comparison.csv beside its images, none with `figures/` (the only images a run writes); and a
    class folder named `figures` (the data root holds no marker)."""
    write_photos(tmp_path / "ant", 2)
    write_photos(tmp_path / FIGURES_DIR, 2)
    lookalike(tmp_path / "ant")
    images = folder_images(tmp_path)
    assert images.class_names == ("ant", FIGURES_DIR) and len(images.files) == 4
    assert images.run_folders == ()


def test_a_data_folder_that_is_a_run_folder_is_refused(tmp_path: Path) -> None:
    finished_run(tmp_path / "run")
    with pytest.raises(DataError, match=r"run or comparison folder of this tool, not a folder of images"):
        folder_images(tmp_path / "run")
    comparison_killed_in_place(tmp_path / "sweep")
    with pytest.raises(DataError, match=r"point --data-dir \(or --train-dir\) at the images"):
        folder_images(tmp_path / "sweep")


def test_a_folder_of_only_run_folders_says_so(tmp_path: Path) -> None:
    finished_run(tmp_path / "a")
    unfinished_run(tmp_path / "b")
    with pytest.raises(DataError, match=r"no image files .* \(left out: 2 run folders of this tool\)"):
        folder_images(tmp_path)


def test_coco_and_imagenet_leave_run_folders_out(tmp_path: Path) -> None:
    write_photos(tmp_path / "coco" / "val2017", 3)
    finished_run(tmp_path / "coco" / "val2017" / "run")
    coco = coco_images(tmp_path / "coco")
    assert len(coco.files) == 3 and coco.run_folders == (tmp_path / "coco" / "val2017" / "run",)
    for layout in (class_folder_layout, kaggle_layout):
        root = tmp_path / layout.__name__
        expected = imagenet_images(layout(root), "val")
        run = root / "val" / (expected.files[0].parent.name if layout is class_folder_layout else "") / "run"
        unfinished_run(run)
        images = imagenet_images(root, "val")
        assert (images.files, images.labels) == (expected.files, expected.labels)
        assert images.run_folders == (run,), layout.__name__


def test_the_data_module_logs_and_records_what_it_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_photos(tmp_path / "photos", 3)
    finished_run(tmp_path / "photos" / "earlier")
    shutil.copytree(tmp_path / "photos" / "earlier", tmp_path / "photos" / "again")
    data = ImageDataModule("folder", tmp_path / "photos", resolution=28, num_workers=0, limit=2)
    with caplog.at_level(logging.WARNING, logger="datamodules.datamodule"):
        data.setup("test")
        data.setup("test")  # listed once
    left_out = [record.getMessage() for record in caplog.records if "run folder" in record.getMessage()]
    assert len(left_out) == 1 and left_out[0].startswith("left out 2 run folder(s) of this tool")
    assert data.describe()["skipped_run_folders"] == [
        str((tmp_path / "photos" / name).resolve()) for name in ("again", "earlier")
    ]
    assert data.describe()["files"] == 2
