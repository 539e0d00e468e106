"""What each attribution map costs (issue 22): wall time of a whole backbone call per batch against the
plain decomposing call, same process, alternating rounds, and the memory each map holds (computed
from the shapes: what it keeps beside the model's own pass).

    PYTHONPATH=. python bench/attribution.py [--backbone random:dinov2_vits14_reg] [--resolution 112]
                                              [--batch-size 4] [--repeats 2]

Rows: the decomposing call (baseline); each registered map alone, without scores
(`AttributionMaps((name,), scored=False)`: every map of `harness.extras.attribution.MAPS`, a new one
included without editing this file; Chefer's also with a head's class as its target); one map
scored (deletion and insertion in its own and its reversed order, and the shared random control,
x 4 fractions each, at reduced length); one map and one head's scored; every map scored (the
attribution probe's default); everything the probe runs with every head's map and the class scores
of a k-NN bank (1000 random rows, 100 classes).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_ratio, paired_times, seeded_batch
from harness.extras import AttributionMaps, map_names
from harness.extras.attribution.integrated_gradients import INTEGRATION_STEPS
from probes.metrics.knn import KnnScores

GRADIENT_MAPS = ("chefer", "legrad")
"""Maps that read the call's one gradient pass (every block's queries, keys, values and attention
output kept for the backward)."""


def held_mib(name: str, batch: int, tokens: int, hidden: int, heads: int, blocks: int) -> float:
    """What a row keeps beside the model's pass, float32, MiB: the rollout its (batch, tokens, tokens)
    product and one block's attention; a gradient map every block's queries, keys, values and
    attention output (4 x blocks x batch x tokens x hidden) and one block's attention; AttnLRP every
    block's attention and its re-run's graph (about 10 states of the hidden width per block, the MLP's
    4x wide ones counted as 4); integrated
    gradients captum's batch of steps x images through the model; the scores one block's attention at
    orders x batch (the orders run together)."""
    attention = batch * heads * tokens * tokens
    if name.startswith("rollout"):
        count = batch * tokens * tokens + attention
    elif name.startswith(GRADIENT_MAPS):
        count = 4 * blocks * batch * tokens * hidden + attention
    elif name.startswith("attnlrp"):  # every block's attention held, and its graph: ~10 states of hidden
        count = blocks * (attention + 10 * batch * tokens * hidden)
    elif name.startswith("integrated_gradients"):
        count = INTEGRATION_STEPS * batch * tokens * hidden * 4 * blocks
    elif name.startswith("every map"):
        count = INTEGRATION_STEPS * batch * tokens * hidden * 4 * blocks  # its largest: the gradients
    elif "scored" in name:
        count = 2 * attention
    else:
        count = 0
    return 4 * count / 2**20


def main() -> None:
    batch = seeded_batch(__doc__)
    args, backbone, pixels, indices = batch.arguments, batch.backbone, batch.pixels, batch.indices
    info = backbone.info
    layout = backbone.layout_for(pixels)
    head = torch.nn.Linear(info.hidden_size, 100).requires_grad_(False)
    bank = KnnScores(torch.randn(1000, info.hidden_size), torch.arange(1000) % 100, 100)
    every_head = tuple(range(1, info.num_heads + 1))

    def call(extra: AttributionMaps) -> Callable[[], object]:
        return lambda: backbone(pixels, indices, extras=[extra])

    functions: dict[str, Callable[[], object]] = {"decomposing call": lambda: backbone(pixels, indices)}
    for name in map_names():
        functions[f"{name}, map alone"] = call(AttributionMaps((name,), scored=False))
    functions["chefer, a head's class, map alone"] = call(
        AttributionMaps(("chefer",), class_scores=head, scored=False)
    )
    functions["attention, scored"] = call(AttributionMaps(("attention",)))
    functions["attention and one head's, scored"] = call(AttributionMaps(("attention",), heads=(1,)))
    functions["every map, scored (the probe's default)"] = call(AttributionMaps())
    functions["every map and every head's, scored, k-NN classes"] = call(
        AttributionMaps(heads=every_head, class_scores=bank)
    )
    with torch.inference_mode():
        times = paired_times(functions, args.repeats)
    shape = f"{info.num_layers} blocks, {args.resolution} px, batch {args.batch_size}"
    print(f"{args.backbone}, {shape}, {args.repeats} rounds")
    print("| call | s / batch | x decomposing call | held MiB |\n|---|---|---|---|")
    for name, values in times.items():
        ratio = median_ratio(values, times["decomposing call"])
        held = held_mib(
            name, args.batch_size, layout.num_tokens, info.hidden_size, info.num_heads, info.num_layers
        )
        print(f"| {name} | {statistics.median(values):.3f} | {ratio:.2f} | {held:.0f} |")


if __name__ == "__main__":
    main()
