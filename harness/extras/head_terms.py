"""Per-head terms of the [CLS] update (docs/design.md#per-head-terms): head h's part of each group's
contribution, gamma1 * (W_o^h S^h_g), which sum over heads to c_g, with each head's attention mass
on the group. At the last block they are read off the clean pass's capture; at the other chosen
blocks, as the blocks run (no pass of their own).

Names: `heads/{group}` (batch, heads, hidden) and `heads/split/{group}` (batch, heads) at the last
block, `depth/layer{l}/heads/{group}` and `depth/layer{l}/heads/split/{group}` at block l."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from harness.backbone import Call, DecomposingBackbone, Extra, ExtraResult
from harness.decomposition import DEPTH_PREFIX, decompose_heads
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout

HEADS_PREFIX = "heads/"


def head_prefix(block: int, num_layers: int) -> str:
    """Where block `block`'s per-head terms sit: `heads/` at the last block, else
    `depth/layer{block}/heads/`.

    >>> head_prefix(12, 12), head_prefix(3, 12)
    ('heads/', 'depth/layer3/heads/')
    """
    return HEADS_PREFIX if block == num_layers else f"{DEPTH_PREFIX}layer{block}/{HEADS_PREFIX}"


def head_term_names(block: int, num_layers: int, groups: tuple[str, ...]) -> tuple[str, ...]:
    """The entries `HeadTerms` writes for `block` of a model with token `groups`.

    >>> head_term_names(2, 2, ("cls", "patch"))
    ('heads/cls', 'heads/patch', 'heads/split/cls', 'heads/split/patch')
    """
    prefix = head_prefix(block, num_layers)
    return (*(prefix + group for group in groups), *(f"{prefix}split/{group}" for group in groups))


class _PerHead(Tap):
    """Each chosen block's per-head terms, as the block ends."""

    reads = frozenset({"keys", "values"})

    def __init__(self, backbone: DecomposingBackbone, layout: TokenLayout, layers: tuple[int, ...]) -> None:
        self.backbone, self.layout, self.blocks = backbone, layout, layers
        self.entries: dict[str, Tensor] = {}

    def leave(self, parts: BlockParts) -> None:
        view = self.backbone.view(parts.number)
        terms = decompose_heads(view, parts.input, parts.read("keys"), parts.read("values"), self.layout)
        prefix = head_prefix(parts.number, self.backbone.info.num_layers)
        self.entries |= {prefix + name: value for name, value in terms.items()}


@dataclass(frozen=True)
class HeadTerms(Extra):
    """The per-head terms of the last block's [CLS] update, and of blocks `layers` (1-based) as they run.

    >>> HeadTerms((3, 1, 3)).layers
    (1, 3)
    """

    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))

    def check(self, backbone: DecomposingBackbone) -> None:
        count = backbone.info.num_layers
        if not backbone.info.num_cls and any(layer != count for layer in self.layers):
            raise ValueError(f"the heads of a block's [CLS] update: {backbone.info.name} has no [CLS] token")
        if self.layers and not 1 <= self.layers[0] <= self.layers[-1] <= count:
            raise ValueError(f"layers are numbered 1..{count}, got {list(self.layers)}")

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        before_last = tuple(layer for layer in self.layers if layer != backbone.info.num_layers)
        return {"heads": _PerHead(backbone, layout, before_last)} if before_last else {}

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        capture, backbone = call.capture, call.backbone
        last = decompose_heads(
            backbone.read_view, capture.block_input, capture.keys, capture.values, capture.layout
        )
        entries = {HEADS_PREFIX + name: value for name, value in last.items()}
        if "heads" in taps:
            tap = taps["heads"]
            assert isinstance(tap, _PerHead)
            entries |= tap.entries
        return ExtraResult(entries)
