"""Evaluate the patch integration assumption of a ViT backbone (any supported family) on a set of images.

    cls-evaluate --backbone dinov2_vits14_reg --data demo --probe cka,split --output runs/demo
    cls-evaluate --backbone dinov2_vits14_reg dinov2_vitb14_reg --data demo --output runs/sweep
    cls-evaluate --compare runs/a runs/b --output runs/a-vs-b

(`python evaluate.py ...` from the repository root is the same command.) Writes DIR/results.json,
DIR/report.md, DIR/figures/*.png, a TensorBoard run under DIR/tensorboard, the probes' arrays in
DIR/arrays.safetensors, and with --save-features DIR/features.safetensors. Several backbones: one
such run folder each under DIR, and their comparison in DIR. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cls_decoupling.cli.options import (
    DataOptions,
    TrainerOptions,
    add_input_arguments,
    add_trainer_arguments,
    load_checked_backbone,
    prepare_for,
    run_main,
    run_test,
)
from common.errors import UserError
from datamodules.choices import DATA_SOURCES, LABELLED_SOURCES
from harness.choices import RELEASED_HEADS

if TYPE_CHECKING:
    import torch

    from cls_decoupling.outputs import Run, RunRecord
    from harness import BackboneInfo, DecomposingBackbone
    from harness.extras import Intervention, ReferenceStatistics, RegisterNeurons
    from probes import KnnBank, Probe, ProbeSelection

log = logging.getLogger("evaluate")

MODEL_HEAD = "model"
"""`--head model`: the backbone's own classifier on its [CLS] output (`DecomposingBackbone.classifier`)."""


Number = TypeVar("Number", int, float)


def check_per_backbone(option: str, what: str, values: Sequence[object], backbones: int) -> None:
    """Refuse the values of an option given per backbone that are neither one nor one per backbone."""
    if values and len(values) not in (1, backbones):
        raise UserError(f"{option} takes one {what}, or one per backbone ({backbones}); got {len(values)}")


def per_backbone(values: Sequence[Number], position: int, default: Number) -> Number:
    """The value of an option given per backbone for the backbone at `position`: the only one, its
    own, or `default` where the option was not given."""
    if not values:
        return default
    return values[0] if len(values) == 1 else values[position]


REFERENCE_LIMIT = 256
"""Reference images by default (`--reference-limit`)."""


