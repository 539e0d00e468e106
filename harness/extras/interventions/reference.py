"""The reference set of the `mean`, `shuffle` and `noise` interventions: per `ReferenceKey`, sums
(float64) reduced across ranks before use, and a bank of the reference images of smallest seeded hash,
so the bank is the same whatever the batch order or the number of processes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from common.hashing import derived_seed, uniform_hash

DEFAULT_BANK_SIZE = 64
"""Reference images whose states `shuffle` draws its partners from."""
_NOISE = 1
"""The stream of `ReferenceStatistics.noise` among the seeded draws."""


@dataclass(frozen=True)
class ReferenceKey:
    """What a reference statistic is of: `target` at `block`, as states (model level) or [CLS]-update
    terms (readout level)."""

    level: str
    target: str
    block: int


class ReferenceStatistics:
    """Per `ReferenceKey`: the sum and sum of squares (float64) and count of a reference set's values
    (images, rows, hidden), and a bank of the `bank_size` reference images of smallest
    `uniform_hash(index, seed)` with their values. `reduce` combines the ranks' (sums all-reduced,
    banks gathered and cut to the same smallest hashes), after which every rank holds the same.

    Args:
        bank_size: reference images kept for `shuffle`.
        seed: seed of the bank's choice, the partners and the noise.
    """

    def __init__(self, bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0) -> None:
        if bank_size < 2:
            raise ValueError(f"the reference bank needs 2+ images, got {bank_size}")
        self.bank_size, self.seed = bank_size, seed
        self.sums: dict[ReferenceKey, Tensor] = {}
        self.squares: dict[ReferenceKey, Tensor] = {}
        self.counts: dict[ReferenceKey, Tensor] = {}
        self.banks: dict[ReferenceKey, tuple[Tensor, Tensor, Tensor]] = {}  # hashes, indices, values

    def update(self, key: ReferenceKey, values: Tensor, indices: Tensor) -> None:
        """Add a batch of reference values (images, rows, hidden) of the images `indices`."""
        values = values.detach()
        wide = values.double()
        if key not in self.sums:
            self.sums[key], self.squares[key] = torch.zeros_like(wide[0]), torch.zeros_like(wide[0])
            self.counts[key] = torch.zeros((), dtype=torch.long, device=values.device)
        self.sums[key] += wide.sum(dim=0)
        self.squares[key] += (wide * wide).sum(dim=0)
        self.counts[key] += values.shape[0]
        indices = indices.long().to(values.device)
        hashes = uniform_hash(indices, self.seed)
        if key in self.banks:
            old_hashes, old_indices, old_values = self.banks[key]
            hashes, indices = torch.cat([old_hashes, hashes]), torch.cat([old_indices, indices])
            values = torch.cat([old_values, values])
        self.banks[key] = self._smallest(hashes, indices, values)

    def _smallest(self, hashes: Tensor, indices: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The bank's images: the `bank_size` smallest hashes (ties by index), in that order."""
        order = torch.argsort(indices, stable=True)
        order = order[torch.argsort(hashes[order], stable=True)]
        kept = order[: self.bank_size]
        return hashes[kept], indices[kept], values[kept]

    def reduce(self) -> None:
        """Combine every rank's statistics (a no-op in one process); every rank then holds the same,
        also a rank that saw no reference image (its keys are taken from the others')."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        shapes: list[dict[ReferenceKey, tuple[int, ...]] | None] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(
            shapes, {key: tuple(total.shape) for key, total in self.sums.items()}
        )
        device = _collective_device(self.sums.values())
        for part in shapes:
            for key, shape in (part or {}).items():
                if key not in self.sums:  # nothing seen here: zeros, and an empty bank
                    self.sums[key] = torch.zeros(shape, dtype=torch.float64, device=device)
                    self.squares[key] = torch.zeros(shape, dtype=torch.float64, device=device)
                    self.counts[key] = torch.zeros((), dtype=torch.long, device=device)
                    self.banks[key] = (
                        torch.zeros(0, dtype=torch.float64, device=device),
                        torch.zeros(0, dtype=torch.long, device=device),
                        torch.zeros((0, *shape), device=device),
                    )
        for key in sorted(self.sums, key=lambda k: (k.level, k.target, k.block)):
            for table in (self.sums, self.squares, self.counts):
                torch.distributed.all_reduce(table[key])
            parts = [_gather(part) for part in self.banks[key]]
            self.banks[key] = self._smallest(*parts)

    def count(self, key: ReferenceKey) -> int:
        if key not in self.counts:
            raise KeyError(f"no reference values of {key}: the reference pass did not record it")
        return int(self.counts[key])

    def mean(self, key: ReferenceKey) -> Tensor:
        """(rows, hidden) float32."""
        return (self.sums[key] / max(self.count(key), 1)).float()

    def std(self, key: ReferenceKey) -> Tensor:
        """The population standard deviation (rows, hidden) float32."""
        count = max(self.count(key), 1)
        mean = self.sums[key] / count
        return (self.squares[key] / count - mean * mean).clamp_min(0).sqrt().float()

    def partners(self, key: ReferenceKey, indices: Tensor) -> Tensor:
        """Each image's partner's values (images, rows, hidden): the bank image at a position drawn
        by a seeded hash of the image's dataset index, the next one when that is the image itself.
        Every block's bank holds the same images (chosen by index), so an image has one partner at
        every block of a multi-block intervention: its target is swapped for one other image's."""
        self.count(key)
        _, bank_indices, values = self.banks[key]
        size = bank_indices.shape[0]
        if size < 2:
            raise ValueError(
                f"shuffle needs 2+ reference images, {key.target} at block {key.block} has {size}"
            )
        indices = indices.long().to(bank_indices.device)
        position = (uniform_hash(indices, self.seed + 1) * size).long().clamp_max(size - 1)
        position = torch.where(bank_indices[position] == indices, (position + 1) % size, position)
        return values[position]

    def noise(self, key: ReferenceKey, indices: Tensor) -> Tensor:
        """Gaussian values with the reference mean and std per (row, dimension), seeded by (block,
        dataset index, row, dimension): (images, rows, hidden). Each block of a multi-block
        intervention draws its own."""
        mean, std = self.mean(key), self.std(key)
        rows, hidden = mean.shape
        cells = torch.arange(rows * hidden, device=mean.device)
        keys = indices.long().to(mean.device).unsqueeze(1) * (rows * hidden) + cells  # images, cells
        first = uniform_hash(keys, derived_seed(self.seed, _NOISE, key.block, 0)).clamp_min(1e-300)
        second = uniform_hash(keys, derived_seed(self.seed, _NOISE, key.block, 1))
        normal = torch.sqrt(-2 * torch.log(first)) * torch.cos(2 * math.pi * second)  # Box-Muller
        return mean + std * normal.view(-1, rows, hidden).float()


def _collective_device(held: Iterable[Tensor]) -> torch.device:
    """Where this rank's collectives run: where its statistics are, else the backend's device."""
    for tensor in held:
        return tensor.device
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather(tensor: Tensor) -> Tensor:
    """Concatenate a tensor's rows from every rank (rank order; row counts may differ)."""
    world = torch.distributed.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    torch.distributed.all_gather(counts, count)
    largest = int(max(c.item() for c in counts))
    padded = torch.zeros((largest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts, strict=True)])
