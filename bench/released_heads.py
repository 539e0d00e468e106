"""What DINOv2's released heads add to the decomposing call, same process.

    python bench/released_heads.py [--backbones random:dinov2_vits14_reg] [--resolution 224]
                                   [--batch-size 8] [--repeats 5]

For each backbone, on the same seeded batch, timed in alternating rounds (`paired_times`):
- call: `backbone(pixels)` as it now runs, with the `linear_input/*` entries (the final norm of the last
  block's every token and of the last four blocks' [CLS] rows, the patch mean): what every call pays;
- without_linear_input: the same call with `DecomposingBackbone.linear_input` returning nothing (the
  call as it was before the released heads), the baseline of that cost;
- released_head: the call + the linear probe's update with a random released four-block head on
  every output variant, and its `_clsonly` reading.
Prints median seconds per batch and the median per-round ratios to `call`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import against_call, main_per_backbone, paired_times
from harness import DecomposingBackbone, LinearHead, load_backbone
from probes.linear import LinearHeadProbe


def bench_one(name: str, resolution: int, batch_size: int, repeats: int) -> str:
    backbone = load_backbone(name)
    info = backbone.info
    pixels = torch.randn(batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    labels, indices = torch.arange(batch_size) % 1000, torch.arange(batch_size)
    generator = torch.Generator().manual_seed(1)
    head = LinearHead.of_released(
        torch.randn(1000, 5 * info.hidden_size, generator=generator), torch.zeros(1000)
    )
    variants = tuple(v for v in info.variant_names() if v.startswith("output/"))
    probe = LinearHeadProbe(head, variants, info.hidden_size)

    def without() -> object:
        original = DecomposingBackbone.linear_input
        DecomposingBackbone.linear_input = lambda self, capture: {}  # type: ignore[method-assign]
        try:
            return backbone(pixels)
        finally:
            DecomposingBackbone.linear_input = original  # type: ignore[method-assign]

    def released() -> object:
        probe.update(backbone(pixels), labels, indices)
        return probe

    times = paired_times(
        {"call": lambda: backbone(pixels), "without_linear_input": without, "released_head": released},
        repeats,
    )
    return against_call(f"{name} {resolution}px batch {batch_size}", times)


if __name__ == "__main__":
    main_per_backbone(__doc__, "random:dinov2_vits14_reg", bench_one)
