"""`knockout` (attention knockout): at each chosen block, the [CLS] query's attention logits to the
targets are set to minus infinity, so each head's softmax renormalises over the other tokens; every
other token's attention and every token's state are untouched.

Only the [CLS] row of those blocks changes, so it is rebuilt as the readout level rebuilds it (the
block's [CLS] update from its own keys and values with the knocked-out weights, the rest of the block
run on it) at either level: `register@5:knockout` and `register@5:knockout:readout` are the same pass.
At the readout level the `skip` target drops the [CLS] residual from the update. Knocking out every
group but g and the skip at the last block is the decomposition's renormalised variant of g
(`output/{g}_renorm`). The deletion passes do not run under it (their sequences lose patches, which
would change what is renormalised over).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from harness.backbone import DecomposingBackbone
from harness.decomposition import cls_attention, contribution, output_bias_term, output_readout, per_head
from harness.extras.interventions.intervention import ONE_TOKEN, Intervention, Mode, acts_inside, target_kind
from harness.extras.interventions.levels import model_rows
from harness.taps import BlockParts, Tap
from harness.tokens import GROUPS, TokenLayout


class Knockout(Mode):
    name = "knockout"
    description = "the [CLS] query's attention to the targets removed, its softmax renormalised over the rest"
    allows_deletion = False

    def tap(self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout,
            indices: Tensor | None) -> Tap:  # fmt: skip
        return _KnockingOut(intervention, backbone, layout)

    def rebuilds_cls(self, intervention: Intervention) -> bool:
        return True

    def check(self, intervention: Intervention, groups: Sequence[str]) -> None:
        if inside := [t for t in intervention.targets if acts_inside(t)]:
            raise ValueError(
                f"{intervention.name}: knockout removes tokens from the [CLS] attention; "
                f"{' and '.join(inside)} {'is' if len(inside) == 1 else 'are'} no token "
                "(use zero, mean, shuffle or noise)"
            )
        if all(group in intervention.targets for group in groups):
            raise ValueError(f"{intervention.name}: it leaves the [CLS] query no token to attend to")


class _KnockingOut(Tap):
    """Each chosen block's [CLS] output rebuilt with the targets' attention weights set to zero and
    each head's renormalised (softmax with those logits at minus infinity)."""

    reads = frozenset({"keys", "values"})

    def __init__(
        self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout
    ) -> None:
        self.intervention, self.backbone, self.layout = intervention, backbone, layout
        self.blocks = intervention.blocks

    def kept(self, block_input: Tensor) -> Tensor:
        """1 where the [CLS] query may still attend, 0 at the targets: (batch, tokens)."""
        kept = torch.ones(block_input.shape[:2], device=block_input.device)
        for target in self.intervention.targets:
            if target == "high_norm" or target_kind(target) == ONE_TOKEN:
                kept = kept.scatter(1, model_rows(target, block_input, self.layout), 0.0)
            elif target in GROUPS:
                kept[:, self.layout.slice(target)] = 0.0
        return kept

    def leave(self, parts: BlockParts) -> Tensor:
        view = self.backbone.view(parts.number)
        keys, values = parts.read("keys"), parts.read("values")
        with torch.autocast(device_type=parts.input.device.type, enabled=False):
            weights = cls_attention(view, parts.input, keys) * self.kept(parts.input).unsqueeze(1)
            weights = weights / weights.sum(dim=-1, keepdim=True)  # batch, heads, tokens
            heads = (weights.unsqueeze(2) @ per_head(values, weights.shape[1])).squeeze(2)
            update = contribution(view, heads) + output_bias_term(view)
            skip = parts.input[:, 0].float() * (0.0 if "skip" in self.intervention.targets else 1.0)
            row = output_readout(view, None, skip + update)
        return torch.cat([row.to(parts.output.dtype).unsqueeze(1), parts.output[:, 1:]], dim=1)
