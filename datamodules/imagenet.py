"""ImageNet (ILSVRC2012) as the official downloads lay it out.

Layouts of ROOT/<split>:
- class folders: `ROOT/<split>/<wnid>/*.JPEG` (train, and val after the usual re-sorting);
- flat val with the devkit: `ROOT/val/ILSVRC2012_val_00000001.JPEG ...` and
  `ILSVRC2012_validation_ground_truth.txt` + `meta.mat` (in ROOT or ROOT/ILSVRC2012_devkit_t12/data);
- flat val with the Kaggle files: `LOC_val_solution.csv` + `LOC_synset_mapping.txt` in ROOT.

Class index = position of the wnid among the sorted wnids (the synset list when a mapping file
exists, else the class folders), so the same wnid gets the same index in every layout.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from datamodules.images import DataError, ImageList, list_image_files

_FLAT_VAL = re.compile(r"^ILSVRC2012_val_(\d{8})$")
_WNID = re.compile(r"^n\d{8}$")
_DEVKIT_DIRS = ("", "ILSVRC2012_devkit_t12/data", "ILSVRC2012_devkit_t12", "devkit/data")


def imagenet_images(root: Path, split: str = "val") -> ImageList:
    """The images of `split` with labels and human-readable class names where the files have them."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"no ImageNet split folder {folder} (looked for ROOT/{split}/)")
    synsets = _synset_names(root)
    class_folders = sorted(p.name for p in folder.iterdir() if p.is_dir() and _WNID.match(p.name))
    if class_folders:
        return _from_class_folders(folder, class_folders, synsets)
    listing = list_image_files(folder)
    flat = {int(m.group(1)): path for path in listing.files if (m := _FLAT_VAL.match(path.stem))}
    if not flat:
        raise DataError(
            f"{folder} holds neither <wnid>/ class folders nor ILSVRC2012_val_*.JPEG files; "
            "expected ROOT/{train,val}/<wnid>/* or the flat official val layout"
        )
    truth = _ground_truth_wnids(root, sorted(flat))
    wnids = sorted(synsets) if synsets else sorted(set(truth.values()))
    index = {wnid: i for i, wnid in enumerate(wnids)}
    numbers = sorted(flat)
    return ImageList(
        tuple(flat[n] for n in numbers),
        tuple(index[truth[n]] for n in numbers),
        tuple(synsets.get(wnid, wnid) for wnid in wnids),
        listing.run_folders,
    )


def _from_class_folders(folder: Path, class_folders: list[str], synsets: dict[str, str]) -> ImageList:
    wnids = sorted(synsets) if synsets else class_folders
    unknown = sorted(set(class_folders) - set(wnids))
    if unknown:
        raise DataError(f"class folders {unknown[:5]} of {folder} are not in the synset list")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    run_folders: list[Path] = []
    for wnid in class_folders:
        listing = list_image_files(folder / wnid)
        files += listing.files
        labels += [index[wnid]] * len(listing.files)
        run_folders += listing.run_folders
    if not files:
        raise DataError(f"the class folders of {folder} hold no image files")
    class_names = tuple(synsets.get(wnid, wnid) for wnid in wnids)
    return ImageList(tuple(files), tuple(labels), class_names, tuple(run_folders))


def _synset_names(root: Path) -> dict[str, str]:
    """wnid -> first human-readable name, from LOC_synset_mapping.txt or the devkit's meta.mat."""
    mapping = root / "LOC_synset_mapping.txt"
    if mapping.is_file():
        names = {}
        for line in mapping.read_text().splitlines():
            if line.strip():
                wnid, _, words = line.strip().partition(" ")
                names[wnid] = words.split(",")[0].strip() or wnid
        return names
    meta = _devkit_file(root, "meta.mat")
    if meta is None:
        return {}
    return {wnid: words.split(",")[0].strip() for _, wnid, words in _leaf_synsets(meta)}


def _leaf_synsets(meta: Path) -> list[tuple[int, str, str]]:
    """(ILSVRC2012_ID, wnid, words) of the 1000 leaf synsets in the devkit's meta.mat."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"cannot read the synsets of {meta}: {error}") from None
    return [
        (int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"]))
        for s in synsets
        if int(s["num_children"]) == 0
    ]


def _ground_truth_wnids(root: Path, numbers: list[int]) -> dict[int, str]:
    """Flat val image number -> wnid, from the devkit or from LOC_val_solution.csv."""
    solution = root / "LOC_val_solution.csv"
    if solution.is_file():
        truth = {}
        with solution.open(newline="") as handle:
            for row in csv.DictReader(handle):
                match = _FLAT_VAL.match(row["ImageId"])
                if match:
                    truth[int(match.group(1))] = row["PredictionString"].split()[0]
        missing = [n for n in numbers if n not in truth]
        if missing:
            raise DataError(
                f"{solution} has no label for {len(missing)} images, e.g. ILSVRC2012_val_{missing[0]:08d}"
            )
        return truth
    ground_truth, meta = (
        _devkit_file(root, "ILSVRC2012_validation_ground_truth.txt"),
        _devkit_file(root, "meta.mat"),
    )
    if ground_truth is None or meta is None:
        raise DataError(
            f"flat ImageNet val images in {root / 'val'} need labels: ILSVRC2012_validation_ground_truth.txt "
            "and meta.mat (devkit) or LOC_val_solution.csv and LOC_synset_mapping.txt in ROOT"
        )
    wnid_of_id = {ilsvrc_id: wnid for ilsvrc_id, wnid, _ in _leaf_synsets(meta)}
    ids = [int(line) for line in ground_truth.read_text().split()]
    if numbers[-1] > len(ids):
        raise DataError(
            f"{ground_truth} has {len(ids)} labels but images go up to ILSVRC2012_val_{numbers[-1]:08d}"
        )
    return {n: wnid_of_id[ids[n - 1]] for n in numbers}


def _devkit_file(root: Path, name: str) -> Path | None:
    for folder in _DEVKIT_DIRS:
        path = root / folder / name
        if path.is_file():
            return path
    return None
