"""The [CLS] update of chosen blocks decomposed as they run (`--layers`): `depth/{quantity}` (batch,
blocks) for every `harness.decomposition.depth_quantities`, read off the clean pass (no pass of its
own); each block's rebuilt [CLS] output is checked against the block's own (the call's pooler error)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.backbone import Call, DecomposingBackbone, Extra, ExtraResult
from harness.decomposition import DEPTH_PREFIX, decompose_block
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout


class _Decomposing(Tap):
    """Each chosen block's depth quantities and rebuilt [CLS] output, as the block ends."""

    reads = frozenset({"keys", "values"})

    def __init__(self, backbone: DecomposingBackbone, layout: TokenLayout, layers: tuple[int, ...]) -> None:
        self.backbone, self.layout, self.blocks = backbone, layout, layers
        self.rows: list[dict[str, Tensor]] = []
        self.errors: list[Tensor] = []

    def leave(self, parts: BlockParts) -> None:
        view = self.backbone.view(parts.number)
        keys, values = parts.read("keys"), parts.read("values")
        quantities, rebuilt = decompose_block(view, parts.input, keys, values, self.layout)
        self.rows.append(quantities)
        self.errors.append((rebuilt - parts.output[:, 0].float()).abs().max())


@dataclass(frozen=True)
class Depth(Extra):
    """Decompose the [CLS] update of blocks `layers` (1-based) as they run.

    >>> Depth((3, 1, 3)).layers
    (1, 3)
    """

    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        if not self.layers:
            raise ValueError("Depth needs at least one block")

    def check(self, backbone: DecomposingBackbone) -> None:
        if not backbone.info.num_cls:
            raise ValueError(
                f"the per-block decomposition reads the [CLS] row; {backbone.info.name} has none"
            )
        count = backbone.info.num_layers
        if not 1 <= self.layers[0] <= self.layers[-1] <= count:
            raise ValueError(f"layers are numbered 1..{count}, got {list(self.layers)}")

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        return {"depth": _Decomposing(backbone, layout, self.layers)}

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        tap = taps["depth"]
        assert isinstance(tap, _Decomposing)
        rows = tap.rows  # one per block, in the order the blocks ran (ascending)
        entries = {
            DEPTH_PREFIX + quantity: torch.stack([row[quantity] for row in rows], dim=1)
            for quantity in rows[0]
        }
        return ExtraResult(entries, error=torch.stack(tap.errors).max())
