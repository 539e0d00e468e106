"""`--data hf`: a Hugging Face dataset built here (no download) from the same image files as a folder
gives the same batches, labels, class names and skips as the folder, saved with `save_to_disk` or
written to parquet, whole or streamed; every failure is one line."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

from cls_decoupling.cli import evaluate
from datamodules import UNLABELLED, DataError, ImageDataModule, folder_images
from datamodules.huggingface import decoded, hf_images
from datamodules.images import load_rgb
from tests.datamodules.test_bad_files import write_awkward_folder

RESOLUTION = 28
BROKEN = ("i_zero.jpg", "j_truncated.jpg", "k_text.png", "l_huge.png")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reaches the hub, and parquet conversions go to a cache of the test's own."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write_folder(root: Path) -> None:
    """The folder source's awkward images (`write_awkward_folder`: CMYK, RGBA, 16-bit, palette with
    transparency, grayscale, EXIF-rotated, large) and those that cannot be decoded (empty, truncated,
    text, a decompression bomb), in two class folders."""
    write_awkward_folder(root)


def features() -> datasets.Features:
    return datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["cats", "dogs"])}
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The folder, and the same files (their bytes, in the folder's order) as a saved dataset, a
    saved DatasetDict (validation: the first six rows), a parquet file and a dataset of paths."""
    root = tmp_path_factory.mktemp("hf")
    write_folder(root / "folder")
    images = folder_images(root / "folder")
    rows = {
        "image": [{"bytes": path.read_bytes(), "path": None} for path in images.files],
        "label": list(images.labels),
    }
    dataset = datasets.Dataset.from_dict(rows, features=features())
    dataset.save_to_disk(str(root / "saved"))
    datasets.DatasetDict({"train": dataset, "validation": dataset.select(range(6))}).save_to_disk(
        str(root / "splits")
    )
    dataset.to_parquet(str(root / "parquet" / "data.parquet"))
    paths = {"image": [{"bytes": None, "path": str(path)} for path in images.files], "label": rows["label"]}
    datasets.Dataset.from_dict(paths, features=features()).save_to_disk(str(root / "paths"))
    yield {name: root / name for name in ("folder", "saved", "splits", "parquet", "paths")}


def read_all(module: ImageDataModule) -> tuple[dict[int, torch.Tensor], dict[int, int], list[int]]:
    """Pixels and labels by dataset index, and the skipped indices, of a whole pass."""
    module.setup("test")
    pixels, labels, skipped = {}, {}, []
    for batch in module.test_dataloader():
        for row, index in enumerate(batch["index"].tolist()):
            pixels[index], labels[index] = batch["pixels"][row], int(batch["label"][row])
        skipped += [index for index, _ in batch["skipped"]]
    return pixels, labels, sorted(skipped)


def module(source: str, where: Path, **options: Any) -> ImageDataModule:
    return ImageDataModule(
        source, where, **{"resolution": RESOLUTION, "batch_size": 4, "num_workers": 0, **options}
    )


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        pytest.param("saved", {}, id="save_to_disk"),
        pytest.param("saved", {"num_workers": 1}, id="save_to_disk-worker"),
        pytest.param("parquet", {}, id="parquet-file"),
        pytest.param("parquet", {"streaming": True, "limit": 100}, id="parquet-streamed"),
        pytest.param("paths", {}, id="image-paths"),
    ],
)
def test_the_batches_equal_the_folders(data: dict[str, Path], kind: str, options: dict[str, Any]) -> None:
    """The same bytes through the same decoder and transform: equal tensors, labels and skips."""
    where = data[kind] / "data.parquet" if kind == "parquet" else data[kind]
    hf = module("hf", where, **options)
    folder = module("folder", data["folder"])
    hf_pixels, hf_labels, hf_skipped = read_all(hf)
    pixels, labels, skipped = read_all(folder)
    names = [path.name for path in folder.images.files]
    assert [names[index] for index in hf_skipped] == list(BROKEN) and hf_skipped == skipped
    assert hf_labels == labels and hf.class_names == folder.class_names == ("cats", "dogs")
    assert hf_pixels.keys() == pixels.keys()
    for index, expected in pixels.items():
        assert torch.equal(hf_pixels[index], expected), names[index]


