"""Interventions that test the paper's conclusion with fair ablations (docs/design.md, "The
decomposition", Interventions): a token group's states, the [CLS] skip stream, or a group's
contribution to the [CLS] update are replaced at chosen blocks, and the model's output is read again.

Two levels, named apart:

- `model`: the target tokens' states entering block l are replaced and the rest of the network runs
  on them (every later token is affected; what activation patching and Parodi et al. 2026 do). The
  skip stream is not a token: it has no model level.
- `readout`: only block l's [CLS] update is rebuilt, m' = s + sum_g c_g + c_b with the target's term
  replaced (the decomposition's own terms: `harness.decomposition`); the block's MLP and every later
  block run on the new [CLS] row. At the last block, zeroing every term but one group's is the
  decomposition's zeroed variant of that group.

Four modes, each of the same shape as what it replaces:

- `zero`: the paper's ablation;
- `mean`: the target's mean over a reference set (per token position: each register its own);
- `shuffle`: another image's, from a bank of reference images; the partner is chosen by a seeded hash
  of the dataset index, so an image gets the same partner in any batch, on any rank;
- `noise`: Gaussian with the reference set's per-dimension mean and standard deviation, drawn from a
  seeded hash of (dataset index, token, dimension).

The reference set's statistics (`ReferenceStatistics`) are sums reduced across ranks before use, and
a bank of the reference images of smallest seeded hash, so the bank is the same whatever the batch
order or the number of processes.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from common.hashing import uniform_hash
from harness.decomposition import (
    HFBlock,
    attention_readout,
    cls_attention,
    contribution,
    group_partial_sums,
    output_bias_term,
    output_readout,
    per_head,
)
from harness.hooks import OnBlockEnd, removed_after, tapped
from harness.tokens import GROUPS, TokenLayout

if TYPE_CHECKING:
    from harness.backbone import DecomposingBackbone

TARGETS: tuple[str, ...] = (*GROUPS, "high_norm", "skip")
"""What an intervention replaces: a token group, the highest-norm non-[CLS] token of the block's
input (the paper's high-norm token at the last block), or the [CLS] skip stream (readout level only)."""
LEVELS: tuple[str, ...] = ("model", "readout")
MODES: tuple[str, ...] = ("zero", "mean", "shuffle", "noise")
INTERVENTION_PREFIX = "intervened/"
"""`intervened/{level}/{targets}@{blocks}/{mode}/{name}`: the decomposition's entries under an
intervention (`Intervention.prefix`)."""
DEFAULT_BANK_SIZE = 64
"""Reference images whose states `shuffle` draws its partners from."""

_SPEC = re.compile(r"^(?P<targets>[a-z_+]+)@(?P<blocks>[a-z0-9-]+):(?P<mode>[a-z]+)(?::(?P<level>[a-z]+))?$")


@dataclass(frozen=True)
class Intervention:
    """One intervention: `targets` replaced by `mode` at `blocks` (1-based, ascending), at `level`.

    >>> Intervention(("register",), (11, 12), "mean").name
    'model/register@11-12/mean'
    """

    targets: tuple[str, ...]
    blocks: tuple[int, ...]
    mode: str
    level: str = "model"

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in TARGETS]
        if not self.targets or unknown:
            raise ValueError(
                f"unknown intervention target {unknown or self.targets}; choose from {', '.join(TARGETS)}"
            )
        if self.mode not in MODES:
            raise ValueError(f"unknown intervention mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.level not in LEVELS:
            raise ValueError(f"unknown intervention level {self.level!r}; choose from {', '.join(LEVELS)}")
        if self.level == "model" and "skip" in self.targets:
            raise ValueError(
                "the skip stream is the [CLS] residual inside a block: it has only the readout level"
            )
        if not self.blocks or list(self.blocks) != sorted(set(self.blocks)) or self.blocks[0] < 1:
            raise ValueError(f"intervention blocks must be ascending block numbers from 1, got {self.blocks}")

    @property
    def name(self) -> str:
        first, last = self.blocks[0], self.blocks[-1]
        contiguous = list(self.blocks) == list(range(first, last + 1))
        span = (
            str(first)
            if first == last
            else f"{first}-{last}"
            if contiguous
            else ",".join(map(str, self.blocks))
        )
        return f"{self.level}/{'+'.join(self.targets)}@{span}/{self.mode}"

    @property
    def prefix(self) -> str:
        """The prefix of this intervention's entries in a decomposition."""
        return f"{INTERVENTION_PREFIX}{self.name}/"

    def absent_targets(self, groups: Sequence[str]) -> tuple[str, ...]:
        """The target groups a model with token `groups` lacks (registers of a model without any)."""
        return tuple(target for target in self.targets if target in GROUPS and target not in groups)

    @property
    def allows_deletion(self) -> bool:
        """Whether the deletion passes can run under it: a model-level intervention whose targets sit
        before the patches (or are the highest-norm token among those left), so the shortened
        sequences of the deletion passes hold them where the full one does."""
        return self.level == "model" and "patch" not in self.targets

    def reported_variants(self, num_layers: int) -> tuple[str, ...] | None:
        """The variants a pass under this intervention reports, where fewer than the clean pass:
        only `output/full` (and `projection/full`) when it rebuilds the last block's [CLS] row at
        readout level; None (every variant) otherwise (`DecomposingBackbone.intervened`)."""
        if self.level == "readout" and num_layers in self.blocks:
            return ("output/full", "projection/full")
        return None

    def reference_keys(self) -> list[ReferenceKey]:
        """The reference statistics this intervention reads (none for `zero`)."""
        if self.mode == "zero":
            return []
        return [ReferenceKey(self.level, target, block) for block in self.blocks for target in self.targets]


@dataclass(frozen=True)
class ReferenceKey:
    """What a reference statistic is of: `target` at `block`, as states (model level) or [CLS]-update
    terms (readout level)."""

    level: str
    target: str
    block: int


def parse_intervention(text: str, num_layers: int) -> Intervention:
    """`TARGETS@BLOCKS:MODE[:LEVEL]`: targets joined by `+` (`register`, `cls+register+skip`), blocks
    `last`, `all`, `N` or `A-B`, level `model` (default) or `readout`.

    >>> parse_intervention("register@last:mean", 12).name
    'model/register@12/mean'
    >>> parse_intervention("cls+skip@3-4:zero:readout", 12).name
    'readout/cls+skip@3-4/zero'

    Raises:
        ValueError: not of that form, an unknown target, mode or level, or blocks outside 1..num_layers.
    """
    match = _SPEC.match(text.strip())
    if match is None:
        raise ValueError(
            f"--intervene {text!r}: expected TARGETS@BLOCKS:MODE[:LEVEL], e.g. register@last:mean or "
            "cls+skip@10-12:zero:readout"
        )
    return Intervention(
        tuple(match["targets"].split("+")),
        _blocks(match["blocks"], num_layers, text),
        match["mode"],
        match["level"] or "model",
    )


def _blocks(text: str, num_layers: int, spec: str) -> tuple[int, ...]:
    if text == "last":
        return (num_layers,)
    if text == "all":
        return tuple(range(1, num_layers + 1))
    bounds = text.split("-")
    if len(bounds) > 2 or not all(bound.isdigit() for bound in bounds):
        raise ValueError(f"--intervene {spec!r}: blocks are last, all, N or A-B, got {text!r}")
    first, last = int(bounds[0]), int(bounds[-1])
    if not 1 <= first <= last <= num_layers:
        raise ValueError(f"--intervene {spec!r}: this backbone has blocks 1..{num_layers}, got {text!r}")
    return tuple(range(first, last + 1))


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
        by a seeded hash of the image's dataset index, the next one when that is the image itself."""
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
        """Gaussian values with the reference mean and std per (row, dimension), seeded by (dataset
        index, row, dimension): (images, rows, hidden)."""
        mean, std = self.mean(key), self.std(key)
        rows, hidden = mean.shape
        cells = torch.arange(rows * hidden, device=mean.device)
        keys = indices.long().to(mean.device).unsqueeze(1) * (rows * hidden) + cells  # images, cells
        first = uniform_hash(keys, self.seed + 2).clamp_min(1e-300)
        second = uniform_hash(keys, self.seed + 3)
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


def replacement(
    intervention: Intervention, key: ReferenceKey, current: Tensor, indices: Tensor,
    reference: ReferenceStatistics | None,
) -> Tensor:  # fmt: skip
    """What `intervention` puts in place of `current` (images, rows, hidden) for the images `indices`."""
    if intervention.mode == "zero":
        return torch.zeros_like(current)
    if reference is None:
        raise ValueError(f"{intervention.name} needs reference statistics (a reference pass)")
    held = tuple(reference.mean(key).shape)
    if held != tuple(current.shape[1:]):
        raise ValueError(
            f"{intervention.name}: the reference holds {held} per image for {key.target} at block "
            f"{key.block}, this batch {tuple(current.shape[1:])} (another resolution?)"
        )
    if intervention.mode == "mean":
        value = reference.mean(key).expand_as(current)
    elif intervention.mode == "shuffle":
        value = reference.partners(key, indices)
    else:
        value = reference.noise(key, indices)
    return value.to(current.device, current.dtype)


def model_rows(target: str, block_input: Tensor, layout: TokenLayout) -> Tensor:
    """The sequence positions (images, rows) a model-level `target` replaces in a block's input: the
    group's positions, or the highest-norm non-[CLS] token of each image."""
    images = block_input.shape[0]
    if target == "high_norm":
        after_cls = layout.slice("cls").stop
        return block_input[:, after_cls:].float().norm(dim=-1).argmax(dim=1, keepdim=True) + after_cls
    span = layout.slice(target)
    return torch.arange(span.start, span.stop, device=block_input.device).expand(images, -1)


def take_rows(tokens: Tensor, rows: Tensor) -> Tensor:
    """tokens[i, rows[i]]: (images, rows, hidden)."""
    return tokens.gather(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def put_rows(tokens: Tensor, rows: Tensor, values: Tensor) -> Tensor:
    """A copy of `tokens` with tokens[i, rows[i]] = values[i]."""
    return tokens.scatter(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), values.to(tokens.dtype))


def readout_terms(
    view: HFBlock, block_input: Tensor, keys: Tensor, values: Tensor, layout: TokenLayout
) -> dict[str, Tensor]:
    """The terms of block l's [CLS] update, m = skip + sum_g c_g + bias (each (images, 1, hidden),
    float32), and `high_norm`: the term of the highest-norm non-[CLS] token (part of its group's)."""
    weights = cls_attention(view, block_input, keys)  # images, heads, tokens
    sums = group_partial_sums(weights, values, layout)
    skip = block_input[:, 0].float()
    variants = attention_readout(view, sums, skip)
    bias = output_bias_term(view)
    terms = {group: variants[group] - bias for group in GROUPS}
    terms["skip"] = skip
    terms["bias"] = bias.expand_as(skip)
    top = model_rows("high_norm", block_input, layout)[:, 0]  # images
    image = torch.arange(weights.shape[0], device=weights.device)
    top_values = per_head(values, weights.shape[1])[image, :, top]  # images, heads, head_dim
    terms["high_norm"] = contribution(view, weights[image, :, top].unsqueeze(-1) * top_values)
    return {name: term.unsqueeze(1) for name, term in terms.items()}


def rebuilt_state(terms: Mapping[str, Tensor], replaced: Mapping[str, Tensor]) -> Tensor:
    """m' = skip + sum_g c_g + bias with the `replaced` terms swapped in (images, hidden)."""
    state = terms["skip"] + sum(terms[group] for group in GROUPS) + terms["bias"]
    for target, value in replaced.items():
        state = state - terms[target] + value
    return state[:, 0]


@contextlib.contextmanager
def replacing_rows(
    backbone: DecomposingBackbone, intervention: Intervention, layout: TokenLayout, indices: Tensor,
    reference: ReferenceStatistics | None,
) -> Iterator[None]:  # fmt: skip
    """A model-level intervention for one pass: the target rows of each chosen block's input replaced."""

    def hook_for(number: int) -> Callable[..., tuple[Any, ...]]:
        def replace(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
            tokens = inputs[0]
            for target in intervention.targets:
                rows = model_rows(target, tokens, layout)
                current = take_rows(tokens, rows)
                key = ReferenceKey("model", target, number)
                tokens = put_rows(tokens, rows, replacement(intervention, key, current, indices, reference))
            return (tokens, *inputs[1:])

        return replace

    blocks = backbone.family.blocks
    with removed_after([blocks[n - 1].register_forward_pre_hook(hook_for(n)) for n in intervention.blocks]):
        yield


@contextlib.contextmanager
def rebuilding_cls(
    backbone: DecomposingBackbone, intervention: Intervention, layout: TokenLayout, indices: Tensor,
    reference: ReferenceStatistics | None,
) -> Iterator[None]:  # fmt: skip
    """A readout-level intervention for one pass: each chosen block's [CLS] output rebuilt from its
    update's terms with the targets' replaced (the rest of the block run on it, as the decomposition
    does); the other tokens' outputs are the block's own."""

    def on_end_for(number: int) -> OnBlockEnd:
        view = backbone.view(number)

        def rebuild(block_input: Tensor, keys: Tensor, values: Tensor, output: Tensor) -> Tensor:
            with torch.autocast(device_type=block_input.device.type, enabled=False):
                terms = readout_terms(view, block_input, keys, values, layout)
                replaced = {}
                for target in intervention.targets:
                    key = ReferenceKey("readout", target, number)
                    replaced[target] = replacement(intervention, key, terms[target], indices, reference)
                row = output_readout(view, None, rebuilt_state(terms, replaced))
            return torch.cat([row.to(output.dtype).unsqueeze(1), output[:, 1:]], dim=1)

        return rebuild

    with tapped(backbone, intervention.blocks, layout, on_end_for):
        yield


@contextlib.contextmanager
def recording(
    backbone: DecomposingBackbone, keys: Iterable[ReferenceKey], layout: TokenLayout, indices: Tensor,
    into: ReferenceStatistics,
) -> Iterator[None]:  # fmt: skip
    """A clean pass that adds the values of `keys` to the reference statistics `into`."""
    by_block: dict[int, list[ReferenceKey]] = {}
    for key in keys:
        by_block.setdefault(key.block, []).append(key)

    def on_end_for(number: int) -> OnBlockEnd:
        view = backbone.view(number)

        def record(block_input: Tensor, keys: Tensor, values: Tensor, output: Tensor) -> None:
            wanted = by_block[number]
            terms: dict[str, Tensor] = {}
            if any(key.level == "readout" for key in wanted):  # model-level keys read the input alone
                with torch.autocast(device_type=block_input.device.type, enabled=False):
                    terms = readout_terms(view, block_input, keys, values, layout)
            for key in wanted:
                if key.level == "readout":
                    into.update(key, terms[key.target], indices)
                else:
                    into.update(
                        key,
                        take_rows(block_input, model_rows(key.target, block_input, layout)).float(),
                        indices,
                    )

        return record

    with tapped(backbone, sorted(by_block), layout, on_end_for):
        yield
