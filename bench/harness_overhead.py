"""The harness (one decomposing pass + every probe update) against a plain HF forward, same process.

    python bench/harness_overhead.py [--backbones random:dinov2_vits14,random:dinov2_vitb14]
                                     [--resolutions 224,518] [--batch-size 16] [--repeats 5]

For each backbone and resolution, on the same inputs, timed in alternating rounds:
- plain: the HF model's forward, `pooler_output` only (SDPA attention);
- call: `DecomposingBackbone` alone (`backbone(pixels)`: the model's pass with its taps, then the
  decomposition), what a notebook user pays;
- capture: the model's pass with the taps alone (`backbone.capture(pixels)`), the taps' cost;
- harness: `DecomposingBackbone` + the update of every probe (every name of PROBES: split,
  cka, cka_debiased, registers, norms, layerwise, maps, oneshot, linear, heads) on synthetic labels,
  with the extras they ask each call for (the heads probe's per-head terms);
- layers_all: `--layers all`, the decomposition of every block as it runs + the depth probe's
  update (without the other probes: its own cost);
- naive: the same model with eager attention and `output_attentions=True` (every layer's
  attention weights materialised), skipped where those weights alone would exceed --naive-gib.
Prints median seconds per batch and the median per-round ratios harness/plain and naive/plain,
the [CLS]-row recomputation alone (what the decomposition adds to the forward pass), and the
ratio of floating-point operations counted by torch.profiler (harness/plain): a deterministic
measure of the added work, where wall-time ratios on a shared 2-core VM scatter by +-10% per round.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_ratio, paired_times
from harness import feed, load_backbone
from harness.decomposition import depth_quantities
from harness.extras import Depth
from harness.module import merged_extras
from probes import DepthProbe, ProbeContext, build_probes, parse_probe_names


def counted_flops(function: Callable[[], object]) -> float:
    """Floating-point operations of one call, as torch.profiler counts them (matmuls, convolutions)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as profile:
        function()
    return float(sum(event.flops for event in profile.key_averages()))


def bench_one(name: str, resolution: int, batch_size: int, repeats: int, naive_gib: float) -> str:
    backbone = load_backbone(name)
    info = backbone.info
    pixels = torch.randn(batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(batch_size) % 10
    indices = torch.arange(batch_size)
    context = ProbeContext(info, tuple(f"class{i}" for i in range(10)), resolution)
    probes = build_probes(parse_probe_names("all", layers=False, bank=False), context)
    depth = DepthProbe(tuple(range(1, info.num_layers + 1)), depth_quantities(info.num_registers))

    @torch.no_grad()
    def plain() -> object:
        return backbone.model(pixel_values=pixels).pooler_output

    asked = merged_extras(extra for probe in probes.values() for extra in probe.extras())  # heads' terms

    @torch.no_grad()
    def harness() -> object:
        decomposition = backbone(pixels, extras=asked)
        feed(probes.values(), decomposition, pixels, labels, indices)
        return decomposition

    every_block = tuple(range(1, info.num_layers + 1))

    @torch.no_grad()
    def harness_all_layers() -> object:  # --layers all: the decomposition at every block + the depth probe
        decomposition = backbone(pixels, extras=[Depth(every_block)])
        depth.update(decomposition, labels, indices)
        return decomposition

    @torch.no_grad()
    def call() -> object:
        return backbone(pixels)

    @torch.no_grad()
    def capture() -> object:
        return backbone.capture(pixels)

    functions = {"plain": plain, "call": call, "capture": capture, "harness": harness}
    functions["layers_all"] = harness_all_layers
    tokens = 1 + info.num_registers + (resolution // info.patch_size) ** 2
    attention_gib = info.num_layers * batch_size * info.num_heads * tokens**2 * 4 / 2**30
    if attention_gib <= naive_gib:
        eager = copy.deepcopy(backbone.model)
        eager.set_attn_implementation("eager")

        @torch.no_grad()
        def naive() -> object:
            return eager(pixel_values=pixels, output_attentions=True).attentions

        functions["naive"] = naive
    times = paired_times(functions, repeats)

    with torch.no_grad():
        capture = backbone.capture(pixels)  # the model's pass, with what the decomposition reads
        row_times = paired_times({"row": lambda: backbone.decompose(capture)}, repeats)["row"]
    flop_ratio = counted_flops(harness) / counted_flops(plain)
    plain_median = statistics.median(times["plain"])
    harness_median = statistics.median(times["harness"])
    parts = [
        f"{name} {resolution}px batch {batch_size}: plain {plain_median:.3f} s",
        f"harness {harness_median:.3f} s",
        f"call/plain {median_ratio(times['call'], times['plain']):.3f}",
        f"capture/plain {median_ratio(times['capture'], times['plain']):.3f}",
        f"harness/plain {median_ratio(times['harness'], times['plain']):.3f}",
        f"--layers all (decomposition at every block + depth probe)/plain "
        f"{median_ratio(times['layers_all'], times['plain']):.3f}",
    ]
    if "naive" in times:
        parts.append(f"naive {statistics.median(times['naive']):.3f} s")
        parts.append(f"naive/plain {median_ratio(times['naive'], times['plain']):.3f}")
    else:
        parts.append(f"naive skipped (attention weights alone {attention_gib:.1f} GiB)")
    row = statistics.median(row_times)
    parts.append(f"[CLS]-row recomputation {row * 1e3:.1f} ms ({row / plain_median:.2%})")
    parts.append(f"FLOPs harness/plain {flop_ratio:.4f}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", default="random:dinov2_vits14,random:dinov2_vitb14")
    parser.add_argument("--resolutions", default="224,518")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--naive-gib", type=float, default=6.0, help="skip naive above this much attention memory"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on CPU", flush=True)
    for name in args.backbones.split(","):
        for resolution in (int(r) for r in args.resolutions.split(",")):
            print(bench_one(name, resolution, args.batch_size, args.repeats, args.naive_gib), flush=True)


if __name__ == "__main__":
    main()
