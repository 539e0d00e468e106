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

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from safetensors.torch import save_file

from datamodules import DATA_SOURCES, ImageDataModule
from harness import HarnessError, load_backbone
from harness.module import HarnessModule
from probes import PROBES, ProbeContext, build_probes, parse_probe_names

log = logging.getLogger("evaluate")
RESULTS_FILE = "results.json"
FEATURES_FILE = "features.safetensors"
TENSORBOARD_DIR = "tensorboard"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backbone", required=True, help="torch.hub name, HF id, local folder, .pth, or random:<arch>"
    )
    parser.add_argument(
        "--data", choices=sorted(DATA_SOURCES), default="demo", help="image source (default: demo)"
    )
    parser.add_argument("--data-dir", type=Path, help="folder of the data source")
    parser.add_argument(
        "--probe", default="all", help=f"comma list of {', '.join(PROBES)}, or 'all' (default: all)"
    )
    parser.add_argument("--output", type=Path, required=True, help="run folder to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the results of an earlier run in --output"
    )
    parser.add_argument(
        "--save-features", action="store_true", help=f"write every variant per image to {FEATURES_FILE}"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch and device")
    parser.add_argument("--limit", type=int, help="evaluate a seeded subset of this many images")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of --limit, one-shot episodes, the ridge split"
    )
    parser.add_argument("--head", type=Path, help="linear head from train_probe.py for --probe linear")
    parser.add_argument("--episodes", type=int, default=10, help="one-shot episodes (default: 10)")
    parser.add_argument("--shots", type=int, default=1, help="one-shot support images per class (default: 1)")
    parser.add_argument("--resolution", type=int, default=224, help="crop size, a multiple of the patch size")
    parser.add_argument(
        "--num-workers", type=int, help="data loader workers per device (default: CPUs - 1, max 8)"
    )
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning)")
    parser.add_argument("--devices", default="1", help="devices per node (Lightning), e.g. 1, 4, auto")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes for multi-node DDP")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed")
    return parser.parse_args(argv)


def check_output_dir(output: Path, overwrite: bool) -> None:
    """Refuse to overwrite an earlier run unless asked to."""
    existing = [name for name in (RESULTS_FILE, FEATURES_FILE, TENSORBOARD_DIR) if (output / name).exists()]
    if existing and not overwrite:
        raise HarnessError(
            f"{output} already holds a run ({', '.join(existing)}); pass --overwrite or another --output"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as `args` say; return (on every rank) what results.json holds."""
    check_output_dir(args.output, args.overwrite)
    parse_probe_names(args.probe)  # fail on a typo before loading anything
    backbone = load_backbone(args.backbone)
    if args.resolution % backbone.patch_size:
        raise HarnessError(
            f"--resolution {args.resolution} is not a multiple of the patch size {backbone.patch_size}"
        )
    datamodule = ImageDataModule(
        args.data,
        data_dir=args.data_dir,
        resolution=args.resolution,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        limit=args.limit,
        seed=args.seed,
    )
    class_names = datamodule.images.class_names
    probe_names = parse_probe_names(args.probe, labelled=bool(class_names))
    context = ProbeContext(
        backbone.info, class_names, args.resolution, args.seed, args.episodes, args.shots, args.head
    )
    module = HarnessModule(backbone, build_probes(probe_names, context), keep_features=args.save_features)
    logger = TensorBoardLogger(
        save_dir=args.output, name=TENSORBOARD_DIR, version="", default_hp_metric=False
    )
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=_devices(args.devices),
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=args.precision,
        logger=logger,
        callbacks=[RichProgressBar()],
        use_distributed_sampler=False,  # ShardSampler gives every image to exactly one rank
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    summary = {
        "backbone": backbone.info.as_dict(),
        "data": {
            **datamodule.describe(),
            "num_images": module.num_images,
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


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        run(args)
    except (HarnessError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