@dataclass(frozen=True)
class ProbeOptions:
    """Which probes run and their settings."""

    probe: str = "all"
    seed: int = 0
    episodes: int = 10
    shots: int = 1
    head: Path | None = None
    layers: str = "last"
    train: DataOptions | None = None
    """The labelled training images whose `output/full` form the knn probe's bank (--train-data)."""
    interventions: tuple[str, ...] = ()
    """--intervene, as written (parsed against the backbone's depth once it is loaded)."""
    reference: DataOptions | None = None
    """The images whose states the mean / shuffle / noise interventions read (--reference-*)."""
    maps: str | None = None
    """--maps, as written (the heads are checked once the backbone is loaded); None: every map."""
    perturbation: str | None = None
    """--perturbation, as written; None: the attribution probe's patches (`tokens`)."""
    artifact_thresholds: tuple[float, ...] = ()
    """--artifact-threshold: one norm for every backbone, or one per backbone (0: no split)."""
    explain: str | None = None
    """--explain-class; None: the predicted class."""

    def check_artifacts(self, backbones: int) -> None:
        """Refuse a count of thresholds that does not fit the backbones, or one that is not a norm."""
        thresholds = self.artifact_thresholds
        check_per_backbone("--artifact-threshold", "norm", thresholds, backbones)
        if any(not (math.isfinite(value) and value >= 0) for value in thresholds):
            raise UserError(f"--artifact-threshold is a norm: 0 (no split) or more, got {list(thresholds)}")

    def artifact_for(self, position: int) -> float:
        """The artifact threshold of the backbone at `position` (0: no split)."""
        return per_backbone(self.artifact_thresholds, position, 0.0)

    @property
    def released_blocks(self) -> int:
        """`--head dinov2` / `dinov2_linear4`: the blocks of the head the authors released for the
        backbone (fetched once it is loaded); 0 otherwise."""
        return RELEASED_HEADS.get(str(self.head), 0) if self.head is not None else 0

    def with_released_head(self, info: BackboneInfo) -> ProbeOptions:
        """These options with `--head dinov2` resolved to the file of the backbone's released head."""
        if not self.released_blocks:
            return self
        from harness.heads import fetch_released_head

        return dataclasses.replace(self, head=fetch_released_head(info, self.released_blocks))

    @property
    def own_head(self) -> bool:
        """`--head model`: the backbone's own classifier instead of a head from train_probe.py."""
        return self.head is not None and str(self.head) == MODEL_HEAD

    def check_own_head(self, info: BackboneInfo, classifier: object | None) -> None:
        """Refuse `--head model` for a backbone without its own classifier at hand (none in its
        checkpoint, or saved features without the model)."""
        if not self.own_head or classifier is not None:
            return
        if info.num_classes:
            raise UserError(
                "--head model reads the backbone's own classifier: run the backbone, not saved features"
            )
        raise UserError(
            f"--head model: {info.name} has no classifier of its own (a CLIP classifier reads the patches "
            "too); train one with train_probe.py and pass its file"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ProbeOptions:
        train = None
        train_options = {
            "--train-dir": args.train_dir, "--train-split": args.train_split,
            "--train-per-class": args.train_per_class,
        }  # fmt: skip
        given = [option for option, value in train_options.items() if value is not None]
        if given and args.train_data is None:
            raise UserError(f"{', '.join(given)} choose the training images of --train-data: add it")
        if args.train_data is not None:
            evaluated = DataOptions.from_args(args)
            train = evaluated.reading(
                args.train_data, args.train_dir, split=args.train_split or "train", download=False,
                limit=None, per_class=args.train_per_class, streaming=False,
            )  # fmt: skip
        reference = None
        if args.reference_dir is not None and args.reference_data is None:
            raise UserError("--reference-dir names the folder of --reference-data: add --reference-data")
        if args.reference_split is not None and args.reference_data is None:
            raise UserError("--reference-split chooses the split of --reference-data: add --reference-data")
        registers = any(args.test_time_registers or ())
        if args.reference_data is not None and not args.intervene and not registers:
            raise UserError(
                "--reference-data chooses the images the interventions' mean / shuffle / noise and the "
                "register-neuron search read: add --intervene or --test-time-registers"
            )
        if args.reference_data in ("folder", "imagenet", "hf") and args.reference_dir is None:
            raise UserError(f"--reference-data {args.reference_data} reads a folder: add --reference-dir")
        if args.reference_limit is not None and not args.intervene and not registers:
            raise UserError(
                "--reference-limit counts the images the interventions' mean / shuffle / noise and the "
                "register-neuron search read: add --intervene or --test-time-registers"
            )
        limit = REFERENCE_LIMIT if args.reference_limit is None else args.reference_limit
        if limit < 1:
            raise UserError(f"--reference-limit counts reference images: 1 or more, got {limit}")
        if args.intervene or registers:
            evaluated = DataOptions.from_args(args)
            split = {"split": args.reference_split} if args.reference_split is not None else {}
            reference = evaluated.reading(
                args.reference_data or evaluated.source,
                args.reference_dir if args.reference_data else evaluated.data_dir,
                download=False, limit=limit, per_class=None, **split,
            )  # fmt: skip
        return cls(
            args.probe, args.seed, args.episodes, args.shots, args.head, args.layers, train,
            tuple(args.intervene or ()), reference, args.maps, args.perturbation,
            tuple(args.artifact_threshold or ()), args.explain_class,
        )  # fmt: skip


@dataclass(frozen=True)
class RegisterOptions:
    """--test-time-registers and how their register neurons are found (Jiang et al. 2025): searched
    over the reference images (`--reference-*`, default the evaluated data) with the authors' settings
    where they publish them and these options otherwise, or given (`--register-neurons`)."""

    counts: tuple[int, ...] = ()
    """Test-time registers per backbone (one number: every backbone)."""
    threshold: float | None = None
    detection_block: int | None = None
    max_block: int | None = None
    top_k: int | None = None
    sparse: bool = False
    neurons: str | None = None
    """--register-neurons, as written (BLOCK:I,J;BLOCK:K)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RegisterOptions:
        return cls(
            tuple(args.test_time_registers or ()), args.neuron_threshold, args.neuron_detection_block,
            args.neuron_max_block, args.neuron_top_k, args.neuron_sparse, args.register_neurons,
        )  # fmt: skip

    def check(self, backbones: int, searching: bool = False) -> None:
        """Refuse, before any model loads: a count per backbone that does not fit, a negative one,
        neuron options without test-time registers or the register_neurons probe (`searching`), or
        options that do not parse."""
        from harness.test_time_registers import parse_neurons

        check_per_backbone("--test-time-registers", "number", self.counts, backbones)
        if any(count < 0 for count in self.counts):
            raise UserError(f"--test-time-registers counts extra tokens: 0 or more, got {list(self.counts)}")
        search = [self.threshold, self.detection_block, self.max_block, self.top_k]
        asked = any(option is not None for option in search) or self.sparse
        if not any(self.counts) and not searching and asked:
            raise UserError("the --neuron-* options choose the register neurons of --test-time-registers "
                            "or --probe register_neurons: add one")  # fmt: skip
        if not any(self.counts) and self.neurons is not None:
            raise UserError("--register-neurons gives the neurons of --test-time-registers: add it")
        if self.neurons is not None and asked and not searching:
            raise UserError(
                "--register-neurons gives the neurons: the --neuron-* search options do not apply"
            )
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise UserError(f"--neuron-threshold is a norm: a positive number, got {self.threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"--neuron-top-k must be positive, got {self.top_k}")
        if self.neurons is not None:
            try:
                parse_neurons(self.neurons)
            except ValueError as error:
                raise UserError(f"--register-neurons: {error}") from None

    def search(self, info: BackboneInfo) -> RegisterNeurons:
        """The register-neuron search these options ask for on the backbone `info` describes.

        Raises:
            UserError: no threshold for a model the authors publish none for, or a block it lacks.
        """
        from harness.extras.register_neurons import RegisterNeurons

        try:
            search = RegisterNeurons.for_model(
                info, self.threshold, self.detection_block, self.max_block, self.sparse
            )
        except ValueError as error:
            raise UserError(str(error)) from None
        for what, block in (("--neuron-detection-block", search.detection_block),
                            ("--neuron-max-block", search.max_block)):  # fmt: skip
            if not 1 <= block <= info.num_layers:
                raise UserError(f"{what} {block}: {info.name} has blocks 1..{info.num_layers}")
        return search

    def count_for(self, position: int) -> int:
        """The test-time registers of the backbone at `position` (0 without any)."""
        return per_backbone(self.counts, position, 0)


@dataclass
class ProbeRequest:
    """The probes of a run, built once the data's class names are known (in the module's `setup`);
    `selection` then holds the probes that ran (`all` narrowed to the data's labels)."""

    options: ProbeOptions
    selection: ProbeSelection
    info: BackboneInfo
    resolution: int
    layers: tuple[int, ...] = ()
    bank: KnnBank | None = None
    interventions: tuple[Intervention, ...] = ()
    classifier: torch.nn.Linear | None = None
    """The backbone's own classifier, read with `--head model`."""
    maps: tuple[str, ...] = ()
    heads: tuple[int, ...] = ()
    """The attribution maps and heads `--maps` chose (`harness.extras.attribution.parse_maps`)."""
    neuron_search: RegisterNeurons | None = None
    neuron_top_k: int | None = None
    """The register_neurons probe's search and its number of neurons (`--neuron-*`)."""

    def build(self, class_names: tuple[str, ...]) -> dict[str, Probe]:
        from harness import LinearHead
        from probes import ProbeContext

        labelled = len(class_names) >= 2  # a classifier or a centroid ranking needs two classes
        self.selection = self.selection.for_data(labelled)
        if self.bank is not None and self.selection.needs_bank and self.bank.class_names != class_names:
            querying = ", ".join(self.selection.named(lambda probe: probe.needs_bank))
            raise UserError(
                f"the training data's classes ({', '.join(self.bank.class_names[:5])}, ...) are not the "
                f"evaluated data's ({', '.join(class_names[:5])}, ...): the {querying} probe needs the "
                "same classes"
            )
        options = self.options
        own_head = None  # `check_own_head` has refused --head model without a classifier
        if options.own_head and self.classifier is not None:
            own_head = LinearHead.of_classifier(
                self.classifier, self.info.identity, self.resolution, self.info.pos_interpolation,
                self.info.hidden_size,
            )  # fmt: skip
        context = ProbeContext(
            self.info,
            class_names,
            self.resolution,
            options.seed,
            options.episodes,
            options.shots,
            None if options.own_head else options.head,
            self.layers,
            self.bank,
            self.interventions,
            self.maps,
            self.heads,
            perturbations=checked_perturbations(options.perturbation),
            explain=options.explain or "predicted",
            own_head=own_head,
            neuron_search=self.neuron_search,
            neuron_top_k=self.neuron_top_k,
        )
        return self.selection.build(context)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cls-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_input_arguments(parser, several_backbones=True)
    parser.add_argument(
        "--from-features", type=Path, help="re-run the probes from a run folder's features (no backbone)"
    )
    parser.add_argument(
        "--compare", type=Path, nargs="+", metavar="RUN", help="compare finished run folders (no backbone)"
    )
    parser.add_argument(
        "--probe",
        default="all",
        help="comma list of probe names (a wrong name lists them all), or 'all' (default)",
    )
    parser.add_argument(
        "--recipe",
        help="reproduce a published result: its runs (options given here override its own), then "
        "OUT/reproduction.md, measured against published; 'list' lists the recipes",
    )
    parser.add_argument("--output", type=Path, required=True, help="run folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output")
    parser.add_argument(
        "--save-features", action="store_true", help="write every variant to features.safetensors"
    )
    parser.add_argument(
        "--head",
        type=Path,
        help="linear head from train_probe.py for --probe linear (and attribution's class scores); "
        "'model': the backbone's own classifier on its [CLS] output (an ImageNet ViT's, DeiT's [CLS] "
        "head, a timm model's head), labels in its class order; a head released with DINOv2 "
        "(dinov2_vit*14[_reg4]_linear[4]_head.pth), or 'dinov2' / 'dinov2_linear4' to fetch the "
        "backbone's own (1 or 4 blocks; torch.hub's cache first)",
    )
    parser.add_argument("--episodes", type=int, default=10, help="one-shot episodes (default: 10)")
    parser.add_argument("--shots", type=int, default=1, help="one-shot support images per class (default: 1)")
    parser.add_argument(
        "--train-data",
        choices=sorted(LABELLED_SOURCES),
        help="labelled training images whose output/full form the knn probe's bank (DINOv2's k-NN)",
    )
    parser.add_argument("--train-dir", type=Path, help="folder of --train-data")
    parser.add_argument(
        "--train-split", help="--train-data split (default: train; COCO / ImageNet: val or train)"
    )
    parser.add_argument(
        "--train-per-class", type=int, help="a seeded subset of this many training images per class"
    )
    parser.add_argument(
        "--layers",
        default="last",
        help="blocks to decompose as they run, besides the last: last (default: none more), all, or "
        "block numbers like 1,6,12; adds the depth probe (depth/layer{l}/...)",
    )
    parser.add_argument(
        "--intervene",
        nargs="+",
        metavar="SPEC",
        help="also run the model under each intervention TARGETS@BLOCKS:MODE[:LEVEL]: targets cls, "
        "distillation, register, patch, high_norm, skip (readout only), registerN, tokenN (sequence "
        "position), headN, neurons:I,J,K (MLP neurons from 0, model level), joined by +; blocks last, all, "
        "N or A-B; a mode (zero, mean, shuffle, noise, knockout, ...: a wrong one lists every mode) and a "
        "level (model, the default, or readout). E.g. register@last:mean, head5@12:zero, "
        "neurons@12:5,17,300:zero",
    )
    parser.add_argument(
        "--maps",
        help="the attribution probe's maps, comma list: all (default), map names (attention, rollout, "
        "chefer, ...: a wrong one lists every map), heads (each head's attention map: about 4 passes "
        "per head) or attention_headN",
    )
    parser.add_argument(
        "--perturbation",
        help="how the attribution probe perturbs the images to score each map, comma list: tokens "
        "(default: patches removed from the sequence, deletion and insertion), pixels (Chefer et al.'s "
        "test: 10..90 %% of the pixels blacked out in the map's order, positive and negative, top-1 "
        "accuracy against the labels; needs --head or --train-data) or tokens,pixels",
    )
    parser.add_argument(
        "--explain-class",
        choices=("predicted", "label"),
        help="the class the attribution probe's gradient maps explain and its curves follow: predicted "
        "(default: the class the full image is given, Chefer et al.'s --vis-class top) or label (each "
        "image's label, their --vis-class target; needs --head or --train-data and labels)",
    )
    parser.add_argument(
        "--artifact-threshold",
        type=float,
        nargs="+",
        metavar="NORM",
        help="split the patches into artifact (norm in the last block's input above NORM, e.g. 150 for "
        "DINOv2-L as Darcet et al. and the test-time-registers paper use) and ordinary ones: their "
        "variants, split/artifact and the intervention target `artifact`; one norm, or one per --backbone "
        "(0: no split)",
    )
    parser.add_argument(
        "--test-time-registers",
        type=int,
        nargs="+",
        metavar="K",
        help="give the model K test-time registers (Jiang et al. 2025: extra tokens the register neurons' "
        "activations are moved into; counted as registers): one number, or one per --backbone (0: none), "
        "e.g. --backbone M M M_reg --test-time-registers 0 1 0",
    )
    parser.add_argument(
        "--register-neurons",
        metavar="SPEC",
        help="the register neurons, BLOCK:I,J;BLOCK:K (blocks from 1, neurons from 0); default: searched "
        "over the reference images",
    )
    parser.add_argument(
        "--neuron-threshold", type=float,
        help="the search's outliers: tokens whose norm exceeds this (default: the authors' for the model, "
        "150 for DINOv2-L, 30 for OpenCLIP and OpenAI ViT-B/16; required for others)",
    )  # fmt: skip
    parser.add_argument(
        "--neuron-detection-block", type=int,
        help="the block whose output norms find the outliers (default: the second-to-last)",
    )  # fmt: skip
    parser.add_argument(
        "--neuron-max-block", type=int,
        help="score the neurons of blocks 1..N (default: the authors' for the model, else 3/4 of the depth)",
    )  # fmt: skip
    parser.add_argument(
        "--neuron-top-k",
        type=int,
        help="register neurons kept, ranked over blocks (default: the authors' or 50)",
    )
    parser.add_argument(
        "--neuron-sparse", action="store_true",
        help="the authors' notebook's sparsity filter: a neuron scores only where below 0.5 on half "
        "the tokens",
    )  # fmt: skip
    parser.add_argument(
        "--reference-data",
        choices=sorted(DATA_SOURCES),
        help="images whose states mean / shuffle / noise read, and the register-neuron search's (default: "
        "the evaluated data)",
    )
    parser.add_argument("--reference-dir", type=Path, help="folder of --reference-data")
    parser.add_argument(
        "--reference-split",
        help="--reference-data split (default: the evaluated data's; COCO / ImageNet: val or train)",
    )
    parser.add_argument(
        "--reference-limit", type=int,
        help=f"reference images, a seeded subset (default: {REFERENCE_LIMIT})",
    )  # fmt: skip
    add_trainer_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The `cls-evaluate` command: options -> typed arguments of `evaluate`; `--recipe NAME` runs a
    published result's recipe (`run_recipe`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--recipe")
    found, rest = finder.parse_known_args(argv)
    recipe = found.recipe
    if recipe is not None:
        return run_main(lambda: run_recipe(recipe, rest))
    args = parse_args(argv)
    return run_main(lambda: evaluate_args(args))


def evaluate_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`evaluate` with the parsed command line."""
    return evaluate(
        backbones=args.backbone,
        output=args.output,
        data=DataOptions.from_args(args),
        probes=ProbeOptions.from_args(args),
        trainer=TrainerOptions.from_args(args),
        save_features=args.save_features,
        overwrite=args.overwrite,
        from_features=args.from_features,
        compare=args.compare,
        pos_interpolation=args.pos_interpolation,
        registers=RegisterOptions.from_args(args),
    )


def run_recipe(name: str, given: Sequence[str]) -> None:
    """`--recipe NAME`: its runs (its options, then `given`, which override them), then
    OUT/reproduction.md and OUT/figures/reproduction.png; `--recipe list` prints the recipes."""
    from lightning.pytorch.utilities import rank_zero_only

    from cls_decoupling.outputs.recipes import listing, load_recipe, write_reproduction

    if name == "list":
        print(listing())
        return
    recipe = load_recipe(name)
    args = parse_args(recipe.argv(given))
    if args.from_features is not None or args.compare is not None:
        raise UserError("--recipe runs its backbones; it takes neither --from-features nor --compare")
    records = evaluate_args(args)  # one per backbone, in their order
    runs = dict(zip(args.backbone, records, strict=True))
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        rows = write_reproduction(args.output, recipe, runs)
        held = sum(bool(row.holds) for row in rows)
        measured = sum(row.measured is not None for row in rows)
        log.info("recipe %s: %d of %d measured numbers within tolerance -> %s", name, held, measured,
                 args.output / "reproduction.md")  # fmt: skip


def evaluate(
    backbones: Sequence[str] | None,
    output: Path,
    data: DataOptions,
    probes: ProbeOptions,
    trainer: TrainerOptions,
    save_features: bool = False,
    overwrite: bool = False,
    from_features: Path | None = None,
    compare: Sequence[Path] | None = None,
    pos_interpolation: str | None = None,
    registers: RegisterOptions = RegisterOptions(),
) -> list[dict[str, Any]]:
    """Evaluate one or several backbones, re-run probes from saved features, or compare finished runs;
    return (on every rank) what each results.json holds. Every option, backbone name, head and the
    output folder are checked before any model loads; the output folder is locked while it is written."""
    from lightning.pytorch.utilities import rank_zero_only

    from cls_decoupling.outputs import (
        check_output_dir,
        load_record,
        load_run,
        mark_unfinished,
        write_comparison,
    )
    from cls_decoupling.outputs.writing import COMPARISON_FILES
    from harness import resolve_backbone

    if compare is not None:
        if backbones or from_features or registers.counts:
            raise UserError(
                "--compare reads finished runs: it takes no --backbone, --from-features or "
                "--test-time-registers"
            )
        if probes.interventions or probes.probe != "all":
            raise UserError(
                "--compare compares the results the runs hold: it runs no probe or intervention; drop "
                "--probe and --intervene (re-run a run with them, then compare)"
            )
        with _locked(output):
            compare_folders(compare, output, overwrite)
        return []
    names: list[str | None] = [*backbones] if backbones else [None]
    if from_features is not None and len(names) > 1:
        raise UserError("--from-features takes one run; compare replayed runs with --compare")
    if from_features is not None and (registers.counts or probes.artifact_thresholds):
        raise UserError(
            "--from-features replays saved features: it takes no --test-time-registers or "
            "--artifact-threshold (the features hold what their run split)"
        )
    if from_features is not None and (data.resize is not None or data.crop_ratio is not None):
        raise UserError(
            "--from-features replays features of images prepared as their run prepared them: it takes "
            "no --resize or --crop-ratio"
        )
    if from_features is None:
        check_apart(
            output, {"--data-dir": data, "--train-dir": probes.train, "--reference-dir": probes.reference}
        )
    replayed = None if from_features is None else load_record(from_features)
    selection = check_probe_options(probes, replayed)
    registers.check(len(names), searching="register_neurons" in selection.names)
    probes.check_artifacts(len(names))
    if from_features is None:
        for name in names:
            if name is None:
                raise UserError("--backbone is required")
            resolve_backbone(name)  # a typo in any name, before the first backbone runs
        trainer.check()  # the device options, once, before any model loads

    def one(name: str | None, folder: Path, position: int) -> dict[str, Any]:
        return run_one(name, folder, data, probes, selection, trainer, save_features, pos_interpolation,
                       registers, registers.count_for(position), probes.artifact_for(position))  # fmt: skip

    with _locked(output):
        if len(names) == 1:
            check_output_dir(output, overwrite)
            if from_features is not None:
                assert replayed is not None  # read with from_features above
                return [run_from_features(from_features, replayed, output, probes, selection, names[0])]
            return [one(names[0], output, 0)]
        counts = [registers.count_for(position) for position in range(len(names))]
        thresholds = [probes.artifact_for(position) for position in range(len(names))]
        labels = backbone_labels([name for name in names if name is not None], counts, thresholds)
        for label in labels:
            check_output_dir(output / label, overwrite)
        check_output_dir(output, overwrite, COMPARISON_FILES, also=labels)
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            mark_unfinished(output)  # an earlier comparison no longer describes the runs beside it
        summaries = []
        for position, (label, backbone) in enumerate(zip(labels, names, strict=True)):
            log.info("backbone %s -> %s", backbone, output / label)
            summaries.append(one(backbone, output / label, position))
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            write_comparison([(label, load_run(output / label)) for label in labels], output)
        return summaries


def check_apart(output: Path, read: Mapping[str, DataOptions | None]) -> None:
    """Refuse an output folder that is, or lies inside, a folder the run reads images from (the next
    run over that folder would read this run's figures as images), or that holds one (`read`: the
    option naming each folder -> its data options). Symbolic links and relative paths are resolved.

    Raises:
        UserError: the two overlap; the line names both folders.
    """
    written = output.resolve()
    for option, data in read.items():
        folder = None if data is None else data.folder
        if folder is None:
            continue
        images = folder.resolve()
        if written == images or written.is_relative_to(images):
            where = "is" if written == images else "lies inside"
            raise UserError(
                f"--output {_spelled(output)} {where} the {option} folder {_spelled(folder)}: the next "
                "run over it would read this run's figures as images; write the run outside the data folder"
            )
        if images.is_relative_to(written):
            raise UserError(
                f"the {option} folder {_spelled(folder)} lies inside --output {_spelled(output)}: the run "
                "would be written around its own images; choose an --output outside the data folder"
            )


def _spelled(path: Path) -> str:
    """A path as given, and where it leads when that differs (a relative path, a symbolic link)."""
    resolved = path.resolve()
    return str(path) if str(path) == str(resolved) else f"{path} (= {resolved})"


def check_probe_options(probes: ProbeOptions, replayed: RunRecord | None = None) -> ProbeSelection:
    """The probe selection, parsed once for the run (a replay of `replayed`'s saved features: no
    images, the layers its run decomposed, no bank), with --layers, and a head only where a probe will
    use it (readable, before any load)."""
    from harness import LinearHead, parse_layers
    from probes import PROBES, ProbeSelection
    from probes.attribution import labelled_classes_asked

    try:
        parse_layers(probes.layers)
    except ValueError as error:
        raise UserError(str(error)) from None
    if replayed is not None and probes.layers != "last":
        raise UserError("--from-features replays the layers its run decomposed; it takes no --layers")
    if replayed is not None and probes.train is not None:
        raise UserError("--from-features has no backbone to build a k-NN bank with; drop --train-data")
    if probes.interventions and replayed is not None:
        raise UserError("--from-features has no backbone to run interventions with; drop --intervene")
    for text in probes.interventions:  # the syntax now; the blocks once the backbone's depth is known
        intervention_blocks(text, None)
    if probes.maps is not None:
        checked_maps(probes.maps, None)
    selection = ProbeSelection.parse(
        probes.probe,
        pixels=replayed is None,
        layers=bool(replayed.run.layers) if replayed is not None else probes.layers != "last",
        bank=probes.train is not None,
        interventions=bool(probes.interventions),
    )
    if probes.interventions and "interventions" not in selection:  # what each one does to the output
        selection = ProbeSelection((*selection.names, "interventions"), selection.everything)
    if probes.reference is not None:
        probes.reference.datamodule()  # its options, before any model loads
    if probes.train is not None:
        probes.train.datamodule()  # its options, before any model loads
    if probes.episodes < 1 or probes.shots < 1:
        raise UserError(f"--episodes and --shots must be positive, got {probes.episodes} and {probes.shots}")
    attribution_options = (
        ("--maps", probes.maps, "chooses the attribution probe's maps"),
        ("--explain-class", probes.explain, "chooses what the attribution probe explains"),
        ("--perturbation", probes.perturbation, "chooses how the attribution probe scores"),
    )
    for option, value, what in attribution_options:
        if value is not None and "attribution" not in selection:
            raise UserError(f"{option} {what}: add --probe attribution")
    perturbations = checked_perturbations(probes.perturbation) if probes.perturbation else ()
    asking = labelled_classes_asked(perturbations, probes.explain or "predicted")
    if asking and probes.head is None and probes.train is None:
        raise UserError(
            f"{asking[0]}: add --head (a head file, or model) or --train-data for the class scores"
        )
    if probes.head is not None:
        if not selection.reads_head:
            reading = " or ".join(name for name, probe in PROBES.items() if probe.reads_head)
            raise UserError(f"--head is read by the {reading} probe only: add one to --probe")
        if not probes.own_head and not probes.released_blocks:
            LinearHead.load(probes.head)
    return selection


def head_record(probes: ProbeOptions) -> str | None:
    """results.json `run.head`: the head file's absolute path, "model" for the backbone's own."""
    if probes.head is None:
        return None
    return MODEL_HEAD if probes.own_head else str(probes.head.resolve())


def intervention_blocks(text: str, num_layers: int | None) -> Intervention:
    """An `--intervene` spec parsed against a backbone of `num_layers` blocks (None: its syntax
    only, against any depth), its mode and level read from the registries."""
    from harness.extras import Intervention

    try:
        return Intervention.parse(text, num_layers if num_layers is not None else 10**6)
    except ValueError as error:
        raise UserError(str(error)) from None


def checked_perturbations(text: str | None) -> tuple[str, ...]:
    """`--perturbation` read (None: `tokens`, the patches removed from the sequence)."""
    from harness.extras.attribution import parse_perturbations

    try:
        return parse_perturbations(text or "tokens")
    except ValueError as error:
        raise UserError(str(error)) from None


def checked_maps(
    text: str | None, num_heads: int | None, readout: str = "cls", backbone: DecomposingBackbone | None = None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """`--maps` read from the registry of maps: (maps, heads) for a backbone of `num_heads` heads
    read by `readout` (`num_heads` None: the syntax only); every map it can have and no head when
    not given. With the `backbone`, a map whose rules do not cover it (`AttributionMap.problem`) is
    left out of `all` (logged) and refused in one line when named."""
    from harness.extras import MAPS, parse_maps

    try:
        maps, heads = parse_maps(text or "all", num_heads, readout)
    except ValueError as error:
        raise UserError(str(error)) from None
    if backbone is None:
        return maps, heads
    problems = {name: problem for name in maps if (problem := MAPS[name]().problem(backbone))}
    named = [word.strip() for word in (text or "all").split(",")]
    for name, problem in problems.items():
        if name in named:
            raise UserError(f"--maps {name}: {problem}")
        log.info("map %s left out of all: %s", name, problem)
    return tuple(name for name in maps if name not in problems), heads


def applicable_interventions(
    texts: Sequence[str], backbone: DecomposingBackbone, resolution: int | None = None
) -> tuple[tuple[Intervention, ...], dict[str, str]]:
    """The `--intervene` specs parsed for this backbone, and those left out (name -> why): the
    library's own checks (`Intervention.check_model`, `check_family`), before any pass (a reference
    pass included); a target group the model lacks (registers of a model without any) is skipped and
    recorded, so one command can compare models with and without that group; anything else it
    refuses is refused."""
    from harness.extras import AbsentTargetError
    from harness.tokens import TokenLayout

    info = backbone.info
    kept, skipped = [], {}
    given: dict[tuple[object, ...], str] = {}  # what it does -> the spec that asked for it first
    for text in texts:
        intervention = intervention_blocks(text, info.num_layers)
        does = (intervention.targets, intervention.blocks, intervention.mode, intervention.level)
        if does in given:  # the same intervention written twice (last and its number, all and its range)
            log.warning("--intervene %s: the same as %s, run once", text, given[does])
            continue
        given[does] = text
        try:
            intervention.check_model(info)
            intervention.check_family(backbone.family)
            if resolution is not None:  # a token position beyond the sequence at this resolution
                intervention.check_layout(
                    TokenLayout.for_image(
                        resolution, resolution, info.patch_size, info.num_registers, info.num_distillation
                    )
                )
        except AbsentTargetError as error:
            skipped[intervention.name] = error.reason
            log.warning("--intervene %s: skipped, %s", text, error.reason)
            continue
        except ValueError as error:
            raise UserError(str(error)) from None
        kept.append(intervention)
    return tuple(kept), skipped


def _locked(output: Path) -> contextlib.AbstractContextManager[None]:
    """The output folder's lock on the process that writes (global rank 0: rank 0 of node 0, as the
    launchers' environment says before the Trainer starts); nothing on the others."""
    from lightning.pytorch.utilities import rank_zero_only

    from cls_decoupling.outputs import output_lock

    if rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0":  # type: ignore[attr-defined]
        return output_lock(output)
    return contextlib.nullcontext()


