"""ImageNet in the three layouts the official downloads produce, built with real JPEG encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from datamodules import DataError
from datamodules.imagenet import imagenet_images

# (ILSVRC2012_ID in the devkit, wnid, words); the IDs are deliberately not in wnid order
SYNSETS = [(3, "n01440764", "tench, Tinca tinca"), (1, "n01443537", "goldfish, Carassius auratus"),
           (2, "n01484850", "great white shark, white shark")]  # fmt: skip
VAL_LABELS = ["n01484850", "n01440764", "n01443537", "n01440764", "n01484850", "n01443537", "n01440764"]


def jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def write_meta_mat(path: Path) -> None:
    """The devkit's meta.mat: a struct array of synsets, leaves (num_children 0) and one inner node."""
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(i, w, words, 0) for i, w, words in SYNSETS] + [(1001, "n00001740", "entity", 3)]
    records = np.array(rows, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"synsets": records.reshape(-1, 1)})


def class_folder_layout(root: Path) -> Path:
    for number, wnid in enumerate(VAL_LABELS, start=1):
        jpeg(root / "val" / wnid / f"ILSVRC2012_val_{number:08d}.JPEG", number)
    return root


def devkit_layout(root: Path) -> Path:
    for number in range(1, len(VAL_LABELS) + 1):
        jpeg(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG", number)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    id_of = {wnid: ilsvrc_id for ilsvrc_id, wnid, _ in SYNSETS}
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{id_of[w]}\n" for w in VAL_LABELS))
    write_meta_mat(data / "meta.mat")
    return root


def kaggle_layout(root: Path) -> Path:
    for number in range(1, len(VAL_LABELS) + 1):
        jpeg(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG", number)
    rows = [f"ILSVRC2012_val_{n:08d},{w} 1 2 10 12 {w} 3 3 9 9" for n, w in enumerate(VAL_LABELS, start=1)]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {words}\n" for _, w, words in sorted(SYNSETS, key=lambda s: s[1]))
    )
    return root


@pytest.mark.parametrize(
    "layout", [class_folder_layout, devkit_layout, kaggle_layout], ids=["folders", "devkit", "kaggle"]
)
def test_every_layout_gives_the_same_labels(layout, tmp_path: Path) -> None:
    images = imagenet_images(layout(tmp_path), "val")
    wnid_order = sorted(w for _, w, _ in SYNSETS)
    by_number = {int(path.stem[-8:]): label for path, label in zip(images.files, images.labels, strict=True)}
    assert len(images.files) == len(VAL_LABELS)
    for number, wnid in enumerate(VAL_LABELS, start=1):
        assert by_number[number] == wnid_order.index(wnid), number
    if layout is class_folder_layout:
        assert images.class_names == tuple(wnid_order)  # no mapping file: the wnids are the names
    else:
        assert images.class_names == ("tench", "goldfish", "great white shark")


def test_class_folders_take_names_from_a_mapping_file(tmp_path: Path) -> None:
    root = class_folder_layout(tmp_path)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {words}\n" for _, w, words in SYNSETS))
    assert imagenet_images(root, "val").class_names == ("tench", "goldfish", "great white shark")


def test_missing_pieces_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no ImageNet split folder .*val"):
        imagenet_images(tmp_path, "val")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "notes.txt").write_text("?")
    with pytest.raises(DataError, match="neither <wnid>/ class folders nor ILSVRC2012_val_"):
        imagenet_images(tmp_path, "val")
    jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", 0)
    with pytest.raises(DataError, match=r"need labels: ILSVRC2012_validation_ground_truth\.txt"):
        imagenet_images(tmp_path, "val")
