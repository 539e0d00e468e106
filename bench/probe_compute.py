"""Probe costs at the ImageNet-val scale: 50,000 images x 1536 dims (ViT-g), 1000 classes, synthetic.

    python bench/probe_compute.py [--images 50000] [--dims 1536] [--classes 1000] [--variants 5]

Feeds each probe's metric in batches of 1000 and times update (all batches) and compute
separately; the target is compute < 60 s on this machine's CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes.metrics import LinearCKA, OneShotAccuracy, RidgeAccuracy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--variants", type=int, default=5, help="output variants scored by oneshot / linear")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(args.images) % args.classes
    centres = torch.randn(args.classes, args.dims, generator=generator)
    full = centres[labels] + 2.0 * torch.randn(args.images, args.dims, generator=generator)
    variants = {f"output/v{i}": full + (i + 1) * torch.randn(args.images, args.dims, generator=generator)
                for i in range(args.variants)}  # fmt: skip
    variants["output/full"] = full
    indices = torch.arange(args.images)
    metrics = {
        "cka (one pair)": LinearCKA(args.dims),
        "cka_debiased (one pair)": LinearCKA(args.dims, debiased=True),
        "oneshot": OneShotAccuracy(tuple(variants), episodes=10),
        "linear (ridge)": RidgeAccuracy(tuple(variants), args.dims, args.classes),
    }
    print(f"{args.images} images x {args.dims} dims, {args.classes} classes, {len(variants)} variants, "
          f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip
    for name, metric in metrics.items():
        started = time.perf_counter()
        for start in range(0, args.images, 1000):
            part = slice(start, start + 1000)
            batch = {key: value[part] for key, value in variants.items()}
            if isinstance(metric, LinearCKA):
                metric.update(full[part], batch["output/v0"])
            else:
                metric.update(full[part], batch, labels[part], indices[part])
        updated = time.perf_counter()
        metric.compute()
        finished = time.perf_counter()
        print(f"{name}: update {updated - started:.1f} s, compute {finished - updated:.1f} s", flush=True)


if __name__ == "__main__":
    main()
