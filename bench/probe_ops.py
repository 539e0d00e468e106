"""How many aten operators each probe's per-batch update launches: the CPU proxy of GPU kernel count.

    python bench/probe_ops.py [--backbone random:dinov2_vits14_reg] [--resolution 224] [--batch-size 16]

On a GPU every operator is at least one kernel launch, and launches (plus host-device syncs) are what
stall a fast backbone's stream; on a CPU the count is the measurable stand-in. One decomposition of
a random labelled batch, then each probe (every name of PROBES) updated once as a warm-up and once
under torch.profiler; prints the aten operators per update (all, and the distinct names), the
operators that copy to the host on this CPU run (`aten::item`, `aten::_local_scalar_dense`), and
whether the update reads anything back from a device: run again on the meta device, where every
data-dependent operation raises (a check that only runs on CPU tensors is not one).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import probed_batch

HOST_COPIES = ("aten::item", "aten::_local_scalar_dense")
META = torch.device("meta")


def aten_ops(function: object) -> Counter[str]:
    """aten operators (with repeats) that one call of `function` runs."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        function()  # type: ignore[operator]
    return Counter(event.name for event in profiler.events() if event.name.startswith("aten::"))


def reads_back(probe: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
               indices: torch.Tensor) -> str:  # fmt: skip
    """ "yes (where)" when an update on meta tensors needs a value (a sync on a GPU), else "no"."""
    try:
        probe.update(inputs, labels, indices)  # type: ignore[operator]
    except (RuntimeError, NotImplementedError) as error:
        return f"yes ({type(error).__name__})"
    return "no"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="random:dinov2_vits14_reg")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    batch = probed_batch(args.backbone, args.resolution, args.batch_size)
    inputs, labels = batch.inputs, batch.labels
    print(f"torch {torch.__version__}; {args.backbone} {args.resolution}px batch {args.batch_size}")
    print(f"{'probe':>12} {'aten ops':>9} {'distinct':>9} {'host copies':>12} {'device reads':>13}")
    on_meta = {name: tensor.to(META) for name, tensor in inputs.items()}
    total = 0
    for position, (name, probe) in enumerate(batch.probes.items()):
        indices = torch.arange(args.batch_size) + 2 * args.batch_size * position
        probe.update(inputs, labels, indices)  # warm-up: first-batch work (shifts, buffers)
        ops = aten_ops(
            lambda probe=probe, indices=indices: probe.update(inputs, labels, indices + args.batch_size)
        )
        copies = sum(ops[name] for name in HOST_COPIES)
        total += sum(ops.values())
        reads = reads_back(probe.to(META), on_meta, labels.to(META), indices.to(META))
        print(f"{name:>12} {sum(ops.values()):>9} {len(ops):>9} {copies:>12} {reads:>13}")
    print(f"{'all':>12} {total:>9}")


if __name__ == "__main__":
    main()
