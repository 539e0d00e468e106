"""What Chefer et al.'s pixel test costs (`--perturbation pixels`, issue 33): wall time of a whole
backbone call per batch against the plain decomposing call, same process, alternating rounds.

    PYTHONPATH=. python bench/pixel_perturbation.py [--backbone random:dinov2_vits14_reg]
                                                    [--resolution 112] [--batch-size 4] [--repeats 2]

Rows: the decomposing call (baseline); the attention map alone (`scored=False`); scored by the
tokens (deletion and insertion, 4 fractions, top / bottom / the random control, at reduced length);
scored by the pixels (9 steps x positive / negative, and the random control's 9: full-length passes
of 2 x batch and of batch images); both. Per map the pixel test adds 9 passes of twice the batch
(and the control, once for every map, 9 of the batch): about 18 full forward passes per map.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_ratio, paired_times, seeded_batch
from harness.extras import AttributionMaps


def main() -> None:
    batch = seeded_batch(__doc__)
    args, backbone, pixels, indices = batch.arguments, batch.backbone, batch.pixels, batch.indices
    info = backbone.info
    head = torch.nn.Linear(info.hidden_size, 1000).requires_grad_(False)

    def call(maps: tuple[str, ...] = ("attention",), **settings: object) -> Callable[[], object]:
        extra = AttributionMaps(maps, class_scores=head, **settings)  # type: ignore[arg-type]
        return lambda: backbone(pixels, indices, extras=[extra])

    functions: dict[str, Callable[[], object]] = {
        "decomposing call": lambda: backbone(pixels, indices),
        "attention, map alone": call(scored=False),
        "attention, tokens (the default)": call(perturbations=("tokens",)),
        "attention, pixels": call(perturbations=("pixels",)),
        "attention, tokens and pixels": call(perturbations=("tokens", "pixels")),
        "attention and rollout, pixels": call(("attention", "rollout"), perturbations=("pixels",)),
    }
    with torch.inference_mode():
        times = paired_times(functions, args.repeats)
    shape = f"{info.num_layers} blocks, {args.resolution} px, batch {args.batch_size}"
    print(f"{args.backbone}, {shape}, {args.repeats} rounds, {torch.get_num_threads()} threads")
    print("| call | s / batch | x decomposing call |\n|---|---|---|")
    for name, values in times.items():
        ratio = median_ratio(values, times["decomposing call"])
        print(f"| {name} | {statistics.median(values):.3f} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
