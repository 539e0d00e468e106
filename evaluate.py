"""Evaluate the patch integration assumption of a DINOv2 backbone on a set of images.

    python evaluate.py --backbone dinov2_vits14_reg --data demo --probe cka,split --output runs/demo

Writes DIR/results.json, a TensorBoard run under DIR/tensorboard, and with --save-features
DIR/features.safetensors. See README.md for every option.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from safetensors.torch import load_file, save_file

from harness import BackboneInfo, HarnessError
from harness.cli import add_input_arguments, add_trainer_arguments, load_inputs, make_trainer, run_main
from harness.module import HarnessModule, all_feature_names
from probes import PROBES, Probe, ProbeContext, build_probes, parse_probe_names
from probes.figures import run_figures
from probes.replay import replay_features

log = logging.getLogger("evaluate")
RESULTS_FILE = "results.json"
FEATURES_FILE = "features.safetensors"
TENSORBOARD_DIR = "tensorboard"
FIGURES_DIR = "figures"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--from-features", type=Path, help="re-run the probes from a run folder's features (no backbone)"
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


def check_output_dir(output: Path, overwrite: bool) -> None:
    """Refuse to overwrite an earlier run unless asked to."""
    existing = [
        name
        for name in (RESULTS_FILE, FEATURES_FILE, TENSORBOARD_DIR, FIGURES_DIR)
        if (output / name).exists()
    ]
    if existing and not overwrite:
        raise HarnessError(
            f"{output} already holds a run ({', '.join(existing)}); pass --overwrite or another --output"
        )


def run_probes(
    args: argparse.Namespace, info: BackboneInfo, class_names: tuple[str, ...], resolution: int
) -> tuple[list[str], dict[str, Probe]]:
    """The probes `--probe` names, built for this backbone, data and resolution."""
    names = parse_probe_names(args.probe, labelled=bool(class_names))
    context = ProbeContext(info, class_names, resolution, args.seed, args.episodes, args.shots, args.head)
    return names, build_probes(names, context)


def run_logger(output: Path) -> TensorBoardLogger:
    """The TensorBoard run of a run folder (DIR/tensorboard; several folders overlay)."""
    return TensorBoardLogger(save_dir=output, name=TENSORBOARD_DIR, version="", default_hp_metric=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as `args` say; return (on every rank) what results.json holds."""
    check_output_dir(args.output, args.overwrite)
    if args.from_features is not None:
        return run_from_features(args)
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
        write_outputs(args.output, summary, module.features, logger)
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
    probe_names, probes = run_probes(args, info, class_names, earlier["data"]["resolution"])
    started = time.perf_counter()
    results = replay_features(probes, load_file(str(source / FEATURES_FILE)))
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
    write_outputs(args.output, summary, None, run_logger(args.output))
    return summary


def write_outputs(
    output: Path, summary: dict[str, Any], features: dict[str, torch.Tensor] | None, logger: TensorBoardLogger
) -> None:
    """results.json, features.safetensors and the TensorBoard scalars of a finished run."""
    output.mkdir(parents=True, exist_ok=True)
    (output / RESULTS_FILE).write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    if features is not None:
        save_file(
            {name: tensor.contiguous() for name, tensor in features.items()}, str(output / FEATURES_FILE)
        )
    write_figures(output, summary, logger)
    hparams = {"backbone": summary["backbone"]["name"], "data": summary["data"]["source"]}
    logger.log_hyperparams(hparams, metrics=summary["results"])
    logger.log_metrics(summary["results"], step=0)
    logger.finalize("success")
    for name, value in summary["results"].items():
        log.info("%s = %.6f", name, value)
    log.info(
        "%d images (%d skipped); results in %s",
        summary["data"]["num_images"],
        summary["data"]["num_skipped"],
        output,
    )


def write_figures(output: Path, summary: dict[str, Any], logger: TensorBoardLogger) -> None:
    """DIR/figures/*.png, one per probe that has results, and the same figures in TensorBoard."""
    figures = run_figures(summary["results"], summary["backbone"]["name"])
    if not figures:
        return
    (output / FIGURES_DIR).mkdir(exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(output / FIGURES_DIR / name, dpi=120)
        logger.experiment.add_figure(f"figures/{Path(name).stem}", figure, close=True)


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
