"""What the heads probe costs against the decomposing pass it rides on, same process.

    python bench/heads.py [--backbones random:dinov2_vits14_reg] [--resolution 224] [--batch-size 8]
                          [--repeats 5]

For each backbone, on the same seeded batch, timed in alternating rounds (`paired_times`):
- call: `backbone(pixels)`, the model's pass and the last block's decomposition;
- heads_last: the same call with `HeadTerms()` (per-head terms of the last block) + the heads probe's
  update: what `--probe heads` adds;
- heads_all: `HeadTerms(every block)` + the probe's update at every block: `--probe heads --layers all`;
- depth_all: `Depth(every block)` alone, the per-layer decomposition it shares its taps with.
Prints median seconds per batch and the median per-round ratios to `call`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import against_call, main_per_backbone, paired_times
from harness import load_backbone
from harness.extras import Depth
from harness.tokens import present_groups
from probes.heads import HeadsProbe


def bench_one(name: str, resolution: int, batch_size: int, repeats: int) -> str:
    backbone = load_backbone(name)
    info = backbone.info
    pixels = torch.randn(batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    labels, indices = torch.full((batch_size,), -1), torch.arange(batch_size)
    groups = present_groups(info.num_registers, info.num_distillation)
    every = tuple(range(1, info.num_layers + 1))
    last_probe = HeadsProbe((info.num_layers,), info.num_layers, info.num_heads, groups)
    every_probe = HeadsProbe(every, info.num_layers, info.num_heads, groups)

    @torch.no_grad()
    def call() -> object:
        return backbone(pixels)

    @torch.no_grad()
    def heads_last() -> object:
        decomposition = backbone(pixels, extras=last_probe.extras())
        last_probe.update(decomposition, labels, indices)
        return decomposition

    @torch.no_grad()
    def heads_all() -> object:
        decomposition = backbone(pixels, extras=every_probe.extras())
        every_probe.update(decomposition, labels, indices)
        return decomposition

    @torch.no_grad()
    def depth_all() -> object:
        return backbone(pixels, extras=[Depth(every)])

    times = paired_times(
        {"call": call, "heads_last": heads_last, "heads_all": heads_all, "depth_all": depth_all}, repeats
    )
    return against_call(f"{name} {resolution}px batch {batch_size}", times)


def main() -> None:
    main_per_backbone(__doc__, "random:dinov2_vits14_reg", bench_one)


if __name__ == "__main__":
    main()
