"""What one pass of the model leaves for the decomposition (`Capture`), and the two taps of the core
that keep it: the [CLS] row entering the first block and leaving every block, and the last block's
input, keys and values."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout


@dataclass(frozen=True)
class Capture:
    """The seam between running the model (`DecomposingBackbone.capture`) and decomposing its [CLS]
    output (`DecomposingBackbone.decompose`).

    Attributes:
        layout: token positions of the batch.
        pooled: the model's own pooled [CLS] output (batch, hidden), float32.
        block_input: the last block's input x (batch, tokens, hidden), as the model ran it.
        keys: the last block's keys as its softmax sees them (rotated where the family uses RoPE).
        values: the last block's value projections (batch, tokens, hidden).
        cls_states: the [CLS] row entering the first block and after every block (batch, layers + 1,
            hidden), float32.
    """

    layout: TokenLayout
    pooled: Tensor
    block_input: Tensor
    keys: Tensor
    values: Tensor
    cls_states: Tensor


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
    """The last block's input, keys (as its softmax sees them) and values."""

    reads = frozenset({"keys", "values"})

    def __init__(self, num_layers: int) -> None:
        self.blocks = (num_layers,)
        self.kept: tuple[Tensor, Tensor, Tensor] | None = None

    def leave(self, parts: BlockParts) -> None:
        self.kept = (parts.input, parts.read("keys"), parts.read("values"))

    def captured(self, pooled: Tensor, layout: TokenLayout, rows: ClsRows) -> Capture:
        """The capture of the pass that ran with this tap and `rows`, which gave `pooled`."""
        if self.kept is None:
            raise RuntimeError("the last block did not run in this pass")
        return Capture(layout, pooled.float(), *self.kept, rows.states())