def compare_folders(folders: Sequence[Path], output: Path, overwrite: bool) -> None:
    """Compare finished run folders, labelled by their names (or their paths where names repeat)."""
    from cls_decoupling.outputs import check_output_dir, load_run, write_comparison
    from cls_decoupling.outputs.writing import COMPARISON_FILES

    written = {(output / name).resolve() for name in COMPARISON_FILES} | {output.resolve()}
    if clashes := [str(folder) for folder in folders if folder.resolve() in written]:
        raise UserError(f"the comparison in {output} would write over the run {', '.join(clashes)}")
    check_output_dir(output, overwrite, COMPARISON_FILES, also=[folder.name for folder in folders])
    names = [folder.name for folder in folders]
    labels = names if len(set(names)) == len(names) else [str(folder) for folder in folders]
    write_comparison(
        [(label, load_run(folder)) for label, folder in zip(labels, folders, strict=True)], output
    )


def backbone_labels(
    backbones: Sequence[str],
    test_time_registers: Sequence[int] = (),
    artifact_thresholds: Sequence[float] = (),
) -> list[str]:
    """A folder name per backbone (`random:tiny_reg` -> `random_tiny_reg`, a path -> its last part;
    `_ttr2` added for 2 test-time registers, `_art150` for patches split by norm at 150, where the
    backbones' thresholds differ)."""
    from cls_decoupling.outputs.writing import COMPARISON_FILES

    counts = list(test_time_registers) or [0] * len(backbones)
    thresholds = list(artifact_thresholds) or [0.0] * len(backbones)
    marked = len(set(thresholds)) > 1
    labels = [
        re.sub(r"[^\w.-]+", "_", Path(name).name if Path(name).exists() else name)
        + (f"_ttr{count}" if count else "")
        + (f"_art{threshold:g}" if marked and threshold else "")
        for name, count, threshold in zip(backbones, counts, thresholds, strict=True)
    ]
    if len(set(labels)) != len(labels):
        raise UserError(f"each backbone once, please: {', '.join(backbones)} name the same run folders")
    if clashes := sorted(set(labels) & set(COMPARISON_FILES)):
        raise UserError(
            f"a backbone's run folder may not be named {', '.join(clashes)}: the comparison uses it"
        )
    return labels


