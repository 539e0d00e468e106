"""A run folder (docs/design.md#outputs): what a finished run holds, read back or written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from cls_decoupling.errors import UserError
from harness import variant_names

RESULTS_FILE = "results.json"
ARRAYS_FILE = "arrays.safetensors"
FEATURES_FILE = "features.safetensors"
TENSORBOARD_DIR = "tensorboard"
FIGURES_DIR = "figures"
REPORT_FILE = "report.md"
FAITHFULNESS_FILE = "faithfulness.csv"


@dataclass(frozen=True)
class Run:
    """What one run produced.

    Attributes:
        summary: what results.json holds (backbone, data, run settings, results).
        arrays: the probes' non-scalar results (histograms, per-image values, gallery images).
    """

    summary: Mapping[str, Any]
    arrays: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def backbone(self) -> str:
        return str(self.summary["backbone"]["name"])

    @property
    def results(self) -> Mapping[str, float]:
        results: Mapping[str, float] = self.summary["results"]
        return results

    @property
    def num_images(self) -> int:
        return int(self.summary["data"]["num_images"])

    @property
    def num_layers(self) -> int:
        return int(self.summary["backbone"]["num_layers"])

    @property
    def num_registers(self) -> int:
        return int(self.summary["backbone"]["num_registers"])

    @property
    def variants(self) -> tuple[str, ...]:
        """Every `{readout}/{variant}` the run's backbone produces, in canonical order."""
        return variant_names(self.num_registers)


def load_run(folder: Path) -> Run:
    """The run saved in `folder` by evaluate.py (results.json, and arrays.safetensors when written)."""
    results = folder / RESULTS_FILE
    if not results.is_file():
        raise UserError(f"{folder} holds no {RESULTS_FILE}: not a run folder of evaluate.py")
    arrays = folder / ARRAYS_FILE
    return Run(json.loads(results.read_text()), load_file(str(arrays)) if arrays.is_file() else {})
