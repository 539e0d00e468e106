"""GPU check (run only where a GPU is lent; never in CI): ViT-g/14-sized random model in bf16.

    python bench/gpu_check.py [--backbone random:dinov2_vitg14_reg] [--batch-size 64] [--repeats 10]

Measures images/s of the plain HF forward and of the harness (decomposition + every probe
update) under bf16 autocast at 224 px, their ratio, the largest |output/full - pooler_output|,
and checks that every metric state stayed float64. No download: the weights are random.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_ratio, paired_times
from harness import feed, load_backbone
from probes import PROBES, ProbeContext, build_probes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="random:dinov2_vitg14_reg")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check is for a lent GPU machine")
    device = torch.device("cuda")
    backbone = load_backbone(args.backbone).to(device)
    info = backbone.info
    probes = build_probes(
        list(PROBES), ProbeContext(info, tuple(f"c{i}" for i in range(10)), args.resolution)
    )
    for probe in probes.values():
        probe.to(device)
    pixels = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device=device)
    labels = torch.arange(args.batch_size, device=device) % 10
    indices = torch.arange(args.batch_size, device=device)
    errors: list[float] = []

    @torch.no_grad()
    def plain() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            backbone.model(pixel_values=pixels)
        torch.cuda.synchronize()

    def harness() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            decomposition = backbone(pixels)
            feed(probes.values(), decomposition, pixels, labels, indices)
        errors.append(float(decomposition.pooler_error))
        torch.cuda.synchronize()

    times = paired_times({"plain": plain, "harness": harness}, args.repeats)
    state_dtypes = {
        str(state.dtype)
        for probe in probes.values()
        for metric in probe.modules()
        for name in getattr(metric, "_defaults", {})
        if isinstance(state := getattr(metric, name), torch.Tensor) and state.is_floating_point()
    }
    plain_s, harness_s = statistics.median(times["plain"]), statistics.median(times["harness"])
    print(f"{torch.cuda.get_device_name()} {args.backbone} bf16 {args.resolution}px batch {args.batch_size}:")
    ratio = median_ratio(times["harness"], times["plain"])
    plain_rate, harness_rate = args.batch_size / plain_s, args.batch_size / harness_s
    print(f"  plain {plain_rate:.1f} images/s, harness {harness_rate:.1f} images/s")
    print(f"  harness/plain time {ratio:.3f}")
    print(f"  max |output/full - pooler_output| {max(errors):.2e}; accumulator dtypes {sorted(state_dtypes)}")


if __name__ == "__main__":
    main()