def run_one(
    backbone_name: str | None,
    output: Path,
    data: DataOptions,
    probes: ProbeOptions,
    selection: ProbeSelection,
    trainer_options: TrainerOptions,
    save_features: bool = False,
    pos_interpolation: str | None = None,
    registers: RegisterOptions = RegisterOptions(),
    test_time_registers: int = 0,
    artifact_threshold: float = 0.0,
) -> dict[str, Any]:
    """Evaluate one backbone, with `test_time_registers` test-time registers (found as `registers`
    says) and its patches split by norm at `artifact_threshold` (0: no split); write its run folder
    on rank 0 (`pos_interpolation`: see `harness.load_backbone`;
    `evaluate` has checked the device options)."""
    import torch

    from cls_decoupling.outputs import DataRecord, Run, RunRecord, RunSettings
    from harness import HarnessModule, all_feature_names
    from harness.extras import Depth

    datamodule = data.datamodule()  # after the data options: a bad one costs no model load
    loading = time.perf_counter()
    backbone, layers = load_checked_backbone(
        backbone_name, data.resolution, pos_interpolation, trainer_options.compile, probes.layers
    )
    probes.check_own_head(backbone.info, backbone.classifier)
    probes = probes.with_released_head(backbone.info)  # the file, recorded as run.head
    selection = selection.for_model(backbone.info)
    register_record = None
    if test_time_registers:
        searched = probes.reference or data  # ProbeOptions builds a reference whenever registers are asked
        backbone, register_record = add_test_time_registers(
            backbone, test_time_registers, registers, searched, trainer_options
        )
    if artifact_threshold:  # on the model as evaluated (test-time registers included)
        backbone = backbone.with_artifacts(artifact_threshold)
    interventions, skipped_interventions = applicable_interventions(
        probes.interventions, backbone, data.resolution
    )
    maps, heads = checked_maps(probes.maps, backbone.info.heads_read, backbone.info.readout, backbone)
    bank, train_description = None, None
    if probes.train is not None:
        bank, train_description = build_bank(backbone, probes.train, trainer_options)
    reference, reference_description = None, None
    if probes.reference is not None and any(i.reference_keys() for i in interventions):
        reference, reference_description = build_reference(
            backbone, interventions, probes.reference, trainer_options, probes.seed
        )
        interventions = tuple(intervention.using(reference) for intervention in interventions)
    trainer = trainer_options.trainer()  # no logger: nothing is written before the run has results
    request = ProbeRequest(
        probes,
        selection,
        backbone.info,
        data.resolution,
        layers=layers,
        bank=bank,
        interventions=interventions,
        classifier=backbone.classifier,
        maps=maps,
        heads=heads,
    )
    if "register_neurons" in selection.names:  # on the model as evaluated (test-time registers included)
        request.neuron_search = registers.search(backbone.info)
        request.neuron_top_k = registers.top_k  # the probe's own default where not asked
    features = all_feature_names(backbone.info, layers=bool(layers)) if save_features else ()
    # the layers given are decomposed whatever the probes (their entries are saved with the features)
    every_call = (Depth(layers),) if layers else ()
    module = HarnessModule(backbone, request.build, feature_names=features, extras=every_call)
    started = time.perf_counter()
    run_test(trainer, module, prepare_for(datamodule, backbone))
    if not module.num_images:  # nothing to report: an earlier run in `output` stays as it was
        reasons = "; ".join(f"{index}: {reason}" for index, reason in module.skipped[:3])
        raise UserError(f"no image could be read ({len(module.skipped)} skipped, e.g. {reasons})")
    record = RunRecord(
        backbone.info,
        DataRecord.counted(
            datamodule.describe(), module.num_images, module.num_repeated, module.skipped, train_description
        ),
        RunSettings(
            probes=request.selection.names,
            skipped_probes=module.skipped_consumers,
            precision=str(trainer.precision),  # what ran (16-mixed on a CPU runs as bf16-mixed)
            world_size=trainer.world_size,
            batch_size=data.batch_size,
            episodes=probes.episodes,
            shots=probes.shots,
            seed=probes.seed,
            head=head_record(probes),
            seconds=round(time.perf_counter() - started, 3),
            timings=run_timings(loading, started, module.stamps),
            compile=trainer_options.compile,
            layers=layers,
            max_pooler_error=module.max_pooler_error,
            torch=torch.__version__,
            interventions=tuple(intervention.name for intervention in interventions),
            intervention_blocks={i.name: i.blocks for i in interventions},  # `last` and `all` resolved
            skipped_interventions=skipped_interventions,
            reference=reference_description,
            test_time_registers=register_record,
            explained_class=(probes.explain or "predicted") if "attribution" in request.selection else None,
        ),
        module.results,
    )
    if trainer.is_global_zero:
        images = datamodule.images
        names = [images.name(position) for position in range(len(images))]
        write_finished(output, Run(record, module.arrays), module.features, names)
    return record.as_dict()


