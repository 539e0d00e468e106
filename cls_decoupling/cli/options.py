"""What the entry points share: the options, their typed groups, the Trainer, one-line user errors.

Light to import (no torch, Lightning or model library): the commands parse their options, and answer
`--help` or a bad option, before any of those loads; the functions that need them import them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import UserError
from common.preparation import RESIZE_CHOICES
from datamodules.choices import DATA_SOURCES, SPLITS
from harness.choices import POS_INTERPOLATIONS

if TYPE_CHECKING:
    import lightning as L  # noqa: N812
    from lightning.pytorch.loggers import Logger

    from datamodules import ImageDataModule
    from harness import DecomposingBackbone

PRECISIONS: tuple[str, ...] = ("32-true", "bf16-mixed", "16-mixed")
"""Precisions of the backbone pass; `*-true` half precisions would cast the metrics' float64 states."""


@dataclass(frozen=True)
class DataOptions:
    """The data options, as `ImageDataModule` takes them."""

    source: str = "demo"
    data_dir: Path | None = None
    split: str | None = None
    """None: the source's default (val; a Hugging Face dataset's validation split or its only one)."""
    download: bool = False
    resolution: int = 224
    batch_size: int = 32
    num_workers: int | None = None
    limit: int | None = None
    per_class: int | None = None
    seed: int = 0
    fast_jpeg: bool = False
    resize: str | None = None
    crop_ratio: float | None = None
    image_column: str | None = None
    label_column: str | None = None
    streaming: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DataOptions:
        if args.num_workers is not None and args.num_workers < 0:
            raise UserError(f"--num-workers counts loader processes: 0 or more, got {args.num_workers}")
        return cls(
            source=args.data,
            data_dir=args.data_dir,
            split=args.split,
            download=args.download,
            resolution=args.resolution,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            limit=args.limit,
            per_class=args.per_class,
            seed=args.seed,
            fast_jpeg=args.fast_jpeg,
            resize=args.resize,
            crop_ratio=args.crop_ratio,
            image_column=args.image_column,
            label_column=args.label_column,
            streaming=args.streaming,
        )

    def reading(self, source: str, data_dir: Path | None, **changes: Any) -> DataOptions:
        """The same preparation and loader options for the images of another source (the training or
        reference images); a Hugging Face dataset's columns and streaming only from one to another."""
        own = {"image_column": None, "label_column": None, "streaming": False} if source != "hf" else {}
        return replace(self, source=source, data_dir=data_dir, **{**own, **changes})

    @property
    def folder(self) -> Path | None:
        """The folder whose images the source reads (None for the demo photos, which ship inside
        installed packages, and a Hugging Face dataset name); COCO without `data_dir` reads the download
        cache."""
        if self.source == "demo" or (self.source == "hf" and self.data_dir and not self.data_dir.exists()):
            return None
        if self.data_dir is None and self.source == "coco":
            from datamodules.coco import default_coco_root

            return default_coco_root()
        return self.data_dir

    def datamodule(self) -> ImageDataModule:
        """The data module (options checked; nothing listed or downloaded yet)."""
        from datamodules import ImageDataModule

        return ImageDataModule(**asdict(self))