def test_each_image_value_decodes_as_its_file(data: dict[str, Path]) -> None:
    """An Image feature's bytes or path, raw bytes and a PIL image give the file's RGB pixels."""
    path = data["folder"] / "cats" / "b_cmyk.jpg"
    expected = np.asarray(load_rgb(path))
    with Image.open(path) as opened:
        opened.load()
        values = [{"bytes": path.read_bytes(), "path": None}, {"bytes": None, "path": str(path)},
                  path.read_bytes(), opened]  # fmt: skip
        for value in values:
            assert np.array_equal(np.asarray(decoded(value)), expected)
    with pytest.raises(TypeError, match="not an image"):
        decoded(None)


def test_results_record_the_dataset_split_and_columns(data: dict[str, Path]) -> None:
    hf = module("hf", data["splits"])
    hf.setup("test")
    description = hf.describe()
    assert description["split"] == "validation" and description["files"] == 6
    assert description["hf"] == {
        "dataset": str(data["splits"].resolve()), "kind": "saved", "split": "validation",
        "image_column": "image", "label_column": "label", "streaming": False, "split_rows": 6,
    }  # fmt: skip
    assert description["class_names"] == ["cats", "dogs"] and description["labelled"]


def test_limit_and_per_class_choose_the_folders_images(data: dict[str, Path]) -> None:
    """The subsets are drawn from the labels with the seed: the same positions as the folder's."""
    for options in ({"limit": 5, "seed": 3}, {"per_class": 2, "seed": 1}):
        hf, folder = module("hf", data["saved"], **options), module("folder", data["folder"], **options)
        hf.setup("test")
        folder.setup("test")
        every = folder_images(data["folder"]).files
        assert list(hf.images.rows) == [every.index(path) for path in folder.images.files]  # type: ignore[attr-defined]
        assert hf.images.labels == folder.images.labels


def test_a_dataset_dict_reads_the_split_asked(data: dict[str, Path]) -> None:
    assert len(hf_images(str(data["splits"]))) == 6  # validation by default
    train = hf_images(str(data["splits"]), split="train")
    assert len(train) == 13 and train.origin["split"] == "train"
    with pytest.raises(DataError, match=r"has no split 'val'; its splits: train, validation$"):
        hf_images(str(data["splits"]), split="val")
    with pytest.raises(DataError, match=r"holds one dataset .* drop --split val"):
        hf_images(str(data["saved"]), split="val")


def test_a_dataset_folder_and_a_name_in_the_cache(data: dict[str, Path], tmp_path: Path) -> None:
    """A folder in the hub's layout (parquet files named by split) is read as it is; once loaded, the
    local cache holds it, where a dataset name finds it offline (as a download leaves a hub dataset)."""
    folder = tmp_path / "repo"
    saved = datasets.load_from_disk(str(data["saved"]))
    saved.to_parquet(str(folder / "data" / "validation-00000-of-00001.parquet"))
    saved.select(range(4)).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    read = hf_images(str(folder))
    assert read.origin["kind"] == "folder" and read.origin["split"] == "validation"
    assert read.labels == folder_images(data["folder"]).labels and read.class_names == ("cats", "dogs")
    cache = tmp_path / "hf-cache"
    shutil.copytree(cache / "repo", cache / "someone___repo")  # the cache's name of someone/repo
    named = hf_images("someone/repo", split="train")
    assert named.origin["kind"] == "name" and named.origin["dataset"] == "someone/repo"
    assert named.labels == read.labels[:4] and named.class_names == ("cats", "dogs")


def test_a_stream_reads_its_first_rows(data: dict[str, Path]) -> None:
    hf = module("hf", data["saved"], streaming=True, limit=3)
    _, labels, skipped = read_all(hf)
    assert hf.images.rows == (0, 1, 2) and labels == {0: 0, 1: 0, 2: 0} and not skipped  # type: ignore[attr-defined]
    assert hf.describe()["hf"]["streaming"] is True
    with pytest.raises(DataError, match="--streaming reads the first --limit N rows"):
        module("hf", data["saved"], streaming=True)
    with pytest.raises(DataError, match=r"--per-class .* a stream cannot"):
        module("hf", data["saved"], streaming=True, limit=3, per_class=1)


