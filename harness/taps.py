"""Named taps on one pass of the model (docs/design.md#the-seam): what a computation reads of a block
while the model runs it, and where it may replace a block's input or output. One set of forward hooks
per pass serves every tap of that pass, and is removed however the pass ends; the hooks a pass needs
are only those its taps ask for (a tap that reads no point inside a block costs one forward hook)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from harness.families.base import mlp_output
from harness.tokens import TokenLayout

POINTS: tuple[str, ...] = ("queries", "keys", "values", "heads", "neurons")
"""What a tap may ask to read inside a block besides its input and output (always handed over): the
query, key and value projections (batch, tokens, hidden; queries and keys as the block's softmax
sees them, rotated where the family uses RoPE), `heads`, the attention output before the output
projection (the heads side by side, batch, tokens, hidden), and `neurons`, the MLP's activations
before its output projection (after the non-linearity and any gate; batch, tokens, mlp width)."""


@dataclass(frozen=True)
class BlockParts:
    """What one block read and made in a pass, as its taps asked for it.

    Attributes:
        number: the block (1-based).
        input: the tokens it ran on (after any tap's replacement), (batch, tokens, hidden).
        output: its output (after the replacements of the taps before this one).
        queries, keys, values, heads, neurons: the `POINTS` some tap of this block reads; None otherwise.
    """

    number: int
    input: Tensor
    output: Tensor
    queries: Tensor | None = None
    keys: Tensor | None = None
    values: Tensor | None = None
    heads: Tensor | None = None
    neurons: Tensor | None = None

    def read(self, point: str) -> Tensor:
        """One of the `POINTS`, which the tap must have asked for (`Tap.reads`)."""
        value = getattr(self, point)
        if value is None:
            raise ValueError(f"block {self.number}'s {point} were not tapped: add it to the tap's `reads`")
        return value


REPLACEABLE: tuple[str, ...] = ("heads", "neurons")
"""The points inside a block a tap may replace as the block runs (`Tap.inside`): each is the input of
a projection (the attention's output projection, the MLP's)."""


class Tap:
    """What one computation reads of a pass, and where it steps in. A subclass sets `blocks` (1-based),
    `reads` (of `POINTS`) and `replaces` (of `REPLACEABLE`) and overrides `enter`, `inside` and / or
    `leave`; it may keep what it read (a tap object lives for one call).

    Attributes:
        blocks: the blocks it reads.
        reads: the points inside those blocks it reads at their end (`BlockParts`).
        replaces: the points inside those blocks it replaces as they run (`inside`).
    """

    blocks: tuple[int, ...] = ()
    reads: frozenset[str] = frozenset()
    replaces: frozenset[str] = frozenset()

    def enter(self, number: int, tokens: Tensor) -> Tensor | None:
        """Block `number` is about to run on `tokens`: the tokens to run it on instead, or None."""
        return None

    def inside(self, number: int, point: str, value: Tensor) -> Tensor | None:
        """Block `number` computed `point` (one of `replaces`: `heads`, the attention output before the
        output projection; `neurons`, the MLP's activations): the value to go on with instead, or None."""
        return None

    def leave(self, parts: BlockParts) -> Tensor | None:
        """Block `parts.number` ended: the output to use instead, or None."""
        return None


def read_inside(taps: Sequence[Tap]) -> set[int]:
    """The blocks whose insides (`POINTS`) some tap reads or replaces: they run eagerly (not compiled)."""
    return {number for tap in taps if tap.reads or tap.replaces for number in tap.blocks}


@contextlib.contextmanager
def tapping(
    blocks: Sequence[nn.Module], view: Callable[[int], Any], rotated: Callable[[str, Tensor], Tensor],
    taps: Sequence[Tap], replacing: bool = True,
) -> Iterator[None]:  # fmt: skip
    """The hooks of `taps` on `blocks` for one pass.

    Args:
        blocks: the model's blocks, in order.
        view: block number -> that block under the decomposition's names (its q/k/v/o projections).
        rotated: (point, projections) -> the projections as the softmax sees them (queries and keys).
        taps: in the order they act: at a block, each tap's `enter` gets the tokens the taps before
            it left, each `leave` the output the taps before it left.
        replacing: False for a clean pass: a tap that replaces anything is an error.
    """
    by_block: dict[int, list[Tap]] = {}
    for tap in taps:
        for number in tap.blocks:
            by_block.setdefault(number, []).append(tap)
    handles = []
    for number, own in sorted(by_block.items()):
        handles += _hooks(number, blocks[number - 1], view, rotated, own, replacing)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hooks(
    number: int, block: nn.Module, view: Callable[[int], Any], rotated: Callable[[str, Tensor], Tensor],
    taps: Sequence[Tap], replacing: bool,
) -> list[Any]:  # fmt: skip
    """The hooks of one block: a pre-hook where a tap enters, one per point read, one at its end."""
    kept: dict[str, Tensor] = {}
    handles = []
    entering = [tap for tap in taps if type(tap).enter is not Tap.enter]
    if entering:

        def enter(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
            tokens = inputs[0]
            for tap in entering:
                replaced = tap.enter(number, tokens)
                tokens = tokens if replaced is None else _checked(replaced, replacing, number)
            return None if tokens is inputs[0] else (tokens, *inputs[1:])

        handles.append(block.register_forward_pre_hook(enter))
    replaced = {point for tap in taps for point in tap.replaces}
    if replaced - set(REPLACEABLE):
        raise ValueError(f"taps cannot replace {sorted(replaced - set(REPLACEABLE))}: only {REPLACEABLE}")
    for point in sorted(replaced):  # before the reading hooks: what they keep is what the block went on with
        replacing_taps = [tap for tap in taps if point in tap.replaces]
        handles.append(
            _inputs_of(view(number), point).register_forward_pre_hook(
                _replacing_inside(number, point, replacing_taps, replacing)
            )
        )
    points = {point for tap in taps for point in tap.reads}
    if points - set(POINTS):
        raise ValueError(f"unknown tap points {sorted(points - set(POINTS))}: choose from {POINTS}")
    for point in sorted(points):
        if point in REPLACEABLE:
            handles.append(_inputs_of(view(number), point).register_forward_pre_hook(_keeping(kept, point)))
        else:
            attention = view(number).attention
            projection = {"queries": attention.q_proj, "keys": attention.k_proj, "values": attention.v_proj}
            handles.append(projection[point].register_forward_hook(_keeping(kept, point)))

    def leave(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor | None:
        read = {point: kept.pop(point, None) for point in points}
        for point in ("queries", "keys"):
            if (projections := read.get(point)) is not None:
                read[point] = rotated(point, projections)
        parts = BlockParts(number, inputs[0], output, **read)
        for tap in taps:
            replaced = tap.leave(parts)
            if replaced is not None:
                parts = replace(parts, output=_checked(replaced, replacing, number))
        return None if parts.output is output else parts.output

    handles.append(block.register_forward_hook(leave))
    return handles


def _inputs_of(view: Any, point: str) -> nn.Module:
    """The module whose input is `point` (one of `REPLACEABLE`) in a block's view."""
    return view.attention.o_proj if point == "heads" else mlp_output(view.mlp)


def _replacing_inside(
    number: int, point: str, taps: Sequence[Tap], replacing: bool
) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...] | None]:
    """A pre-hook that hands the module's first input to each tap's `inside` in turn."""

    def replace_input(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
        value = inputs[0]
        for tap in taps:
            replaced = tap.inside(number, point, value)
            value = value if replaced is None else _checked(replaced, replacing, number)
        return None if value is inputs[0] else (value, *inputs[1:])

    return replace_input


def _keeping(store: dict[str, Tensor], key: str) -> Callable[..., None]:
    """A hook that keeps its module's output (a forward hook) or first input (a pre-hook) under `key`."""

    def keep(module: nn.Module, inputs: Any, *output: Any) -> None:
        store[key] = output[0] if output else inputs[0]

    return keep


def _checked(replacement: Tensor, replacing: bool, number: int) -> Tensor:
    if not replacing:
        raise ValueError(
            f"a tap replaced block {number}'s tokens in a clean pass: only an extra's own passes may"
        )
    return replacement


def layout_rotation(family: Any, layout: TokenLayout) -> Callable[[str, Tensor], Tensor]:
    """(point, projections) -> as the softmax sees them: the family's rotation of queries and keys."""

    def rotated(point: str, projections: Tensor) -> Tensor:
        if point == "queries":
            return family.attention_queries(projections, layout)
        return family.attention_keys(projections, layout)

    return rotated
