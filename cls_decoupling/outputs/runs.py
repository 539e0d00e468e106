"""A run folder (docs/design.md#outputs): what a finished run holds, read back or written.

A folder is a finished run only when it holds the marker `.complete`, written last, after every
other file; a folder without it (a run killed or failed while writing, or not a run at all) is
refused by every command that reads runs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from cls_decoupling.outputs.record import RunRecord
from common.errors import UserError
from common.run_folders import COMPLETE_MARKER as COMPLETE_MARKER  # written last
from common.run_folders import FIGURES_DIR as FIGURES_DIR
from common.run_folders import RESULTS_FILE as RESULTS_FILE
from harness import BackboneInfo

# the names above live in layer 0 (`common.run_folders`): the data side recognises a run
# folder by them and leaves it out of a listing
log = logging.getLogger(__name__)

ARRAYS_FILE = "arrays.safetensors"
FEATURES_FILE = "features.safetensors"
TENSORBOARD_DIR = "tensorboard"
REPORT_FILE = "report.md"
FAITHFULNESS_FILE = "faithfulness.csv"
REPRODUCTION_FILE = "reproduction.md"
"""What a recipe run writes beside its run or comparison (`outputs.recipes`): measured against published."""


@dataclass(frozen=True)
class Run:
    """What one run produced.

    Attributes:
        record: what results.json holds (backbone, data, run settings, results).
        arrays: the probes' non-scalar results (histograms, per-image values, gallery images).
    """

    record: RunRecord
    arrays: Mapping[str, Tensor] = field(default_factory=dict)
    folder: Path | None = None
    """Where the run was read from (None for a run built in memory)."""

    def saved_features(self, names: Sequence[str]) -> dict[str, Tensor] | None:
        """Only `names` of the run's features.safetensors (one row per image, in dataset-index order
        with `index`), or None when the run saved none; a damaged file is one line."""
        path = None if self.folder is None else self.folder / FEATURES_FILE
        if path is None or not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as file:
                present = set(file.keys())
                return {name: file.get_tensor(name) for name in names if name in present}
        except Exception as error:  # safetensors raises its own error types for a damaged file
            raise UserError(f"cannot read {path}: {error}") from None

    @property
    def summary(self) -> dict[str, Any]:
        """What results.json holds, as the mapping it is written as."""
        return self.record.as_dict()

    @property
    def backbone(self) -> str:
        return self.record.backbone.name

    @property
    def info(self) -> BackboneInfo:
        """The backbone (results.json written before families were recorded: DINOv2's defaults)."""
        return self.record.backbone

    @property
    def results(self) -> Mapping[str, float]:
        return self.record.results

    @property
    def num_images(self) -> int:
        return self.record.data.num_images

    @property
    def num_layers(self) -> int:
        return self.info.num_layers

    @property
    def num_classes(self) -> int:
        """Classes of the evaluated data (0 when unlabelled)."""
        return self.record.data.num_classes

    @property
    def resolution(self) -> int:
        return self.record.data.resolution

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def num_registers(self) -> int:
        return self.info.num_registers

    @property
    def num_distillation(self) -> int:
        return self.info.num_distillation

    @property
    def variants(self) -> tuple[str, ...]:
        """Every `{readout}/{variant}` the run's backbone produces, in canonical order."""
        info = self.info
        return info.variant_names()

    @property
    def interventions(self) -> tuple[str, ...]:
        """The names of the run's interventions (results.json `run.interventions`), in the order given."""
        return tuple(self.record.run.interventions)


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds a finished run or comparison (its marker was written last)."""
    return (folder / COMPLETE_MARKER).is_file()


def load_run(folder: Path) -> Run:
    """The run saved in `folder` by evaluate.py (results.json, and arrays.safetensors when written).

    Raises:
        UserError: the folder holds no finished run, or one of its files cannot be read.
    """
    record = load_record(folder)
    arrays = folder / ARRAYS_FILE
    if not arrays.is_file() and "split" in record.run.probes:  # the split probe always writes its histograms
        log.warning(
            "%s holds no %s (its split distributions and the other probes' arrays): the figures that "
            "read them leave this run out", folder, ARRAYS_FILE,
        )  # fmt: skip
    return Run(record, load_tensors(arrays) if arrays.is_file() else {}, folder)


def load_record(folder: Path) -> RunRecord:
    """The record of the finished run in `folder` (its results.json; undefined numbers as NaN).

    Raises:
        UserError: the folder holds no finished run, or its results.json cannot be read.
    """
    return RunRecord.from_dict(load_summary(folder), str(folder / RESULTS_FILE))


def load_summary(folder: Path) -> dict[str, Any]:
    """What results.json of the finished run in `folder` holds (undefined numbers as NaN).

    Raises:
        UserError: the folder holds no finished run, or its results.json cannot be read.
    """
    results = folder / RESULTS_FILE
    if not results.is_file():
        raise UserError(f"{folder} holds no {RESULTS_FILE}: not a run folder of evaluate.py")
    if not is_complete(folder):
        raise UserError(
            f"{folder} holds an unfinished run (no {COMPLETE_MARKER}: it was killed or failed while "
            "writing, or written by a version before 0.2); run it again"
        )
    try:
        summary: dict[str, Any] = json.loads(results.read_text(), object_hook=_nulls_to_nan)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {results}: {error}") from None
    return summary


def load_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file, or one line saying why it cannot be read (truncated, not safetensors)."""
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise UserError(f"cannot read {path}: {error}") from None


def strict_json(summary: Mapping[str, Any]) -> str:
    """results.json text in strict JSON: every non-finite number written as null, and a `notes` list
    saying where each one was.

    >>> print(strict_json({"results": {"a": float("nan"), "b": 1.5}}), end="")
    {
      "results": {
        "a": null,
        "b": 1.5
      },
      "notes": [
        "results.a is undefined (NaN or infinite), written as null"
      ]
    }
    """
    undefined: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            undefined.append(where)
            return None
        if isinstance(value, Mapping):
            return {key: clean(item, f"{where}.{key}" if where else key) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    cleaned = clean(summary, "")
    if undefined:
        cleaned["notes"] = [f"{where} is undefined (NaN or infinite), written as null" for where in undefined]
    return json.dumps(cleaned, indent=2, allow_nan=False) + "\n"


def _nulls_to_nan(mapping: dict[str, Any]) -> dict[str, Any]:
    """Read back the results that `strict_json` wrote as null (undefined numbers) as NaN."""
    if "results" in mapping and isinstance(mapping["results"], dict):
        mapping["results"] = {k: math.nan if v is None else v for k, v in mapping["results"].items()}
    return mapping
