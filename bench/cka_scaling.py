"""Streaming linear CKA against the Gram-matrix formula as the number of images grows.

    python bench/cka_scaling.py [--dims 384] [--sizes 1000,2000,4000,8000]

For each N: time and peak resident memory (each case in a fresh process) of
- streaming: `LinearCKA` fed in batches of 256 (float32 features, float64 states);
- gram: the textbook formula on centred N x N Gram matrices, float64 (numpy);
and the absolute difference of the two values. Then the state size of `LinearCKA` for the
DINOv2 widths, which does not depend on N.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes.metrics import LinearCKA


def features(n: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dims)).astype(np.float32) + 3.0
    y = np.tanh(x @ rng.normal(size=(dims, dims)).astype(np.float32) / np.sqrt(dims)) + 0.1
    return x, y.astype(np.float32)


def streaming(n: int, dims: int) -> float:
    x, y = features(n, dims)
    metric = LinearCKA(dims)
    for start in range(0, n, 256):
        metric.update(torch.from_numpy(x[start : start + 256]), torch.from_numpy(y[start : start + 256]))
    return metric.compute().item()


def gram(n: int, dims: int) -> float:
    x, y = (a.astype(np.float64) for a in features(n, dims))
    centring = np.eye(n) - 1.0 / n
    gram_x, gram_y = centring @ (x @ x.T) @ centring, centring @ (y @ y.T) @ centring
    return float(np.sum(gram_x * gram_y) / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def _measure(kind: str, n: int, dims: int, queue: multiprocessing.Queue) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    value = streaming(n, dims) if kind == "streaming" else gram(n, dims)
    seconds = time.perf_counter() - started
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    queue.put((value, seconds, peak_mib))


def measure(kind: str, n: int, dims: int) -> tuple[float, float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(kind, n, dims, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--sizes", default="1000,2000,4000,8000")
    args = parser.parse_args()
    for n in (int(v) for v in args.sizes.split(",")):
        s_value, s_seconds, s_mib = measure("streaming", n, args.dims)
        g_value, g_seconds, g_mib = measure("gram", n, args.dims)
        print(
            f"N={n} D={args.dims}: streaming {s_seconds:.2f} s, +{s_mib:.0f} MiB peak; "
            f"gram {g_seconds:.2f} s, +{g_mib:.0f} MiB peak; |difference| {abs(s_value - g_value):.2e}",
            flush=True,
        )
    for dims in (384, 768, 1024, 1536):
        metric = LinearCKA(dims)
        size = sum(getattr(metric, name).numel() * 8 for name in metric._defaults)
        print(f"LinearCKA state for D={dims}: {size / 2**20:.1f} MiB, whatever N")


if __name__ == "__main__":
    main()