@dataclass(frozen=True)
class TrainerOptions:
    """Lightning's device options."""

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    compile: str | None = None
    """torch.compile backend of the backbone's blocks (None: eager)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainerOptions:
        devices = int(args.devices) if str(args.devices).isdigit() else args.devices
        return cls(args.accelerator, devices, args.num_nodes, args.strategy, args.precision, args.compile)

    def check(self) -> None:
        """Refuse device options Lightning cannot use, quietly (before any model loads)."""
        if self.compile is not None and self.compile not in (backends := compile_backends()):
            raise UserError(f"--compile {self.compile}: not a torch.compile backend ({', '.join(backends)})")
        if "spawn" in self.strategy or "notebook" in self.strategy or "fork" in self.strategy:
            raise UserError(
                f"--strategy {self.strategy} starts its processes after the data are listed, in a way this "
                "tool does not support; use --strategy ddp (or torchrun / SLURM)"
            )
        lightning_loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
        levels = [each.level for each in lightning_loggers]
        try:
            for each in lightning_loggers:
                each.setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.trainer()
        finally:
            for each, level in zip(lightning_loggers, levels, strict=True):
                each.setLevel(level)

    def trainer(self, logger: Logger | bool = False) -> L.Trainer:
        """A Trainer for the frozen-backbone pass: every image to exactly one rank, a progress bar.

        Raises:
            UserError: Lightning refuses the device options (no such accelerator, devices 0, ...).
        """
        import lightning as L  # noqa: N812
        from lightning.fabric.utilities.exceptions import MisconfigurationException
        from lightning.pytorch.callbacks import RichProgressBar

        try:
            return L.Trainer(
                accelerator=self.accelerator,
                devices=self.devices,
                num_nodes=self.num_nodes,
                strategy=self.strategy,
                precision=self.precision,  # type: ignore[arg-type]  # one of PRECISIONS
                logger=logger,
                callbacks=[RichProgressBar()],
                use_distributed_sampler=False,  # the data module's ShardSampler: no padding, no repeats
                enable_checkpointing=False,
                enable_model_summary=False,
            )
        except (MisconfigurationException, TypeError, ValueError, ImportError, RuntimeError) as error:
            # ImportError: an accelerator whose library is missing (tpu without torch_xla)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"the device options do not work here: {first_line}") from None


def compile_backends() -> list[str]:
    """The torch.compile backends this torch offers (inductor, eager, aot_eager, cudagraphs, ...)."""
    import torch

    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def add_input_arguments(parser: argparse.ArgumentParser, several_backbones: bool = False) -> None:
    """--backbone (one, or with `several_backbones` one or more) and the data options."""
    parser.add_argument(
        "--backbone",
        nargs="+" if several_backbones else None,
        help="torch.hub name, HF id, local folder, .pth, or random:<arch>"
        + (" (several: one run each, then their comparison)" if several_backbones else ""),
    )
    parser.add_argument(
        "--pos-interpolation",
        choices=POS_INTERPOLATIONS,
        help="how the position grid is resized: original (the authors' rule of DINOv2's torch.hub models and "
        "DINO v1; default for hub names, .pth, random: and facebook/dino-vit*) or hf (transformers; default "
        "for other HF ids and folders)",
    )
    parser.add_argument(
        "--data", choices=sorted(DATA_SOURCES), default="demo", help="image source (default: demo)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder of the data source (COCO: default download cache); hf: a save_to_disk folder, a "
        "parquet file, a dataset folder or a dataset name in the local Hugging Face cache",
    )
    parser.add_argument(
        "--split",
        help=f"COCO / ImageNet: {' or '.join(SPLITS)} (default {SPLITS[0]}); hf: the dataset's own split "
        "(default: validation, else its only split)",
    )
    parser.add_argument(
        "--image-column", help="hf: the image column (default: the Image column, else image or img)"
    )
    parser.add_argument(
        "--label-column",
        help="hf: the label column, class indices (default: the ClassLabel column, else an integer label or "
        "labels column, else unlabelled)",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="hf: read the dataset as a stream, its first --limit N rows (no seeded subset, no --per-class)",
    )
    parser.add_argument("--download", action="store_true", help="fetch COCO val2017 first (resumable)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch and device")
    parser.add_argument("--limit", type=int, help="use a seeded subset of this many images (stratified)")
    parser.add_argument("--per-class", type=int, help="use a seeded subset of this many images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of every sampled choice (default: 0)")
    parser.add_argument("--resolution", type=int, default=224, help="crop size, a multiple of the patch size")
    parser.add_argument(
        "--resize",
        choices=RESIZE_CHOICES,
        help="shorter: the shorter side, then the centre crop (DINOv2's, DeiT's own); square: the whole "
        "image to a square, then the crop (ViT's and DeiT's processors). Default: the backbone's own",
    )
    parser.add_argument(
        "--crop-ratio",
        type=float,
        help="the crop's share of the resized image, in (0, 1] (timm's crop_pct, DeiT's --eval-crop-ratio); "
        "default: the backbone's own (1.0 reproduces DeiT III's evaluation of its fb_in1k models)",
    )
    parser.add_argument(
        "--num-workers", type=int, help="data loader workers per device (default: CPUs - 1, max 8)"
    )
    parser.add_argument("--fast-jpeg", action="store_true", help="decode big JPEGs at reduced scale (faster)")


def add_trainer_arguments(parser: argparse.ArgumentParser) -> None:
    """Lightning's device options."""
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning)")
    parser.add_argument("--devices", default="1", help="devices per node (Lightning), e.g. 1, 4, auto")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes for multi-node DDP")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32-true",
        help="the backbone's precision; the decomposition and every metric stay float32 / float64 "
        "(16-mixed runs as bf16-mixed on a CPU; results.json records what ran)",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        metavar="BACKEND",
        help="run the backbone's blocks (all but the last, which the decomposition reads) under "
        "torch.compile; BACKEND defaults to inductor. Off by default: compiling takes a while",
    )


