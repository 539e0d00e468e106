"""Outputs (docs/design.md#outputs): run folders and comparison folders, their figures, report.md and
TensorBoard runs, drawn from a run's results with the probe classes' own result names."""

from cls_decoupling.outputs.record import SCHEMA_VERSION, DataRecord, RunRecord, RunSettings
from cls_decoupling.outputs.runs import Run, is_complete, load_record, load_run, load_summary, load_tensors
from cls_decoupling.outputs.writing import (
    check_output_dir,
    mark_unfinished,
    output_lock,
    run_logger,
    write_comparison,
    write_run,
)

__all__ = [
    "SCHEMA_VERSION",
    "DataRecord",
    "Run",
    "RunRecord",
    "RunSettings",
    "check_output_dir",
    "is_complete",
    "load_record",
    "load_run",
    "load_summary",
    "load_tensors",
    "mark_unfinished",
    "output_lock",
    "run_logger",
    "write_comparison",
    "write_run",
]
