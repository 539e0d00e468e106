"""What the register-neuron search and test-time registers cost against the decomposing pass, same
process.

    python bench/register_neurons.py [--backbones random:dinov2_vits14] [--resolution 224]
                                     [--batch-size 8] [--repeats 5]

For each backbone, on the same seeded batch, timed in alternating rounds (`paired_times`):
- call: `backbone(pixels)`, the model's pass and the last block's decomposition;
- search: the same call with `RegisterNeurons` (outliers at the second-to-last block, neurons of
  blocks up to 3/4 of the depth; one more pass) + `NeuronScores.update`: what `--probe
  register_neurons` adds per batch, and each batch of the search `--test-time-registers` runs first;
- test_time: the call on the model with one test-time register fed by about 7 neurons of each
  scored block (one more token, a hook per block with neurons, those blocks run eagerly).
Prints median seconds per batch and the median per-round ratios to `call`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import against_call, main_per_backbone, paired_times
from harness import load_backbone
from harness.extras import NeuronScores, RegisterNeurons
from harness.test_time_registers import with_test_time_registers_backbone


def bench_one(name: str, resolution: int, batch_size: int, repeats: int) -> str:
    backbone = load_backbone(name)
    info = backbone.info
    pixels = torch.randn(batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    search = RegisterNeurons.for_model(info, threshold=1.0)  # every token an outlier: the most work
    scores = NeuronScores(search.max_block, info.mlp_size)
    blocks = list(range(1, search.max_block + 1))
    neurons = {block: tuple(range(i, info.mlp_size, info.mlp_size // 7)) for i, block in enumerate(blocks)}
    moved = with_test_time_registers_backbone(backbone, neurons, 1)

    @torch.no_grad()
    def call() -> object:
        return backbone(pixels)

    @torch.no_grad()
    def searching() -> object:
        found = backbone(pixels, extras=[search])
        scores.update(found["register_neurons/scores"], found["register_neurons/outliers"])
        return found

    @torch.no_grad()
    def test_time() -> object:
        return moved(pixels)

    times = paired_times({"call": call, "search": searching, "test_time": test_time}, repeats)
    return against_call(f"{name} {resolution}px batch {batch_size}", times)


def main() -> None:
    main_per_backbone(__doc__, "random:dinov2_vits14", bench_one)


if __name__ == "__main__":
    main()
