"""Train a linear classifier on the frozen `output/full` features of a labelled image set.

    python train_probe.py --backbone dinov2_vits14 --data folder --data-dir train/ --output head.pt
    python evaluate.py --backbone dinov2_vits14 --data folder --data-dir val/ --probe linear --head head.pt

Features are extracted once (one backbone pass per image, any number of devices); then one
head per learning rate is trained on the cached features for --epochs epochs (SGD, cosine
schedule), a seeded part of the images (--val-fraction, chosen by dataset index) picks the
learning rate, and that head is saved with its class list, backbone and resolution.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import cast

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness import HarnessError
from harness.cli import add_input_arguments, add_trainer_arguments, load_inputs, make_trainer, run_main
from harness.module import HarnessModule
from probes.linear_head import LinearHead
from probes.linear_training import LinearHeads
from probes.ridge import is_train_image

log = logging.getLogger("train_probe")
FEATURE = "output/full"
DEFAULT_LEARNING_RATES = "1e-3,3e-3,1e-2,3e-2,1e-1,3e-1,1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_input_arguments(parser)
    parser.add_argument("--output", type=Path, required=True, help="file to write the head to (.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument(
        "--epochs", type=int, default=10, help="epochs over the cached features (default: 10)"
    )
    parser.add_argument(
        "--train-batch-size", type=int, default=256, help="features per SGD step (default: 256)"
    )
    parser.add_argument(
        "--learning-rates",
        default=DEFAULT_LEARNING_RATES,
        help=f"comma list, one head each ({DEFAULT_LEARNING_RATES})",
    )
    parser.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty (default: 0)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of images that picks the rate")
    add_trainer_arguments(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> LinearHead | None:
    """Extract, train, choose, save; returns the head on the main process (None elsewhere)."""
    if args.output.exists() and not args.overwrite:
        raise HarnessError(f"{args.output} exists; pass --overwrite or another --output")
    if not 0 < args.val_fraction < 1:
        raise HarnessError(f"--val-fraction must lie in (0, 1), got {args.val_fraction}")
    learning_rates = [float(value) for value in args.learning_rates.split(",")]
    backbone, datamodule = load_inputs(args)
    class_names = datamodule.images.class_names
    if len(class_names) < 2:
        raise HarnessError(
            f"training a classifier needs a labelled source with 2+ classes; {args.data} has none"
        )
    extractor = HarnessModule(backbone, {}, feature_names=[FEATURE])
    trainer = make_trainer(args)
    trainer.test(extractor, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero or extractor.features is None:
        return None
    features, labels, indices = (
        extractor.features[FEATURE],
        extractor.features["label"],
        extractor.features["index"],
    )
    train = is_train_image(indices, args.seed, 1 - args.val_fraction)
    if train.all() or not train.any():
        raise HarnessError(
            f"{len(indices)} images leave no training or no validation part; adjust --val-fraction"
        )
    log.info(
        "features of %d images: %d to train, %d to choose the learning rate",
        len(indices),
        int(train.sum()),
        int((~train).sum()),
    )

    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        TensorDataset(features[train], labels[train]),
        batch_size=args.train_batch_size,
        shuffle=True,
        generator=generator,
    )
    heads = LinearHeads(
        features.shape[1],
        len(class_names),
        learning_rates,
        args.epochs * len(train_loader),
        args.weight_decay,
    )
    fitter = L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        logger=False,
        callbacks=[RichProgressBar()],
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    fitter.fit(heads, train_dataloaders=train_loader)
    accuracies = heads.accuracies(features[~train], labels[~train])
    best = max(range(len(learning_rates)), key=lambda i: (accuracies[i], -i))
    for lr, accuracy in zip(learning_rates, accuracies, strict=True):
        log.info(
            "learning rate %g: validation top-1 %.4f%s",
            lr,
            accuracy,
            "  <- chosen" if lr == learning_rates[best] else "",
        )
    chosen = cast(nn.Linear, heads.heads[best])
    head = LinearHead(
        weight=chosen.weight.detach().cpu().clone(),
        bias=chosen.bias.detach().cpu().clone(),
        backbone=backbone.info.identity,
        feature=FEATURE,
        class_names=class_names,
        resolution=args.resolution,
        learning_rate=learning_rates[best],
        validation_top1=accuracies[best],
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    head.save(args.output)
    log.info("saved the head to %s", args.output)
    return head


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
