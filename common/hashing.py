"""Seeded per-sample random numbers that depend only on (seed, key): no generator state, no batch
order, no rank, computed on the keys' device (layer 0: used by the model and the metrics alike)."""

from __future__ import annotations

from torch import Tensor

_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
"""splitmix64's constants."""


def _as_int64(value: int) -> int:
    """The low 64 bits of `value` as a signed 64-bit integer (what an int64 tensor holds)."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(state: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 tensors read as unsigned 64-bit integers."""
    return (state >> bits) & ((1 << (64 - bits)) - 1)


def uniform_hash(keys: Tensor, seed: int) -> Tensor:
    """A uniform number in [0, 1) per integer key: splitmix64 of key + seed * golden ratio (+ one
    golden step), its top 53 bits, float64. Computed in int64 arithmetic (which wraps like unsigned
    64-bit arithmetic), so nothing is read back from an accelerator.

    >>> import torch
    >>> [round(x, 4) for x in uniform_hash(torch.arange(3), seed=0).tolist()]
    [0.8833, 0.5666, 0.5912]
    """
    state = keys.long() + _as_int64(seed * _GOLDEN + _GOLDEN)
    state = (state ^ _shift_right(state, 30)) * _as_int64(_MIX1)
    state = (state ^ _shift_right(state, 27)) * _as_int64(_MIX2)
    state = state ^ _shift_right(state, 31)
    return _shift_right(state, 11).double() / float(1 << 53)


def derived_seed(seed: int, *names: int) -> int:
    """The seed of one named stream of draws, e.g. (seed, NOISE_STREAM, block): splitmix64 folded over
    `names`, in Python integers (the same on every device, process and version of torch), as a
    non-negative 63-bit integer.

    >>> derived_seed(0, 1) == derived_seed(0, 1), derived_seed(0, 1) != derived_seed(0, 2)
    (True, True)
    """
    mask = (1 << 64) - 1
    state = seed & mask
    for name in names:
        state = (state + _GOLDEN + (name & mask)) & mask
        state = ((state ^ (state >> 30)) * _MIX1) & mask
        state = ((state ^ (state >> 27)) * _MIX2) & mask
        state ^= state >> 31
    return state >> 1
