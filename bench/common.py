"""What the benchmarks share: paired, alternating timing with medians, and one decomposed batch with
every probe built for it."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from harness import PIXELS, DecomposingBackbone, load_backbone
from harness.extras import DELETION_FRACTIONS, Deletion, Depth, HeadTerms
from probes import PROBES, KnnBank, Probe, ProbeContext, build_probes


@dataclass(frozen=True)
class ProbedBatch:
    """A backbone, one random batch, its decomposition (with the pixels), labels of 10 classes, and
    every probe built for that backbone and resolution."""

    backbone: DecomposingBackbone
    pixels: Tensor
    inputs: dict[str, Tensor]
    labels: Tensor
    probes: dict[str, Probe]


def probed_batch(backbone_name: str, resolution: int, batch_size: int, classes: int = 10) -> ProbedBatch:
    """The batch the probe benchmarks feed: seeded random pixels through `backbone_name`."""
    torch.manual_seed(0)
    backbone = load_backbone(backbone_name)
    layers = tuple(range(1, backbone.info.num_layers + 1))
    pixels = torch.randn(batch_size, 3, resolution, resolution)
    class_names = tuple(f"class{i}" for i in range(classes))
    bank = KnnBank(torch.randn(10 * classes, backbone.info.hidden_size), torch.arange(10 * classes) % classes,
                   class_names)  # fmt: skip
    context = ProbeContext(backbone.info, class_names, resolution, layers=layers, bank=bank)
    probes = build_probes(list(PROBES), context)
    with torch.no_grad():
        # every block decomposed (the depth probe, --layers all), its per-head terms (the heads probe)
        # and the deletion passes (its probe)
        extras = [Depth(layers), HeadTerms(layers), Deletion(DELETION_FRACTIONS)]
        decomposition = backbone(pixels, torch.arange(batch_size), extras=extras)
        inputs = {**decomposition, PIXELS: pixels}
    return ProbedBatch(backbone, pixels, inputs, torch.arange(batch_size) % classes, probes)


def paired_times(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each function over `repeats` rounds, after one warm-up round.

    Each round runs every function once, in an order rotated from round to round, so slow drift
    of the machine (other load, clocks) affects all of them alike; ratios are taken per round.
    """
    names = list(functions)
    for name in names:
        functions[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - started)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def against_call(title: str, times: dict[str, list[float]]) -> str:
    """One line: the median seconds of `times["call"]`, then of every other entry with its median
    per-round ratio to it."""
    parts = [f"{title}: call {statistics.median(times['call']):.3f} s"]
    for what in (name for name in times if name != "call"):
        ratio = median_ratio(times[what], times["call"])
        parts.append(f"{what} {statistics.median(times[what]):.3f} s ({ratio:.3f}x)")
    return ", ".join(parts)


def main_per_backbone(
    doc: str | None, backbones: str, bench_one: Callable[[str, int, int, int], str]
) -> None:
    """The command line of a per-backbone benchmark: --backbones (comma list, default `backbones`),
    --resolution, --batch-size, --repeats; prints `bench_one`'s line for each backbone."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default=backbones)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    torch.set_grad_enabled(False)
    for name in arguments.backbones.split(","):
        print(
            bench_one(name.strip(), arguments.resolution, arguments.batch_size, arguments.repeats), flush=True
        )


@dataclass(frozen=True)
class SeededBatch:
    """One backbone and a seeded batch, as the attribution benchmarks time them."""

    arguments: argparse.Namespace
    backbone: DecomposingBackbone
    pixels: Tensor
    indices: Tensor


def seeded_batch(doc: str | None) -> SeededBatch:
    """The command line of a one-backbone attribution benchmark (--backbone, --resolution, --batch-size,
    --repeats; defaults: random ViT-S/14 with registers, 112 px, 4 images, 2 rounds) and its batch."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="random:dinov2_vits14_reg")
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_backbone(arguments.backbone)
    pixels = torch.randn(arguments.batch_size, 3, arguments.resolution, arguments.resolution)
    return SeededBatch(arguments, backbone, pixels, torch.arange(arguments.batch_size))
