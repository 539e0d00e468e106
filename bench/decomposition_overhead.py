"""Time of the decomposing backbone against a plain HF forward of the same model, same process.

    python bench/decomposition_overhead.py [--backbone random:dinov2_vits14] [--resolution 224]
                                          [--batch-size 16] [--repeats 15]

Prints the median seconds per batch of each and their ratio (decomposition / plain), timed in
alternation after a warm-up on the same inputs, and the time of the [CLS]-row recomputation
alone (`decompose_last_block` on the captured last-block inputs), which is what the harness adds
to the forward pass; on 2 CPU cores the whole-pass ratio is only good to about +-5%.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from harness import load_backbone
from harness.decomposition import decompose_last_block
from harness.tokens import TokenLayout


def median_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, run in alternation `repeats` times after one warm-up."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--backbone", default="random:dinov2_vits14")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    backbone = load_backbone(args.backbone)
    pixels = torch.randn(args.batch_size, 3, args.resolution, args.resolution)

    @torch.no_grad()
    def plain() -> object:
        return backbone.model(pixel_values=pixels).pooler_output

    def decomposed() -> object:
        return backbone(pixels)

    with torch.no_grad():
        backbone._run_model(pixels)
    block_input = backbone._captured.pop("block_input")
    keys, values = backbone._captured.pop("keys"), backbone._captured.pop("values")
    backbone._cls_rows.clear()
    info = backbone.info
    layout = TokenLayout.for_image(args.resolution, args.resolution, info.patch_size, info.num_registers)

    def recompute_cls_row() -> object:
        return decompose_last_block(
            backbone.last_block, backbone.model.layernorm, block_input, keys, values, layout
        )

    seconds = median_seconds(
        {"plain": plain, "decomposition": decomposed, "cls_row": recompute_cls_row}, args.repeats
    )
    print(
        f"{args.backbone} {args.resolution}px batch {args.batch_size}, {torch.get_num_threads()} threads: "
        f"plain {seconds['plain']:.3f} s/batch, decomposition {seconds['decomposition']:.3f} s/batch, "
        f"ratio {seconds['decomposition'] / seconds['plain']:.3f}; "
        f"[CLS]-row recomputation alone {seconds['cls_row'] * 1e3:.1f} ms "
        f"({seconds['cls_row'] / seconds['plain']:.2%} of the plain forward)"
    )


if __name__ == "__main__":
    main()
