"""Writing a run folder or a comparison folder (docs/design.md#outputs): files, figures, TensorBoard."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor

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
    COMPLETE_MARKER,
    FAITHFULNESS_FILE,
    FEATURES_FILE,
    FIGURES_DIR,
    REPORT_FILE,
    REPRODUCTION_FILE,
    RESULTS_FILE,
    TENSORBOARD_DIR,
    Run,
    is_complete,
    strict_json,
)
from common.errors import UserError
from common.run_folders import lock_name
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
    REPRODUCTION_FILE,
)
"""What a run folder may hold: any of them present means the folder holds a run."""
COMPARISON_TENSORBOARD = "comparison"
"""The comparison's TensorBoard run: `tensorboard --logdir DIR` lists it as `comparison`, beside
each backbone's `<label>/tensorboard`."""
COMPARISON_FILES = (
    COMPARISON_MARKDOWN, COMPARISON_CSV, COMPARISON_TENSORBOARD, FIGURES_DIR, REPRODUCTION_FILE,
)  # fmt: skip


def check_output_dir(
    output: Path, overwrite: bool, names: tuple[str, ...] = RUN_FILES, also: Sequence[str] = ()
) -> None:
    """Refuse to write over an earlier run (or comparison) unless asked to, and a folder that holds
    anything else, asked or not (only a run's own files are ever written or replaced: `--output ''`
    is the working directory); `also` names other entries the folder may hold (the run folders of a
    comparison)."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder")
    existing = [name for name in names if (output / name).exists()]
    if existing and not overwrite:
        state = "a run" if is_complete(output) else "an unfinished run (killed or failed while writing)"
        raise UserError(
            f"{output} already holds {state} ({', '.join(existing)}); pass --overwrite or another --output"
        )
    if output.is_dir():
        known = {*names, COMPLETE_MARKER, *also}
        foreign = sorted(entry.name for entry in output.iterdir() if entry.name not in known)
        if foreign:
            raise UserError(
                f"--output {output.resolve()} holds files that are not a run's ({', '.join(foreign[:5])}); "
                "a run is written to a new or empty folder, or over a run: choose another --output"
            )


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive flock on `.NAME.lock` beside the (resolved) output folder while a run writes
    to it: a second run into the same folder refuses with one line; the kernel releases the lock when
    the run ends or its process dies. The lock file stays (deleting it would let two runs lock two
    different files of the same name)."""
    import fcntl  # POSIX only, like the launchers this tool runs under

    folder = output.resolve()
    lock_path = folder.parent / lock_name(folder.name)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a")
    except OSError as error:
        raise UserError(f"cannot write to {folder.parent}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another run is writing to {output} (it holds {lock_path}); "
                "wait for it or choose another --output"
            ) from None
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise UserError(f"cannot write to {output}: permission denied")
        yield


def mark_unfinished(output: Path) -> None:
    """Remove a folder's marker: from now on it reads as unfinished (a sweep that replaces it)."""
    (output / COMPLETE_MARKER).unlink(missing_ok=True)


def _clear(output: Path, names: Sequence[str]) -> None:
    """Remove the marker first (the folder reads as unfinished from here on), then a run's files."""
    mark_unfinished(output)
    for name in names:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


KEPT: list[Path] = []
"""What this process finished writing (a run or comparison folder with its marker, a head file), in
order: what a Ctrl-C after it leaves complete (`cls_decoupling.cli.options.run_main` says so)."""


def kept(path: Path) -> None:
    """Note that `path` is finished (`KEPT`)."""
    KEPT.append(path)


def _finish(output: Path) -> None:
    """Write the marker, last: the folder is complete."""
    (output / COMPLETE_MARKER).write_text("finished\n")
    kept(output)


def run_logger(output: Path, name: str = TENSORBOARD_DIR) -> TensorBoardLogger:
    """The TensorBoard run of a run folder (DIR/tensorboard; several folders overlay)."""
    return TensorBoardLogger(save_dir=output, name=name, version="", default_hp_metric=False)


