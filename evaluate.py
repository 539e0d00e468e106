"""Evaluate the patch integration assumption of a DINOv2 backbone on a set of images.

    python evaluate.py --backbone dinov2_vits14_reg --data demo --probe cka,split --output runs/demo
    python evaluate.py --backbone dinov2_vits14_reg dinov2_vitb14_reg --data demo --output runs/sweep
    python evaluate.py --compare runs/a runs/b --output runs/a-vs-b

Writes DIR/results.json, DIR/report.md, DIR/figures/*.png, a TensorBoard run under DIR/tensorboard,
the probes' arrays in DIR/arrays.safetensors, and with --save-features DIR/features.safetensors.
Several backbones: one such run folder each under DIR, and their comparison in DIR. See README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from safetensors.torch import load_file, save_file

from harness import BackboneInfo, HarnessError
from harness.cli import add_input_arguments, add_trainer_arguments, load_inputs, make_trainer, run_main
from harness.module import HarnessModule, all_feature_names
from probes import PROBES, Probe, ProbeContext, build_probes, parse_probe_names
from probes.compare import (
    COMPARISON_CSV,
    COMPARISON_MARKDOWN,
    Compared,
    comparison_csv,
    comparison_figures,
    comparison_markdown,
)
from probes.figures import run_figures
from probes.registry import PIXEL_PROBES
from probes.replay import replay_features
from probes.report import run_report
from probes.runs import (
    ARRAYS_FILE,
    FAITHFULNESS_FILE,
    FEATURES_FILE,
    FIGURES_DIR,
    REPORT_FILE,
    RESULTS_FILE,
    TENSORBOARD_DIR,
    Run,
    load_run,
)

log = logging.getLogger("evaluate")
RUN_FILES = (
    RESULTS_FILE,
    FEATURES_FILE,
    ARRAYS_FILE,
    REPORT_FILE,
    FAITHFULNESS_FILE,
    TENSORBOARD_DIR,
    FIGURES_DIR,
)
COMPARISON_FILES = (COMPARISON_MARKDOWN, COMPARISON_CSV, TENSORBOARD_DIR, FIGURES_DIR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_input_arguments(parser, several_backbones=True)
    parser.add_argument(
        "--from-features", type=Path, help="re-run the probes from a run folder's features (no backbone)"
    )
    parser.add_argument(
        "--compare", type=Path, nargs="+", metavar="RUN", help="compare finished run folders (no backbone)"
    )
    parser.add_argument(
        "--probe", default="all", help=f"comma list of {', '.join(PROBES)}, or 'all' (default)"
    )
    parser.add_argument("--output", type=Path, required=True, help="run folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output")
    parser.add_argument(
        "--save-features", action="store_true", help=f"write every variant to {FEATURES_FILE}"
    )
    parser.add_argument("--head", type=Path, help="linear head from train_probe.py for --probe linear")
    parser.add_argument("--episodes", type=int, default=10, help="one-shot episodes (default: 10)")
    parser.add_argument("--shots", type=int, default=1, help="one-shot support images per class (default: 1)")
    add_trainer_arguments(parser)
    return parser.parse_args(argv)


def check_output_dir(output: Path, overwrite: bool, names: tuple[str, ...] = RUN_FILES) -> None:
    """Refuse to overwrite an earlier run (or comparison) unless asked to."""
    existing = [name for name in names if (output / name).exists()]
    if existing and not overwrite:
        raise HarnessError(
            f"{output} already holds a run ({', '.join(existing)}); pass --overwrite or another --output"
        )


def run_probes(
    args: argparse.Namespace,
    info: BackboneInfo,
    class_names: tuple[str, ...],
    resolution: int,
    pixels: bool = True,
) -> tuple[list[str], dict[str, Probe]]:
    """The probes `--probe` names, built for this backbone, data and resolution (`pixels=False`:
    features are replayed, so the probes that read the images are left out of `all` or refused)."""
    names = parse_probe_names(args.probe, labelled=bool(class_names), pixels=pixels)
    if not pixels and (needing_pixels := [name for name in names if name in PIXEL_PROBES]):
        raise HarnessError(f"probe(s) {', '.join(needing_pixels)} read the images: run with the backbone")
    context = ProbeContext(info, class_names, resolution, args.seed, args.episodes, args.shots, args.head)
    return names, build_probes(names, context)


def run_logger(output: Path) -> TensorBoardLogger:
    """The TensorBoard run of a run folder (DIR/tensorboard; several folders overlay)."""
    return TensorBoardLogger(save_dir=output, name=TENSORBOARD_DIR, version="", default_hp_metric=False)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Evaluate or compare as `args` say; return (on every rank) what each results.json holds."""
    if args.compare is not None:
        if args.backbone or args.from_features:
            raise HarnessError("--compare reads finished runs: it takes no --backbone or --from-features")
        check_output_dir(args.output, args.overwrite, COMPARISON_FILES)
        names = [folder.name for folder in args.compare]
        labels = names if len(set(names)) == len(names) else [str(folder) for folder in args.compare]
        compare_runs(
            [(label, load_run(folder)) for label, folder in zip(labels, args.compare, strict=True)],
            args.output,
        )
        return []
    backbones = args.backbone or [None]
    if len(backbones) == 1:
        check_output_dir(args.output, args.overwrite)
        single = argparse.Namespace(**{**vars(args), "backbone": backbones[0]})
        return [run_from_features(single) if args.from_features is not None else run_one(single)]
    if args.from_features is not None:
        raise HarnessError("--from-features takes one run; compare replayed runs with --compare")
    labels = backbone_labels(backbones)
    for label in labels:
        check_output_dir(args.output / label, args.overwrite)
    check_output_dir(args.output, args.overwrite, COMPARISON_FILES)
    summaries = []
    for label, backbone in zip(labels, backbones, strict=True):
        log.info("backbone %s -> %s", backbone, args.output / label)
        one = argparse.Namespace(**{**vars(args), "backbone": backbone, "output": args.output / label})
        summaries.append(run_one(one))
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        compare_runs([(label, load_run(args.output / label)) for label in labels], args.output)
    return summaries


