"""`rollout` (Abnar & Zuidema 2020): R = B_L ... B_1 with B_l = 0.5 E_h[A_l] + 0.5 I, where A_l is
block l's full attention, recomputed from its own queries and keys as the clean pass runs (the
model's SDPA gives no weights; RoPE families rotate both as the model does); the [CLS] row of R over
the patches. Each block's attention is folded in as the block ends and dropped."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.backbone import DecomposingBackbone
from harness.extras.attribution.maps import AttributionMap, MapCall, attention_matrix
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout


def rollout_step(rollout: Tensor | None, attention: Tensor) -> Tensor:
    """R <- (0.5 E_h[A] + 0.5 I) R: one block of Abnar & Zuidema's rollout (R = I before the first)."""
    mixed = 0.5 * attention.mean(dim=1) + 0.5 * torch.eye(attention.shape[-1], device=attention.device)
    return mixed if rollout is None else mixed @ rollout


class RollingOut(Tap):
    """Every block's attention folded into the rollout as the block ends."""

    reads = frozenset({"queries", "keys"})

    def __init__(self, backbone: DecomposingBackbone) -> None:
        self.backbone = backbone
        self.blocks = tuple(range(1, backbone.info.num_layers + 1))
        self.rollout: Tensor | None = None

    def leave(self, parts: BlockParts) -> None:
        view = self.backbone.view(parts.number)
        with torch.autocast(device_type=parts.input.device.type, enabled=False):
            attention = attention_matrix(view, parts.read("queries"), parts.read("keys"))
            self.rollout = rollout_step(self.rollout, attention)


class RolloutMap(AttributionMap):
    name = "rollout"
    reads_cls_rows = True  # relevance read from the [CLS] row of every block
    position = 20
    description = "Abnar & Zuidema 2020: the [CLS] row of prod_l (0.5 E_h[A_l] + 0.5 I)"

    def tap(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Tap:
        return RollingOut(backbone)

    def attribute(self, call: MapCall) -> Tensor:
        tap = call.taps[self.name]
        assert isinstance(tap, RollingOut) and tap.rollout is not None  # every block ran
        return tap.rollout[:, 0, call.layout.slice("patch")]
