"""Train a linear classifier on the frozen `output/full` features of a labelled image set.

    cls-train-probe --backbone dinov2_vits14 --data folder --data-dir train/ --output head.pt
    cls-evaluate --backbone dinov2_vits14 --data folder --data-dir val/ --probe linear --head head.pt

Features are extracted once (one backbone pass per image, any number of devices); then one
head per learning rate is trained on the cached features for --epochs epochs (SGD, cosine
schedule), a seeded part of the images (--val-fraction, chosen by dataset index) picks the
learning rate, and that head is saved with its class list, backbone and resolution.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from cls_decoupling.cli.options import (
    DataOptions,
    TrainerOptions,
    add_input_arguments,
    add_trainer_arguments,
    check_writable,
    load_checked_backbone,
    prepare_for,
    run_main,
    run_test,
)
from common.errors import UserError
from datamodules.choices import LABELLED_SOURCES

if TYPE_CHECKING:
    from harness import LinearHead

log = logging.getLogger("train_probe")
FEW_VALIDATION_IMAGES = 20
"""Below this many validation images the learning rate's choice is warned about (issue 34)."""
DEFAULT_LEARNING_RATES = "1e-3,3e-3,1e-2,3e-2,1e-1,3e-1,1"


def learning_rate_list(text: str) -> list[float]:
    """`"1e-3,1e-2"` -> [0.001, 0.01] (an argparse type: a bad value is argparse's error)."""
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of numbers: {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cls-train-probe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
        type=learning_rate_list,
        default=DEFAULT_LEARNING_RATES,
        help=f"comma list, one head each ({DEFAULT_LEARNING_RATES})",
    )
    parser.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty (default: 0)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of images that picks the rate")
    add_trainer_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The `cls-train-probe` command: options -> typed arguments of `train_probe`."""
    args = parse_args(argv)
    return run_main(
        lambda: train_probe(
            backbone_name=args.backbone,
            output=args.output,
            data=DataOptions.from_args(args),
            trainer=TrainerOptions.from_args(args),
            learning_rates=args.learning_rates,
            epochs=args.epochs,
            train_batch_size=args.train_batch_size,
            weight_decay=args.weight_decay,
            val_fraction=args.val_fraction,
            overwrite=args.overwrite,
            pos_interpolation=args.pos_interpolation,
        )
    )


def train_probe(
    backbone_name: str | None,
    output: Path,
    data: DataOptions,
    trainer: TrainerOptions,
    learning_rates: Sequence[float],
    epochs: int = 10,
    train_batch_size: int = 256,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    overwrite: bool = False,
    pos_interpolation: str | None = None,
) -> LinearHead | None:
    """Extract, train, choose, save; returns the head on the main process (None elsewhere)."""
    import lightning as L  # noqa: N812
    import torch
    from lightning.pytorch.callbacks import RichProgressBar
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from cls_decoupling.outputs.writing import kept
    from harness import HarnessModule, LinearHead, LinearHeads
    from probes import FULL_OUTPUT
    from probes.metrics import is_train_image

    if output.is_dir():
        raise UserError(f"--output {output} is a folder; name the head's file, e.g. {output / 'head.pt'}")
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite or another --output")
    if epochs < 1 or train_batch_size < 1:
        raise UserError(
            f"--epochs and --train-batch-size must be positive, got {epochs} and {train_batch_size}"
        )
    check_writable(output.parent)
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must lie in (0, 1), got {val_fraction}")
    if not learning_rates or min(learning_rates) <= 0:
        raise UserError(f"learning rates must be positive, got {list(learning_rates)}")
    if data.source not in LABELLED_SOURCES:
        raise UserError(
            f"training a classifier needs a labelled source "
            f"({', '.join(LABELLED_SOURCES)}), not {data.source}"
        )
    datamodule = data.datamodule()
    trainer.check()
    backbone, _ = load_checked_backbone(backbone_name, data.resolution, pos_interpolation, trainer.compile)
    extraction = trainer.trainer()
    extractor = HarnessModule(backbone, feature_names=[FULL_OUTPUT])
    run_test(extraction, extractor, prepare_for(datamodule, backbone))
    class_names = datamodule.class_names
    if len(class_names) < 2:
        raise UserError(
            f"training a classifier needs a labelled source with 2+ classes; {data.source} has none"
        )
    if not extraction.is_global_zero or extractor.features is None:
        return None
    features, labels, indices = (
        extractor.features[FULL_OUTPUT],
        extractor.features["label"],
        extractor.features["index"],
    )
    train = is_train_image(indices, data.seed, 1 - val_fraction)
    if train.all() or not train.any():
        raise UserError(
            f"{len(indices)} images leave no training or no validation part; adjust --val-fraction"
        )
    log.info(
        "features of %d images: %d to train, %d to choose the learning rate",
        len(indices),
        int(train.sum()),
        int((~train).sum()),
    )
    held_out = int((~train).sum())
    if held_out < FEW_VALIDATION_IMAGES and len(learning_rates) > 1:
        log.warning(
            "the learning rate is chosen on %d validation image%s: top-1 moves in steps of %.2f there, so "
            "the choice is close to arbitrary; give more images or a larger --val-fraction",
            held_out, "" if held_out == 1 else "s", 1 / held_out,
        )  # fmt: skip

    generator = torch.Generator().manual_seed(data.seed)
    train_loader = DataLoader(
        TensorDataset(features[train], labels[train]),
        batch_size=train_batch_size,
        shuffle=True,
        generator=generator,
    )
    heads = LinearHeads(
        features.shape[1],
        len(class_names),
        learning_rates,
        epochs * len(train_loader),
        weight_decay,
        seed=data.seed,
    )
    fitter = L.Trainer(
        max_epochs=epochs,
        accelerator=trainer.accelerator,
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
        feature=FULL_OUTPUT,
        class_names=class_names,
        resolution=data.resolution,
        learning_rate=learning_rates[best],
        validation_top1=accuracies[best],
        pos_interpolation=backbone.info.pos_interpolation,
    )
    partial = output.with_name(f".{output.name}.partial")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        head.save(partial)
        partial.replace(output)  # the head file appears whole or not at all
        kept(output)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UserError(f"could not write the head to {output}: {error.strerror or error}") from None
    log.info("saved the head to %s", output)
    return head