def build_bank(
    backbone: DecomposingBackbone, train: DataOptions, trainer_options: TrainerOptions
) -> tuple[KnnBank, dict[str, Any]]:
    """`output/full` of every training image (gathered on every rank: each holds the whole bank),
    with what results.json records of the training data. A plain decomposing pass: no deletion
    passes and no per-layer work, whatever the evaluated run computes."""
    from harness import HarnessModule
    from probes import FULL_OUTPUT, KnnBank

    datamodule = train.datamodule()
    module = HarnessModule(backbone, feature_names=[FULL_OUTPUT])
    log.info("k-NN bank: %s images of %s", train.split, train.source)
    run_test(trainer_options.trainer(), module, prepare_for(datamodule, backbone))
    if module.features is None or not module.num_images:
        raise UserError(f"no training image of {train.source} could be read for the k-NN bank")
    if len(datamodule.class_names) < 2:
        raise UserError(f"the k-NN bank needs labelled training data of 2+ classes; {train.source} has none")
    features = module.features
    bank = KnnBank(features[FULL_OUTPUT], features["label"], tuple(datamodule.class_names))
    return bank, {
        **datamodule.describe(),
        "num_images": module.num_images,
        "num_skipped": len(module.skipped),
    }


def add_test_time_registers(
    backbone: DecomposingBackbone, count: int, registers: RegisterOptions, reference: DataOptions,
    trainer_options: TrainerOptions,
) -> tuple[DecomposingBackbone, dict[str, Any]]:  # fmt: skip
    """`backbone` with `count` test-time registers fed by the register neurons given, or searched over
    the `reference` images (one pass of `RegisterNeurons` each, reduced across ranks); with what
    results.json records of them (`run.test_time_registers`)."""
    from harness.extras.register_neurons import NeuronSearchModule, neurons_by_block, top_k_for
    from harness.test_time_registers import parse_neurons, with_test_time_registers_backbone

    record: dict[str, Any] = {"count": count}
    if registers.neurons is not None:
        neurons = parse_neurons(registers.neurons)
        record["found_by"] = "given"
    else:
        search, top_k = registers.search(backbone.info), top_k_for(backbone.info, registers.top_k)
        datamodule = reference.datamodule()
        module = NeuronSearchModule(backbone, search)
        log.info("register-neuron search: %s images of %s", reference.limit or "all", reference.source)
        run_test(trainer_options.trainer(), module, prepare_for(datamodule, backbone))
        found = module.computed
        if not int(found["with_outliers"]):
            raise UserError(
                f"--test-time-registers: no token's norm exceeds {search.threshold:g} at block "
                f"{search.detection_block} in {int(found['distinct'])} reference images of "
                f"{reference.source}: no register neurons to move; lower --neuron-threshold or choose "
                "another --neuron-detection-block"
            )
        ranked = module.ranked(top_k)
        neurons = neurons_by_block(ranked)
        record |= {
            "found_by": "search",
            "threshold": search.threshold,
            "detection_block": search.detection_block,
            "max_block": search.max_block,
            "top_k": top_k,
            "sparse": search.sparse,
            "reference": {**datamodule.describe(), "num_images": int(found["distinct"])},
            "images_with_outliers": int(found["with_outliers"]),
            "outliers": int(found["outliers"]),
            "ranked": [[item.block, item.neuron, round(item.score, 6)] for item in ranked],
        }
    try:
        moved = with_test_time_registers_backbone(backbone, neurons, count)
    except ValueError as error:
        raise UserError(f"--test-time-registers: {error}") from None
    record["neurons"] = {str(block): list(found_neurons) for block, found_neurons in neurons.items()}
    return moved, record


