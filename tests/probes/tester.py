"""One tester for every metric (in the spirit of torchmetrics' MetricTester).

For a metric factory, a list of `update` argument tuples and an independently computed
reference, `check_metric` proves:

- fed batch by batch, `compute()` equals the reference;
- `reset()` forgets everything (the same batches again give the same result);
- `clone()` and pickling keep the state;
- on 2 processes (torch.distributed, gloo on CPU), with the batches dealt round-robin so the
  ranks see different numbers of samples, every rank's `compute()` equals the reference.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import Metric

WORLD_SIZE = 2


def assert_same(got: Any, expected: Any, atol: float, where: str = "result") -> None:
    """Recursive comparison of tensors / numbers / dicts / tuples, NaN equal to NaN."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), f"{where}: keys {sorted(got)} != {sorted(expected)}"
        for key in expected:
            assert_same(got[key], expected[key], atol, f"{where}[{key!r}]")
    elif isinstance(expected, (tuple, list)):
        assert len(got) == len(expected), f"{where}: length {len(got)} != {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, atol, f"{where}[{i}]")
    else:
        got_tensor = torch.as_tensor(got, dtype=torch.float64).cpu()
        expected_tensor = torch.as_tensor(expected, dtype=torch.float64).cpu()
        torch.testing.assert_close(got_tensor, expected_tensor, atol=atol, rtol=0, equal_nan=True, msg=where)


def _feed(metric: Metric, batches: Sequence[tuple[Any, ...]]) -> None:
    for arguments in batches:
        metric.update(*arguments)


def _distributed_worker(
    rank: int, make_metric: Callable[[], Metric], batches: Sequence[tuple[Any, ...]], folder: str
) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD_SIZE
    )
    try:
        metric = make_metric()
        _feed(metric, batches[rank::WORLD_SIZE])
        torch.save(metric.compute(), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def check_metric(
    make_metric: Callable[[], Metric],
    batches: Sequence[tuple[Any, ...]],
    reference: Any,
    atol: float = 1e-8,
    distributed: bool = True,
) -> None:
    """Assert that `make_metric()` fed `batches` computes `reference` in every setting above.

    `make_metric` and the batches must be picklable (use functools.partial of a class).
    """
    metric = make_metric()
    _feed(metric, batches)
    assert_same(metric.compute(), reference, atol, "batch by batch")

    clone = metric.clone()
    assert_same(clone.compute(), reference, atol, "clone")
    restored = pickle.loads(pickle.dumps(metric))
    assert_same(restored.compute(), reference, atol, "pickled")

    metric.reset()
    _feed(metric, batches)
    assert_same(metric.compute(), reference, atol, "after reset")

    if distributed:
        with tempfile.TemporaryDirectory() as folder:
            mp.start_processes(
                _distributed_worker,
                args=(make_metric, list(batches), folder),
                nprocs=WORLD_SIZE,
                join=True,
                start_method="spawn",
            )
            for rank in range(WORLD_SIZE):
                result = torch.load(Path(folder) / f"rank{rank}.pt", weights_only=False)
                assert_same(result, reference, atol, f"rank {rank} of {WORLD_SIZE}")
