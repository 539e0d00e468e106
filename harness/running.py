"""How a call runs the wrapped model, each for the length of a `with` and restored however it ends:
in eval mode, with some blocks compiled, or from a later block on."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode (no dropout, in its own pass or in the readouts rebuilt from its
    modules); the modules that were training are set back."""
    training = [module for module in model.modules() if module.training]
    model.eval()
    try:
        yield
    finally:
        for module in training:
            module.training = True


@contextlib.contextmanager
def patched_forwards(blocks: Sequence[nn.Module], forward: Callable[..., Any]) -> Iterator[None]:
    """Each of `blocks` runs `forward` (bound to it) instead of its own; restored afterwards."""
    patched = []
    for block in blocks:
        patched.append((block, block.__dict__.get("forward")))
        block.forward = types.MethodType(forward, block)
    try:
        yield
    finally:
        for block, own in reversed(patched):
            if own is None:
                del block.forward
            else:
                block.forward = own


def compiled_blocks(
    blocks: Sequence[nn.Module], compiled: Callable[..., Any] | None, eager: Collection[int]
) -> contextlib.AbstractContextManager[None]:
    """Every block but the last and those numbered in `eager` (1-based) runs `compiled` (a compiled
    block forward); nothing changes when it is None."""
    if compiled is None:
        return contextlib.nullcontext()
    chosen = [block for number, block in enumerate(blocks[:-1], start=1) if number not in eager]
    return patched_forwards(chosen, compiled)


def _passing_through(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A block's forward that returns its input (the blocks before a pass's first block)."""
    return args[0] if args else kwargs["hidden_states"]


def starting_at(blocks: Sequence[nn.Module], start: int) -> contextlib.AbstractContextManager[None]:
    """The blocks before `start` (1-based) pass their input through, for a pass that begins at block
    `start` on its input (a family's `encode` runs every block)."""
    return patched_forwards(blocks[: start - 1], _passing_through)
