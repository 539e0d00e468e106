"""What each probe's per-batch update costs next to the decomposing forward pass, same process.

    python bench/probe_updates.py [--backbone random:dinov2_vits14] [--resolution 224]
                                  [--batch-size 16] [--repeats 10]

One decomposition of a random batch, then each probe (every name of PROBES) updated `--repeats`
times with fresh dataset indices; prints the median milliseconds per batch and the share of one
forward pass (median of `--repeats` forwards timed in alternation with the updates). Then the
maps probe's gallery both ways on the same batch: every image converted to uint8 before the
update (how it first worked) against only the images entering the gallery (how it works); and
the CKA update both ways: one LinearCKA per pair against one SharedReferenceCKA per readout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import paired_times, probed_batch
from datamodules.transforms import to_uint8_image
from harness.decomposition import ATTENTION_MAP, PIXELS, variant_names
from probes.metrics import Faithfulness, LinearCKA, SharedReferenceCKA


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="random:dinov2_vits14")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    batch = probed_batch(args.backbone, args.resolution, args.batch_size)
    backbone, pixels, inputs, labels, probes = (
        batch.backbone,
        batch.pixels,
        batch.inputs,
        batch.labels,
        batch.probes,
    )
    batches = iter(range(1, 10**9))

    def update(probe_name: str) -> None:
        indices = torch.arange(args.batch_size) + args.batch_size * next(batches)
        probes[probe_name].update(inputs, labels, indices)

    functions = {"forward": torch.no_grad()(lambda: backbone(pixels))}
    functions |= {name: (lambda name=name: update(name)) for name in probes}
    times = paired_times(functions, args.repeats)
    forward = statistics.median(times["forward"])
    setting = (
        f"{torch.get_num_threads()} threads; {args.backbone} {args.resolution}px batch {args.batch_size}"
    )
    print(f"torch {torch.__version__}, {setting}: decomposing forward {forward * 1000:.0f} ms")
    for name in probes:
        median = statistics.median(times[name])
        print(f"  {name:>12}: {median * 1000:8.2f} ms per batch ({median / forward:.2%} of the forward)")
    gallery_conversion(inputs, args.batch_size, args.repeats)
    cka_sharing(inputs, backbone.info.num_registers, args.repeats)


def cka_sharing(inputs: dict[str, torch.Tensor], num_registers: int, repeats: int) -> None:
    """The CKA update as one LinearCKA per (full, variant) pair (how it first worked) against one
    SharedReferenceCKA per readout (how it works), on the same batch."""
    pairs = [v for v in variant_names(num_registers) if not v.endswith("/full")]
    dims = inputs[pairs[0]].shape[1]
    per_pair = {variant: LinearCKA(dims) for variant in pairs}
    readouts = {
        readout: [v for v in pairs if v.startswith(f"{readout}/")] for readout in ("attention", "output")
    }
    shared = {readout: SharedReferenceCKA(dims, len(compared)) for readout, compared in readouts.items()}

    def update_per_pair() -> None:
        for variant, metric in per_pair.items():
            metric.update(inputs[variant.split("/")[0] + "/full"], inputs[variant])

    def update_shared() -> None:
        for readout, compared in readouts.items():
            shared[readout].update(inputs[f"{readout}/full"], torch.stack([inputs[v] for v in compared]))

    times = paired_times({"per_pair": update_per_pair, "shared": update_shared}, repeats)
    before, after = statistics.median(times["per_pair"]), statistics.median(times["shared"])
    ratio = statistics.median(a / b for a, b in zip(times["shared"], times["per_pair"], strict=True))
    print(f"cka: one LinearCKA per pair ({len(pairs)}) {before * 1000:.2f} ms, one SharedReferenceCKA per "
          f"readout {after * 1000:.2f} ms per batch (ratio {ratio:.3f})")  # fmt: skip


def gallery_conversion(inputs: dict[str, torch.Tensor], batch_size: int, repeats: int) -> None:
    """The maps gallery converting every image of a batch to uint8, or only those entering it."""
    every, entering = Faithfulness(), Faithfulness(to_image=to_uint8_image)
    vectors = [inputs[f"{readout}/{v}"] for readout in ("attention", "output") for v in ("full", "patch")]
    batches = iter(range(1, 10**9))

    def convert_every() -> None:
        indices = torch.arange(batch_size) + batch_size * next(batches)
        every.update(*vectors, inputs[ATTENTION_MAP], to_uint8_image(inputs[PIXELS]), indices)

    def convert_entering() -> None:
        indices = torch.arange(batch_size) + batch_size * next(batches)
        entering.update(*vectors, inputs[ATTENTION_MAP], inputs[PIXELS], indices)

    times = paired_times({"every": convert_every, "entering": convert_entering}, repeats)
    before, after = statistics.median(times["every"]), statistics.median(times["entering"])
    ratio = statistics.median(a / b for a, b in zip(times["entering"], times["every"], strict=True))
    print(f"maps gallery: every image to uint8 {before * 1000:.2f} ms, entering images only "
          f"{after * 1000:.2f} ms per batch (ratio {ratio:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
