"""Writing a run folder or a comparison folder (docs/design.md#outputs): files, figures, TensorBoard."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from safetensors.torch import save_file
from torch import Tensor

from cls_decoupling.errors import UserError
from cls_decoupling.outputs.compare import (
    COMPARISON_CSV,
    COMPARISON_MARKDOWN,
    Compared,
    comparison_csv,
    comparison_figures,
    comparison_markdown,
)
from cls_decoupling.outputs.figures import run_figures
from cls_decoupling.outputs.report import run_report
from cls_decoupling.outputs.runs import (
    ARRAYS_FILE,
    FAITHFULNESS_FILE,
    FEATURES_FILE,
    FIGURES_DIR,
    REPORT_FILE,
    RESULTS_FILE,
    TENSORBOARD_DIR,
    Run,
)
from probes import MapsProbe

log = logging.getLogger(__name__)

RUN_FILES = (
    RESULTS_FILE,
    FEATURES_FILE,
    ARRAYS_FILE,
    REPORT_FILE,
    FAITHFULNESS_FILE,
    TENSORBOARD_DIR,
    FIGURES_DIR,
)
"""What a run folder may hold: any of them present means the folder holds a run."""
COMPARISON_FILES = (COMPARISON_MARKDOWN, COMPARISON_CSV, TENSORBOARD_DIR, FIGURES_DIR)


def check_output_dir(output: Path, overwrite: bool, names: tuple[str, ...] = RUN_FILES) -> None:
    """Refuse to overwrite an earlier run (or comparison) unless asked to."""
    existing = [name for name in names if (output / name).exists()]
    if existing and not overwrite:
        raise UserError(
            f"{output} already holds a run ({', '.join(existing)}); pass --overwrite or another --output"
        )


def run_logger(output: Path) -> TensorBoardLogger:
    """The TensorBoard run of a run folder (DIR/tensorboard; several folders overlay)."""
    return TensorBoardLogger(save_dir=output, name=TENSORBOARD_DIR, version="", default_hp_metric=False)


def write_run(
    output: Path,
    run: Run,
    features: Mapping[str, Tensor] | None,
    logger: TensorBoardLogger,
    files: Sequence[Path] = (),
) -> None:
    """Everything a finished run writes: results.json, arrays, features, per-image faithfulness,
    figures, report.md and the TensorBoard scalars and figures."""
    output.mkdir(parents=True, exist_ok=True)
    (output / RESULTS_FILE).write_text(json.dumps(run.summary, indent=2, allow_nan=True) + "\n")
    for name, tensors in ((ARRAYS_FILE, run.arrays), (FEATURES_FILE, features)):
        if tensors:
            save_file({key: tensor.contiguous() for key, tensor in tensors.items()}, str(output / name))
    if MapsProbe.INDEX in run.arrays:
        write_faithfulness(output / FAITHFULNESS_FILE, run.arrays, files)
    figures = write_figures(output / FIGURES_DIR, run_figures(run), logger)
    (output / REPORT_FILE).write_text(run_report(run, figures))
    hparams = {"backbone": run.backbone, "data": run.summary["data"]["source"]}
    logger.log_hyperparams(hparams, metrics=dict(run.results))
    logger.log_metrics(dict(run.results), step=0)
    logger.finalize("success")
    for name, value in run.results.items():
        log.info("%s = %.6f", name, value)
    log.info(
        "%d images (%d skipped); results in %s", run.num_images, run.summary["data"]["num_skipped"], output
    )


def write_faithfulness(path: Path, arrays: Mapping[str, Tensor], files: Sequence[Path]) -> None:
    """One row per image: dataset index, file, and the cosine of patch-only to full output per readout."""
    columns = [MapsProbe.cosine_name(readout) for readout in MapsProbe.READOUTS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "file", *columns])
        for row, index in enumerate(arrays[MapsProbe.INDEX].tolist()):
            file = str(files[index]) if index < len(files) else ""
            writer.writerow([index, file, *(repr(arrays[c][row].item()) for c in columns)])


def write_figures(folder: Path, figures: Mapping[str, Figure], logger: TensorBoardLogger) -> list[str]:
    """PNGs under `folder` and the same figures in TensorBoard (`figures/<name>`); their file names."""
    if figures:
        folder.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=120)
        logger.experiment.add_figure(f"figures/{Path(name).stem}", figure, close=True)
    return list(figures)


def write_comparison(runs: Sequence[tuple[str, Run]], output: Path) -> None:
    """OUT/comparison.md and .csv (one row per run), OUT/figures/compare_*.png, and a TensorBoard run
    with every scalar at step = the run's position, so sweeps over model size show as curves."""
    if len(runs) < 2:
        raise UserError("a comparison needs at least two runs")
    compared = [Compared(label, run) for label, run in runs]
    output.mkdir(parents=True, exist_ok=True)
    logger = run_logger(output)
    figures = write_figures(output / FIGURES_DIR, comparison_figures(compared), logger)
    (output / COMPARISON_CSV).write_text(comparison_csv(compared))
    (output / COMPARISON_MARKDOWN).write_text(
        comparison_markdown(compared, [f"{FIGURES_DIR}/{n}" for n in figures])
    )
    for step, item in enumerate(compared):
        logger.log_metrics(dict(item.run.results), step=step)
    logger.finalize("success")
    log.info("compared %s in %s", ", ".join(label for label, _ in runs), output)
