"""Timing helpers shared by the benchmarks: paired, alternating, median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired_times(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each function over `repeats` rounds, after one warm-up round.

    Each round runs every function once, in an order rotated from round to round, so slow drift
    of the machine (other load, clocks) affects all of them alike; ratios are taken per round.
    """
    names = list(functions)
    for name in names:
        functions[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - started)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
