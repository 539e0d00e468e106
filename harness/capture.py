"""What one pass of the model leaves for the decomposition (`Capture`), and what of the core keeps
it: two taps, the [CLS] row entering the first block and leaving every block, and the last block's
input, keys and values; and for a model pooled by an attention head, the tokens the head reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.decomposition import applied
from harness.families.base import PoolView
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout


@dataclass(frozen=True)
class Capture:
    """The seam between running the model (`DecomposingBackbone.capture`) and decomposing its [CLS]
    output (`DecomposingBackbone.decompose`).

    Attributes:
        layout: token positions of the batch.
        pooled: the model's own pooled output (batch, hidden), float32.
        block_input: the input of what reads the pooled output (batch, tokens, hidden), as the model
            ran it: the last block's input x, or the tokens an attention-pooling head reads.
        keys: its keys as its softmax sees them (rotated where the family uses RoPE).
        values: its value projections (batch, tokens, hidden).
        cls_states: the [CLS] row entering the first block and after every block (batch, layers + 1,
            hidden), float32; None for a model without a [CLS] token.
        penultimate: the last block's input (batch, tokens, hidden): `block_input` itself for a
            [CLS] readout.
        block_output: the last block's output (batch, tokens, hidden) for a [CLS] readout (what
            DINOv2's linear classifiers read beside [CLS]: `decomposition.linear_input`); None for
            a pooled model.
    """

    layout: TokenLayout
    pooled: Tensor
    block_input: Tensor
    keys: Tensor
    values: Tensor
    cls_states: Tensor | None
    penultimate: Tensor
    block_output: Tensor | None = None


class ClsRows(Tap):
    """The [CLS] row entering the first block and leaving every block (copied: the blocks' outputs
    are not held beyond their own time)."""

    def __init__(self, num_layers: int) -> None:
        self.blocks = tuple(range(1, num_layers + 1))
        self.rows: list[Tensor] = []

    def leave(self, parts: BlockParts) -> None:
        if parts.number == 1:
            self.rows.append(parts.input[:, 0].clone())
        self.rows.append(parts.output[:, 0].clone())

    def states(self) -> Tensor:
        """(batch, rows kept, hidden), float32."""
        return torch.stack(self.rows, dim=1).float()


class LastBlock(Tap):
    """The last block's input, keys (as its softmax sees them), values and output; with a `pool`, the tokens
    that attention-pooling head reads (a pre-hook on it, `hooked`) and its keys and values, and of
    the last block its input alone."""

    def __init__(self, num_layers: int, pool: PoolView | None = None) -> None:
        self.blocks = (num_layers,)
        self.pool = pool
        self.reads = frozenset() if pool is not None else frozenset({"keys", "values"})
        self.kept: tuple[Tensor, ...] | None = None
        self.pool_input: Tensor | None = None

    def leave(self, parts: BlockParts) -> None:
        self.kept = (
            (parts.input,)
            if self.pool is not None
            else (parts.input, parts.read("keys"), parts.read("values"), parts.output)
        )

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """Keep the pooling head's input while it runs (nothing without a head)."""
        if self.pool is None:
            yield
            return

        def keep(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            self.pool_input = inputs[0]

        def keep_output(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
            self.pool_input = output

        if self.pool.mean_from is not None:  # a token mean reads the final norm's output
            handle = self.pool.module.register_forward_hook(keep_output)
        else:
            handle = self.pool.module.register_forward_pre_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def captured(self, pooled: Tensor, layout: TokenLayout, rows: ClsRows | None) -> Capture:
        """The capture of the pass that ran with this tap and `rows` (None: a model without [CLS]),
        which gave `pooled`."""
        if self.kept is None:
            raise RuntimeError("the last block did not run in this pass")
        states = None if rows is None else rows.states()
        if self.pool is None:
            block_input, keys, values, output = self.kept
            return Capture(layout, pooled.float(), block_input, keys, values, states, block_input, output)
        if self.pool_input is None:
            raise RuntimeError("the pooling head did not run in this pass")
        tokens, attention = self.pool_input, self.pool.attention
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            keys, values = (
                applied(projection, tokens) for projection in (attention.k_proj, attention.v_proj)
            )
        return Capture(layout, pooled.float(), tokens, keys, values, states, self.kept[0])