def test_labels_without_class_label_and_no_labels(tmp_path: Path) -> None:
    """An integer `label` column: its values are the indices, named by number; no label column, or
    only -1 (ClassLabel's missing label): unlabelled; some rows without a label: refused."""
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, format="PNG")
    rows = [{"bytes": image.getvalue(), "path": None}] * 3
    kinds = {"int": [0, 3, 1], "none": None, "missing": [-1, -1, -1], "some": [0, -1, 1]}
    for kind, labels in kinds.items():
        columns: dict[str, Any] = {"img": rows, **({"label": labels} if labels is not None else {})}
        datasets.Dataset.from_dict(columns).cast_column("img", datasets.Image()).save_to_disk(
            str(tmp_path / kind)
        )
    numbered = hf_images(str(tmp_path / "int"))
    assert numbered.labels == (0, 3, 1) and numbered.class_names == ("0", "1", "2", "3")
    with pytest.raises(DataError, match=r"1 of the 3 rows of .* have no label in column label"):
        hf_images(str(tmp_path / "some"))
    for kind in ("none", "missing"):
        unlabelled = hf_images(str(tmp_path / kind))
        assert unlabelled.labels == (UNLABELLED,) * 3 and not unlabelled.labelled


@pytest.mark.parametrize(
    ("where", "options", "message"),
    [
        pytest.param(
            "/no/such/dataset", {}, "does not exist and is not a Hugging Face dataset name", id="no-dir"
        ),
        pytest.param(
            "nobody/no-such-dataset",
            {},
            "cannot load the Hugging Face dataset nobody/no-such-dataset",
            id="unknown-name-offline",
        ),
        pytest.param(
            "saved",
            {"image_column": "picture"},
            r"--image-column picture: .* its columns: image, label",
            id="no-image-column",
        ),
        pytest.param(
            "saved",
            {"label_column": "labels"},
            r"--label-column labels: .* its columns: image, label",
            id="no-label-column",
        ),
        pytest.param("saved", {"label_column": "image"}, "not class indices", id="label-not-indices"),
        pytest.param("empty", {}, "cannot load the Hugging Face dataset", id="no-data-files"),
        pytest.param("text", {}, r"has no Image column .* \(columns: text\)$", id="no-image-column-at-all"),
    ],
)
def test_failures_are_one_line(
    data: dict[str, Path], where: str, options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("a folder of text files is a text dataset")
    local = str(tmp_path / where) if (tmp_path / where).is_dir() else where
    location = str(data[where]) if where in data else local
    with pytest.raises(DataError, match=message) as error:
        hf_images(location, **options)
    assert "\n" not in str(error.value)


def test_the_hf_options_need_data_hf_and_coco_imagenet_keep_their_splits(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match="--image-column, --streaming read a Hugging Face dataset: add --data hf"
    ):
        ImageDataModule("folder", tmp_path, image_column="img", streaming=True, limit=3)
    with pytest.raises(DataError, match="--split validation: imagenet has the splits val, train"):
        ImageDataModule("imagenet", tmp_path, split="validation")
    assert ImageDataModule("folder", tmp_path).split == "val"


def test_a_run_over_a_saved_dataset(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: results.json says what was read and what was skipped; a bad column is one line."""
    argv = ["--backbone", "random:tiny", "--data", "hf", "--data-dir", str(data["saved"]), "--probe", "split",
            "--resolution", "28", "--batch-size", "4", "--num-workers", "0"]  # fmt: skip
    assert evaluate.main([*argv, "--output", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert (
        summary["source"] == "hf"
        and summary["hf"]["kind"] == "saved"
        and summary["hf"]["image_column"] == "image"
    )
    assert summary["num_images"] == 9 and summary["num_skipped"] == len(BROKEN)
    rows = [f"row[{row}]" for row in range(8, 8 + len(BROKEN))]
    assert [entry["reason"].split(":")[0] for entry in summary["skipped"]] == rows
    capsys.readouterr()
    assert evaluate.main([*argv, "--label-column", "nope", "--output", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0 and not (tmp_path / "bad").exists()
    assert (
        evaluate.main(["--backbone", "random:tiny", "--image-column", "img", "--output", str(tmp_path / "x")])
        == 2
    )
    assert "add --data hf (not demo)" in capsys.readouterr().err