def build_reference(
    backbone: DecomposingBackbone, interventions: Sequence[Intervention], reference: DataOptions,
    trainer_options: TrainerOptions, seed: int,
) -> tuple[ReferenceStatistics, dict[str, Any]]:  # fmt: skip
    """The reference statistics of the interventions that read them (mean, shuffle, noise): one clean
    pass over the reference images, reduced across ranks; with what results.json records of them."""
    from harness.extras import ReferenceStatistics
    from harness.extras.interventions.recording import ReferenceModule

    datamodule = reference.datamodule()
    statistics = ReferenceStatistics(seed=seed)
    module = ReferenceModule(backbone, interventions, statistics)
    log.info("reference pass: %s images of %s", reference.limit or "all", reference.source)
    run_test(trainer_options.trainer(), module, prepare_for(datamodule, backbone))
    if module.num_images < 2:
        raise UserError(
            f"the interventions' reference needs 2+ images; {module.num_images} of {reference.source} "
            "could be read"
        )
    return statistics, {**datamodule.describe(), "num_images": module.num_images}


def run_timings(loading: float, started: float, stamps: Mapping[str, float]) -> dict[str, float]:
    """Seconds of each phase of a run on this rank: `load` (the backbone and the trainer), `setup`
    (trainer.test to the test loop: moving the model to its device, building the probes), `first_batch`
    (starting the loader's workers, decoding the first batch), `loop` (first batch to the last one
    done on the device) and `compute` (the probes' results, synchronised across ranks)."""
    names = ("test_start", "first_batch", "loop_end", "computed")
    points = [loading, started, *(stamps.get(name) for name in names)]
    phases = ("load", "setup", "first_batch", "loop", "compute")
    return {
        phase: round(end - begin, 3)
        for phase, begin, end in zip(phases, points, points[1:], strict=False)
        if begin is not None and end is not None
    }