def load_checked_backbone(
    name: str | None,
    resolution: int,
    pos_interpolation: str | None = None,
    compile_backend: str | None = None,
    layers: str = "last",
) -> tuple[DecomposingBackbone, tuple[int, ...]]:
    """The backbone `name` names, refused when the resolution is not a multiple of its patch size,
    with its blocks compiled with `compile_backend` when one is given; and the blocks `layers`
    (`harness.parse_layers`) names for it."""
    from harness import load_backbone, parse_layers
    from harness.extras import Depth

    if name is None:
        raise UserError("--backbone is required")
    backbone = load_backbone(name, pos_interpolation=pos_interpolation)
    if resolution % backbone.patch_size:
        raise UserError(
            f"--resolution {resolution} is not a multiple of the patch size {backbone.patch_size}"
        )
    fixed = backbone.family.fixed_resolution()
    if fixed is not None and resolution != fixed:
        raise UserError(
            f"--resolution {resolution}: {name} reads {fixed} x {fixed} images only (its position "
            f"embedding is not resized); run it with --resolution {fixed}"
        )
    try:
        chosen = parse_layers(layers, backbone.info.num_layers)
    except ValueError as error:
        raise UserError(str(error)) from None
    if chosen:
        try:  # what the per-block decomposition needs of the model (a [CLS] token), before any pass
            Depth(chosen).check(backbone)
        except ValueError as error:
            raise UserError(f"--layers {layers}: {error}") from None
    if compile_backend is not None:
        backbone = backbone.compiling(compile_backend)
    return backbone, chosen


def prepare_for(datamodule: ImageDataModule, backbone: DecomposingBackbone) -> ImageDataModule:
    """The data prepared as the backbone's family prepares images (its normalisation and resize)."""
    datamodule.preprocessing = backbone.info.preprocessing
    return datamodule


def run_test(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
    """`trainer.test`, with Ctrl-C reaching the caller as KeyboardInterrupt (Lightning turns it into
    `sys.exit(1)` after its own shutdown)."""
    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def check_writable(folder: Path) -> None:
    """Refuse, before any work, a folder (or its nearest existing ancestor) this process cannot write."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"cannot write to {folder}: {existing} is not a writable folder")


def _kept_message() -> str:
    """What an interrupted command leaves: the folders and files it finished, which are complete,
    and that an unfinished folder has no `.complete` marker."""
    from cls_decoupling.outputs.writing import KEPT

    unfinished = "an unfinished output folder has no .complete marker"
    if not KEPT:
        return unfinished
    return f"kept, complete: {', '.join(str(path) for path in dict.fromkeys(KEPT))}; {unfinished}"


def run_main(run: Callable[[], Any]) -> int:
    """Run an entry point; a `UserError` is one line on stderr and exit status 2, Ctrl-C one line and
    130 (anything else is a bug and keeps its traceback)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: interrupted; {_kept_message()}", file=sys.stderr)
        return 130
    return 0
