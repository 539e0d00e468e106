"""Images of a Hugging Face dataset (`--data hf`): a folder written by `save_to_disk`, a parquet file, a
dataset folder in the hub's layout (parquet files, a README declaring the features), or a dataset name
found in the local Hugging Face cache. Read through `datasets`, which only this module imports, and
only when such data is asked for.

Labels are the dataset's own integer indices (so ImageNet-1k's follow the classifiers' order), class
names its `ClassLabel` names. Images are decoded by `load_rgb`, as files are: the same conversions,
and a row that cannot be decoded is the same counted skip as a broken file.

A stream (`streaming=True`) has neither a length nor random access: its first `take` rows are read
once, in the stream's order, and then held like any other source (sharded by position, so every rank
reads the same rows).
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from datamodules.images import UNLABELLED, DataError, as_rgb, load_rgb

IMAGE_COLUMNS = ("image", "img")
"""Image columns by name, where no column has the `Image` feature."""

LABEL_COLUMNS = ("label", "labels")
"""Label columns by name (integer values), where no column has the `ClassLabel` feature."""

DEFAULT_SPLIT = "validation"
"""The split read without `--split` when the dataset has it (else its only split)."""

_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_Loaded = TypeVar("_Loaded")


def check_dataset_location(where: Path) -> None:
    """Refuse, before anything loads, a `--data-dir` that is neither a path here nor a dataset name."""
    if not where.exists() and not _HUB_NAME.fullmatch(str(where)):
        raise DataError(f"--data-dir {where} does not exist and is not a Hugging Face dataset name")


@dataclass(frozen=True)
class DatasetImages:
    """Rows of one split of a Hugging Face dataset, by position: an `ImageSource`.

    Args:
        images: the image column's values by dataset row (the dataset's lazy column, or the rows a
            stream gave): an `Image` feature's undecoded {"bytes", "path"}, encoded bytes or a PIL image.
        rows: the dataset row of each position.
        labels: the label of each position (`UNLABELLED` without one).
        class_names: the classes the labels index (empty when unlabelled).
        origin: what results.json records under `data.hf` (dataset, kind, split, columns, streaming).
    """

    images: Sequence[Any]
    rows: tuple[int, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...] = ()
    origin: Mapping[str, Any] = field(default_factory=dict)
    run_folders: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.labels):
            raise ValueError(f"{len(self.rows)} rows but {len(self.labels)} labels")

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, positions: Sequence[int]) -> DatasetImages:
        return replace(
            self, rows=tuple(self.rows[i] for i in positions), labels=tuple(self.labels[i] for i in positions)
        )

    def load(self, position: int, min_side: int = 0) -> Image.Image:
        return decoded(self.images[self.rows[position]], min_side)

    def name(self, position: int) -> str:
        return f"{self.origin.get('split') or 'row'}[{self.rows[position]}]"

    def describe(self) -> dict[str, Any]:
        return {"split": self.origin.get("split"), "hf": dict(self.origin)}


def decoded(value: Any, min_side: int = 0) -> Image.Image:
    """An image column's value as 8-bit RGB (`load_rgb`): an `Image` feature's {"bytes", "path"}, the
    encoded bytes, or a PIL image (converted, its EXIF rotation applied)."""
    if isinstance(value, Image.Image):
        return as_rgb(value)
    if isinstance(value, Mapping):
        if value.get("bytes") is None and value.get("path"):
            return load_rgb(Path(value["path"]), min_side)
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return load_rgb(io.BytesIO(value), min_side)
    raise TypeError(f"a {type(value).__name__} value is not an image")


def hf_images(
    where: str,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    take: int | None = None,
) -> DatasetImages:
    """The images and labels of one split of the dataset at `where` (a path or a dataset name).

    Args:
        where: a `save_to_disk` folder, a parquet file, a dataset folder, or a dataset name.
        split: the dataset's own split name; None: `DEFAULT_SPLIT` if it has one, else its only split.
        image_column: None: the first `Image` column, else one of `IMAGE_COLUMNS`.
        label_column: None: the `ClassLabel` column, else an integer one of `LABEL_COLUMNS`, else none.
        streaming: read the dataset as a stream (`datasets`' `streaming=True`), the first `take` rows.
        take: the rows a stream is read for (required with `streaming`).

    Raises:
        DataError: the dataset cannot be had, or lacks the split or a column (one line each).
    """
    if streaming and take is None:
        raise DataError("a streamed dataset is read for its first --limit N rows: add --limit")
    dataset, origin = _opened(where, split, streaming)
    features = dict(dataset.features or {})
    if not features and streaming:  # a stream whose features are not declared: the first row's columns
        features = dict.fromkeys(next(iter(dataset), {}))
    image = _image_column(features, image_column, where)
    label = _label_column(features, label_column, where)
    origin = {**origin, "image_column": image, "label_column": label, "streaming": streaming}
    if _is_image_feature(features[image]):
        dataset = dataset.cast_column(image, _image_feature(decode=False))  # decoded by load_rgb
    dataset = dataset.select_columns([image] if label is None else [image, label])
    if streaming:
        read = list(itertools.islice(dataset, take))
        images: Sequence[Any] = [row[image] for row in read]
        values: Sequence[Any] = [row[label] for row in read] if label else [None] * len(read)
    else:
        origin["split_rows"] = len(dataset)
        images = dataset[image]  # lazy: a row is read when it is loaded
        values = dataset[label][:] if label else [None] * len(dataset)
    if len(images) == 0:
        raise DataError(f"split {origin['split']} of {where} has no rows")
    labels, class_names = _labels(values, features.get(label) if label else None, label, where)
    return DatasetImages(images, tuple(range(len(images))), labels, class_names, origin)


def _opened(where: str, split: str | None, streaming: bool) -> tuple[Any, dict[str, Any]]:
    """One split of the dataset at `where`, and what it is: {dataset, kind, split}."""
    import datasets

    path = Path(where).expanduser()
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = _loading(where, lambda: datasets.load_from_disk(str(path)))
        if isinstance(loaded, datasets.DatasetDict):
            chosen: str | None = _chosen_split(where, list(loaded), split)
            dataset = loaded[chosen]
        else:
            chosen = None if loaded.split is None else str(loaded.split)
            if split is not None and split != chosen:
                raise DataError(
                    f"{where} holds one dataset (split {chosen or 'unnamed'}), not a DatasetDict of splits: "
                    f"drop --split {split}"
                )
            dataset = loaded
        origin = {"dataset": str(path.resolve()), "kind": "saved", "split": chosen}
        return (dataset.to_iterable_dataset() if streaming else dataset), origin
    if path.is_file():
        if path.suffix != ".parquet":
            raise DataError(
                f"--data hf reads a save_to_disk folder, parquet files, a dataset folder or a dataset name; "
                f"{where} is a file but not a .parquet file"
            )
        arguments: dict[str, Any] = {"path": "parquet", "data_files": str(path)}
        kind, name = "parquet", str(path.resolve())
    elif path.is_dir():
        arguments, kind, name = {"path": str(path)}, "folder", str(path.resolve())
    else:
        check_dataset_location(path)
        arguments, kind, name = {"path": where}, "name", where
    builder = _loading(where, lambda: datasets.load_dataset_builder(**arguments))
    available = list(builder.config.data_files or builder.info.splits or ())
    chosen = _chosen_split(where, available, split) if available else split
    dataset = _loading(where, lambda: datasets.load_dataset(**arguments, split=chosen, streaming=streaming))
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):  # splits known only now
        chosen = _chosen_split(where, list(dataset), split)
        dataset = dataset[chosen]
    return dataset, {"dataset": name, "kind": kind, "split": chosen}


def _loading(where: str, load: Callable[[], _Loaded]) -> _Loaded:
    """`load()`, where any failure means the dataset cannot be had here: one line."""
    try:
        return load()
    except DataError:
        raise
    except Exception as error:  # datasets raises many types: ConnectionError, FileNotFoundError, ...
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        raise DataError(
            f"cannot load the Hugging Face dataset {where} ({reason}); a dataset name is read from the "
            "local Hugging Face cache when the hub cannot be reached"
        ) from None


def _chosen_split(where: str, available: Sequence[str], split: str | None) -> str:
    """`split` if the dataset has it; without one, `DEFAULT_SPLIT` or the only split."""
    names = [str(name) for name in available]
    if split is not None:
        if split in names:
            return split
        raise DataError(f"{where} has no split {split!r}; its splits: {', '.join(names)}")
    if DEFAULT_SPLIT in names:
        return DEFAULT_SPLIT
    if len(names) == 1:
        return names[0]
    raise DataError(f"{where} has the splits {', '.join(names)}: choose one with --split")


def _image_column(features: Mapping[str, Any], asked: str | None, where: str) -> str:
    if asked is not None:
        return _existing(features, asked, "--image-column", where)
    found = [name for name, feature in features.items() if _is_image_feature(feature)]
    found += [name for name in IMAGE_COLUMNS if name in features]
    if not found:
        raise DataError(
            f"{where} has no Image column and none named {' or '.join(IMAGE_COLUMNS)}: name it with "
            f"--image-column (columns: {', '.join(features)})"
        )
    return found[0]


def _label_column(features: Mapping[str, Any], asked: str | None, where: str) -> str | None:
    if asked is not None:
        column = _existing(features, asked, "--label-column", where)
        feature = features[column]
        if feature is not None and not _is_class_label(feature) and not _is_integer(feature):
            raise DataError(
                f"--label-column {column}: its values are {feature}, not class indices (a ClassLabel or "
                "integer column)"
            )
        return column
    found = [name for name, feature in features.items() if _is_class_label(feature)]
    found += [name for name in LABEL_COLUMNS if name in features and _is_integer(features[name])]
    return found[0] if found else None


def _existing(features: Mapping[str, Any], column: str, option: str, where: str) -> str:
    if column not in features:
        raise DataError(f"{option} {column}: {where} has no such column; its columns: {', '.join(features)}")
    return column


def _labels(
    values: Sequence[Any], feature: Any, column: str | None, where: str
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The labels (negative or missing: `UNLABELLED`, as `ClassLabel` marks a row without one; every
    row labelled or none) and the class names: the `ClassLabel` names, else the indices 0 .. the
    largest label."""
    if any(value is not None and not isinstance(value, int) for value in values):
        kind = type(next(v for v in values if v is not None and not isinstance(v, int))).__name__
        raise DataError(f"label column {column} of {where} holds {kind} values, not class indices")
    labels = tuple(UNLABELLED if value is None or value < 0 else value for value in values)
    seen = [label for label in labels if label != UNLABELLED]
    if not seen:
        return labels, ()
    if len(seen) < len(labels):  # the probes that read labels need every image's
        raise DataError(
            f"{len(labels) - len(seen)} of the {len(labels)} rows of {where} have no label in column "
            f"{column} (negative or missing): choose a split whose rows are all labelled, or none"
        )
    if _is_class_label(feature):
        return labels, tuple(feature.names)
    return labels, tuple(str(index) for index in range(max(seen) + 1))


def _image_feature(decode: bool) -> Any:
    from datasets import Image as ImageFeature

    return ImageFeature(decode=decode)


def _is_image_feature(feature: Any) -> bool:
    from datasets import Image as ImageFeature

    return isinstance(feature, ImageFeature)


def _is_class_label(feature: Any) -> bool:
    from datasets import ClassLabel

    return isinstance(feature, ClassLabel)


def _is_integer(feature: Any) -> bool:
    from datasets import Value

    return isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))