def write_run(
    output: Path,
    run: Run,
    features: Mapping[str, Tensor] | None,
    logger: TensorBoardLogger,
    files: Sequence[Path | str] = (),
) -> None:
    """Everything a finished run writes: results.json, arrays, features, per-image faithfulness,
    figures, report.md and the TensorBoard scalars and figures; the folder's earlier run files first
    go, and the marker comes last (the folder reads as unfinished until then). Undefined numbers are
    written as null (strict JSON) and listed under `notes`."""
    output.mkdir(parents=True, exist_ok=True)
    _clear(output, RUN_FILES)
    (output / RESULTS_FILE).write_text(strict_json(run.record.as_dict()))
    for name, tensors in ((ARRAYS_FILE, run.arrays), (FEATURES_FILE, features)):
        if tensors:
            save_tensors(output / name, tensors)
    if MapsProbe.INDEX in run.arrays:
        write_faithfulness(output / FAITHFULNESS_FILE, run.arrays, files)
    figures = write_figures(output / FIGURES_DIR, run_figures(run), logger)
    (output / REPORT_FILE).write_text(run_report(run, figures))
    hparams = {"backbone": run.backbone, "data": run.record.data.source}
    logger.log_hyperparams(hparams, metrics=dict(run.results))
    logger.log_metrics(dict(run.results), step=0)
    logger.finalize("success")
    _finish(output)
    for name, value in run.results.items():
        log.info("%s = %.6f", name, value)
    log.info("%d images (%d skipped); results in %s", run.num_images, run.record.data.num_skipped, output)


def save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    """A safetensors file with the permissions of every other file of the run (safetensors itself
    creates its files readable by their owner only)."""
    save_file({key: tensor.contiguous() for key, tensor in tensors.items()}, str(path))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def write_faithfulness(path: Path, arrays: Mapping[str, Tensor], files: Sequence[Path | str]) -> None:
    """One row per image: dataset index, file, and the cosine of patch-only to full output per readout."""
    columns = [MapsProbe.cosine_name(readout) for readout in MapsProbe.READOUTS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "file", *columns])
        for row, index in enumerate(arrays[MapsProbe.INDEX].tolist()):
            file = str(files[index]) if index < len(files) else ""
            writer.writerow([index, file, *(repr(arrays[c][row].item()) for c in columns)])


FIGURE_DPI = 120
"""Resolution of the PNG figures and their TensorBoard images."""


def write_figures(folder: Path, figures: Mapping[str, Figure], logger: TensorBoardLogger) -> list[str]:
    """PNGs under `folder` and the same figures in TensorBoard (`figures/<name>`); their file names."""
    if figures:
        folder.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        pixels = render(figure, dpi=FIGURE_DPI)  # drawn once for both (savefig + add_figure drew twice)
        Image.fromarray(pixels).save(folder / name)
        logger.experiment.add_image(f"figures/{Path(name).stem}", pixels, dataformats="HWC")
    return list(figures)


def render(figure: Figure, dpi: int = FIGURE_DPI) -> np.ndarray:
    """The figure drawn once at `dpi`: (height, width, 3) uint8 RGB."""
    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_comparison(runs: Sequence[tuple[str, Run]], output: Path) -> None:
    """OUT/comparison.md and .csv (one row per run), OUT/figures/compare_*.png, and a TensorBoard run
    with every scalar at step = the run's position, so sweeps over model size show as curves."""
    if len(runs) < 2:
        raise UserError("a comparison needs at least two runs")
    compared = [Compared(label, run) for label, run in runs]
    output.mkdir(parents=True, exist_ok=True)
    _clear(output, COMPARISON_FILES)
    logger = run_logger(output, COMPARISON_TENSORBOARD)
    figures = write_figures(output / FIGURES_DIR, comparison_figures(compared), logger)
    steps = "\n".join(
        f"| {step} | {item.label} | {item.run.backbone} |" for step, item in enumerate(compared)
    )
    logger.experiment.add_text("backbones", f"| step | run | backbone |\n|---|---|---|\n{steps}")
    (output / COMPARISON_CSV).write_text(comparison_csv(compared))
    (output / COMPARISON_MARKDOWN).write_text(
        comparison_markdown(compared, [f"{FIGURES_DIR}/{n}" for n in figures])
    )
    for step, item in enumerate(compared):
        logger.log_metrics(dict(item.run.results), step=step)
    logger.finalize("success")
    _finish(output)
    log.info("compared %s in %s", ", ".join(label for label, _ in runs), output)
