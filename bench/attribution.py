"""What each attribution map costs (issue 22): wall time per batch against the plain decomposing pass,
same process, alternating rounds, and the memory each one holds (computed from the shapes: what it
keeps beside the model's own pass).

    PYTHONPATH=. python bench/attribution.py [--backbone random:dinov2_vits14_reg] [--resolution 112]
                                              [--batch-size 4] [--repeats 2]

Rows: the decomposing pass (baseline; its [CLS] attention, value-weighted and contribution maps
come from it); rollout (every block's full attention recomputed from its queries and keys: one more
tokens x tokens product per block); Chefer (one gradient pass), also with a head's class as its
target; integrated gradients (`INTEGRATION_STEPS` gradient passes); the scores of one map
(deletion and insertion, its own and its reversed order x 4 fractions each, at reduced length), of
one head's map (its own order only) and of the random control (run once for every map); the six
maps' scores as stop 26 ran them (each map its own random control) and as now (one shared control);
everything the attribution probe runs per batch, with the class scores of a k-NN bank (1000 random
rows, 100 classes).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_ratio, paired_times
from harness import load_backbone
from harness.attribution import (
    INTEGRATION_STEPS,
    MAPS,
    SCORE_FRACTIONS,
    RolloutHooks,
    chefer_map,
    integrated_gradients_map,
    perturbation_curves,
    scored_maps,
)
from probes.metrics.knn import KnnScores


def held_mib(batch: int, tokens: int, hidden: int, heads: int, blocks: int, steps: int) -> dict[str, float]:
    """What each map keeps beside the model's pass, float32, MiB: the rollout its (batch, tokens,
    tokens) product and one block's attention (batch, heads, tokens, tokens); Chefer every block's
    queries, keys, values and attention output for the backward (4 x blocks x batch x tokens x
    hidden) and one block's attention; integrated gradients captum's internal batch of steps x batch
    images' activations (as one forward and backward of that batch); the scores one block's attention
    at orders x batch (the orders run together)."""
    attention = batch * heads * tokens * tokens
    values = {
        "decomposing pass": 0.0,
        "rollout": batch * tokens * tokens + attention,
        "chefer": 4 * blocks * batch * tokens * hidden + attention,
        "chefer, a head's class": 4 * blocks * batch * tokens * hidden + attention,
        "integrated gradients": steps * batch * tokens * hidden * 4 * blocks,
        "scores of one map": 2 * attention,
        "scores of one head's map": attention,
        "random control (shared)": attention,
        "six maps, own controls (stop 26)": 3 * attention,
        "six maps, shared control": 2 * attention,
    }
    values["attribution probe, maps + heads, k-NN classes"] = max(values.values())
    return {name: 4 * count / 2**20 for name, count in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="random:dinov2_vits14_reg")
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_backbone(args.backbone)
    pixels = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    indices = torch.arange(args.batch_size)
    layout = backbone.layout_for(pixels)

    def rollout() -> None:
        recorder = RolloutHooks(backbone, layout)
        with recorder.attach():
            backbone.capture(pixels)

    grid = (args.batch_size, layout.grid_height, layout.grid_width)
    one_map = {"attribution/attention": torch.rand(grid)}
    six_maps = {f"attribution/{name}": torch.rand(grid) for name in MAPS}
    one_head = {"attribution/attention_heads": torch.rand(args.batch_size, 1, *grid[1:])}
    hidden = backbone.info.hidden_size
    head = torch.nn.Linear(hidden, 100).requires_grad_(False)
    bank = KnnScores(torch.randn(1000, hidden), torch.arange(1000) % 100, 100)
    pooled = backbone(pixels)["output/full"]

    def passes(ranking: torch.Tensor, orders: tuple[str, ...]) -> object:
        run = functools.partial(
            backbone.deletion_passes, pixels, ranking, pooled, layout, indices, orders=orders
        )
        return [run(fractions=SCORE_FRACTIONS, insertion=insertion) for insertion in (False, True)]

    def own_controls() -> None:  # stop 26: each map its three orders, the random one again each time
        for ranking in six_maps.values():
            passes(ranking, ("top", "random", "bottom"))

    functions: dict[str, Callable[[], object]] = {
        "decomposing pass": lambda: backbone(pixels),
        "rollout": rollout,
        "chefer": lambda: chefer_map(backbone, pixels, layout),
        "chefer, a head's class": lambda: chefer_map(backbone, pixels, layout, head),
        "integrated gradients": lambda: integrated_gradients_map(backbone, pixels, layout),
        "scores of one map": lambda: passes(one_map["attribution/attention"], ("top", "bottom")),
        "scores of one head's map": lambda: passes(one_head["attribution/attention_heads"][:, 0], ("top",)),
        "random control (shared)": lambda: passes(one_map["attribution/attention"], ("random",)),
        "six maps, own controls (stop 26)": own_controls,
        "six maps, shared control": lambda: perturbation_curves(backbone, pixels, six_maps, indices),
        "attribution probe, maps + heads, k-NN classes": lambda: scored_maps(
            backbone, pixels, indices, class_scores=bank
        ),
    }
    with torch.inference_mode():
        times = paired_times(functions, args.repeats)
    info = backbone.info
    memory = held_mib(args.batch_size, layout.num_tokens, info.hidden_size, info.num_heads, info.num_layers,
                      INTEGRATION_STEPS)  # fmt: skip
    shape = f"{backbone.info.num_layers} blocks, {args.resolution} px, batch {args.batch_size}"
    print(f"{args.backbone}, {shape}, {args.repeats} rounds")
    print("| pass | s / batch | x decomposing pass | held MiB |\n|---|---|---|---|")
    for name, values in times.items():
        ratio = median_ratio(values, times["decomposing pass"])
        print(f"| {name} | {statistics.median(values):.3f} | {ratio:.2f} | {memory[name]:.0f} |")


if __name__ == "__main__":
    main()