def backbone_labels(backbones: list[str]) -> list[str]:
    """A folder name per backbone (`random:tiny_reg` -> `random_tiny_reg`, a path -> its last part)."""
    labels = [
        re.sub(r"[^\w.-]+", "_", Path(name).name if Path(name).exists() else name) for name in backbones
    ]
    if len(set(labels)) != len(labels):
        raise HarnessError(f"each backbone once, please: {', '.join(backbones)} name the same run folders")
    return labels


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate one backbone; write its run folder on rank 0."""
    parse_probe_names(args.probe)  # fail on a typo before loading anything
    backbone, datamodule = load_inputs(args)
    probe_names, probes = run_probes(args, backbone.info, datamodule.images.class_names, args.resolution)
    features = all_feature_names(backbone) if args.save_features else ()
    module = HarnessModule(backbone, probes, feature_names=features)
    logger = run_logger(args.output)
    trainer = make_trainer(args, logger)
    started = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    summary = {
        "backbone": backbone.info.as_dict(),
        "data": {
            **datamodule.describe(),
            "num_images": module.num_images,
            "repeated_images": module.num_repeated,
            "num_skipped": len(module.skipped),
            "skipped": [{"index": index, "reason": reason} for index, reason in module.skipped],
        },
        "run": {
            "probes": probe_names,
            "precision": args.precision,
            "world_size": trainer.world_size,
            "batch_size": args.batch_size,
            "seconds": round(time.perf_counter() - started, 3),
            "max_pooler_error": module.max_pooler_error,
            "torch": torch.__version__,
        },
        "results": module.results,
    }
    if trainer.is_global_zero:
        write_outputs(
            args.output, Run(summary, module.arrays), module.features, logger, datamodule.images.files
        )
    return summary


def run_from_features(args: argparse.Namespace) -> dict[str, Any]:
    """The probes of `args.probe` on the features an earlier `--save-features` run wrote."""
    source = args.from_features
    if not (source / FEATURES_FILE).is_file() or not (source / RESULTS_FILE).is_file():
        raise HarnessError(
            f"{source} holds no {FEATURES_FILE} and {RESULTS_FILE}; run with --save-features first"
        )
    if source.resolve() == args.output.resolve():
        raise HarnessError("--output must differ from --from-features (the saved run stays as it is)")
    earlier = json.loads((source / RESULTS_FILE).read_text())
    info = BackboneInfo(**earlier["backbone"])
    if args.backbone is not None and args.backbone not in (info.name, info.identity):
        raise HarnessError(f"{source} holds features of {info.name!r}, not {args.backbone!r}")
    class_names = tuple(earlier["data"].get("class_names", ()))
    probe_names, probes = run_probes(args, info, class_names, earlier["data"]["resolution"], pixels=False)
    started = time.perf_counter()
    results, arrays = replay_features(probes, load_file(str(source / FEATURES_FILE)))
    summary = {
        "backbone": earlier["backbone"],
        "data": {**earlier["data"], "from_features": str(source.resolve())},
        "run": {
            "probes": probe_names,
            "seconds": round(time.perf_counter() - started, 3),
            "torch": torch.__version__,
        },
        "results": results,
    }
    write_outputs(args.output, Run(summary, arrays), None, run_logger(args.output))
    return summary


def write_outputs(
    output: Path,
    run: Run,
    features: dict[str, torch.Tensor] | None,
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
    if "maps/index" in run.arrays:
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


def write_faithfulness(path: Path, arrays: Mapping[str, torch.Tensor], files: Sequence[Path]) -> None:
    """One row per image: dataset index, file, and the cosine of patch-only to full output per readout."""
    columns = ("maps/attention/patch", "maps/output/patch")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "file", *columns])
        for row, index in enumerate(arrays["maps/index"].tolist()):
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


def compare_runs(runs: Sequence[tuple[str, Run]], output: Path) -> None:
    """OUT/comparison.md and .csv (one row per run), OUT/figures/compare_*.png, and a TensorBoard run
    with every scalar at step = the run's position, so sweeps over model size show as curves."""
    if len(runs) < 2:
        raise HarnessError("a comparison needs at least two runs")
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


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