def write_finished(
    output: Path, run: Run, features: Mapping[str, torch.Tensor] | None, files: Sequence[Path | str] = ()
) -> None:
    """Write a run folder; a full disk or a lost permission is one line (the folder stays unfinished)."""
    from cls_decoupling.outputs import run_logger, write_run

    try:
        write_run(output, run, features, run_logger(output), files)
    except OSError as error:
        raise UserError(
            f"could not write the run to {output}: {error.strerror or error}; "
            "the folder holds no finished run"
        ) from None


def features_problem(features: Mapping[str, torch.Tensor], record: RunRecord) -> str | None:
    """What in saved features disagrees with the run record beside them (the width of a readout,
    the number of images), or None."""
    info = record.backbone
    widths = {"attention/": info.hidden_size, "output/": info.hidden_size, "projection/": info.projection_dim}
    for name, tensor in features.items():
        width = next((w for prefix, w in widths.items() if name.startswith(prefix)), None)
        if width is not None and tensor.shape[-1] != width:
            return f"{name} is {tensor.shape[-1]} wide, and results.json says {width}"
        if width is not None and tensor.shape[0] != record.data.num_images:
            return f"{name} holds {tensor.shape[0]} images, and results.json says {record.data.num_images}"
    return None


def run_from_features(
    source: Path,
    earlier: RunRecord,
    output: Path,
    probes: ProbeOptions,
    selection: ProbeSelection,
    backbone_name: str | None = None,
) -> dict[str, Any]:
    """The probes of `selection` on the features an earlier `--save-features` run wrote to `source`
    (`earlier`: its record, read by `evaluate`)."""
    import torch

    from cls_decoupling.outputs import Run, RunRecord, RunSettings, load_tensors
    from cls_decoupling.outputs.runs import FEATURES_FILE
    from probes import replay_features

    if not (source / FEATURES_FILE).is_file():
        raise UserError(f"{source} holds no {FEATURES_FILE}; run it with --save-features first")
    if source.resolve() == output.resolve():
        raise UserError("--output must differ from --from-features (the saved run stays as it is)")
    info = earlier.backbone
    if backbone_name is not None and backbone_name not in (info.name, info.identity):
        raise UserError(f"{source} holds features of {info.name!r}, not {backbone_name!r}")
    probes.check_own_head(info, None)  # saved features hold no classifier
    probes = probes.with_released_head(info)
    layers = earlier.run.layers
    selection = selection.for_model(info)  # what the model cannot feed (a model without [CLS])
    request = ProbeRequest(probes, selection, info, earlier.data.resolution, layers=layers)
    built = request.build(earlier.data.class_names)
    started = time.perf_counter()
    features = load_tensors(source / FEATURES_FILE)
    if problem := features_problem(features, earlier):
        raise UserError(
            f"{source}: {problem}; its {FEATURES_FILE} is not the run its results.json describes (edited?)"
        )
    results, arrays, skipped_probes = replay_features(built, features)
    record = RunRecord(
        info,
        dataclasses.replace(earlier.data, from_features=str(source.resolve())),
        RunSettings(
            probes=request.selection.names,
            skipped_probes=skipped_probes,
            episodes=probes.episodes,
            shots=probes.shots,
            seed=probes.seed,
            layers=layers,
            seconds=round(time.perf_counter() - started, 3),
            torch=torch.__version__,
        ),
        results,
    )
    write_finished(output, Run(record, arrays), None)
    return record.as_dict()
