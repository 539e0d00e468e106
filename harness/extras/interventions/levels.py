"""The two levels an intervention acts at (docs/design.md, Interventions):

- `model`: the target tokens' states entering block l are replaced and the rest of the network runs
  on them (every later token is affected; what activation patching and Parodi et al. 2026 do); for
  a head (`head5`), its slice of block l's attention output before W_o, for every token; for a set
  of neurons (`neurons:5,17`), their activations in block l's MLP (the input of its output
  projection), for every token. The skip stream is not a token: it has no model level.
- `readout`: only block l's [CLS] update is rebuilt, m' = s + sum_g c_g + c_b with the target's term
  replaced (the decomposition's own terms: `harness.decomposition`); the block's MLP and every later
  block run on the new [CLS] row. At the last block, zeroing every term but one group's is the
  decomposition's zeroed variant of that group. Neurons are no term of the update: model level only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor

from harness.backbone import DecomposingBackbone
from harness.decomposition import (
    HFBlock,
    artifact_mask,
    attention_readout,
    cls_attention,
    contribution,
    group_partial_sums,
    head_terms,
    output_bias_term,
    output_readout,
    per_head,
)
from harness.extras.interventions.intervention import (
    ARTIFACT,
    NEURONS,
    ONE_HEAD,
    ONE_TOKEN,
    Intervention,
    Level,
    acts_inside,
    neurons,
    one_head,
    one_token_position,
    target_kind,
)
from harness.extras.interventions.reference import ReferenceKey
from harness.taps import BlockParts, Tap
from harness.tokens import GROUPS, TokenLayout


def model_rows(target: str, block_input: Tensor, layout: TokenLayout) -> Tensor:
    """The sequence positions (images, rows) a model-level `target` replaces in a block's input: the
    group's positions, the highest-norm non-[CLS] token of each image, or one token's position."""
    images = block_input.shape[0]
    if target == "high_norm":
        after_cls = layout.slice("cls").stop
        return block_input[:, after_cls:].float().norm(dim=-1).argmax(dim=1, keepdim=True) + after_cls
    if (position := one_token_position(target, layout)) is not None:
        return torch.full((images, 1), position, device=block_input.device)
    span = layout.slice(target)
    return torch.arange(span.start, span.stop, device=block_input.device).expand(images, -1)


def take_rows(tokens: Tensor, rows: Tensor) -> Tensor:
    """tokens[i, rows[i]]: (images, rows, hidden)."""
    return tokens.gather(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def put_rows(tokens: Tensor, rows: Tensor, values: Tensor) -> Tensor:
    """A copy of `tokens` with tokens[i, rows[i]] = values[i]."""
    return tokens.scatter(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), values.to(tokens.dtype))


def readout_terms(
    view: HFBlock, block_input: Tensor, keys: Tensor, values: Tensor, layout: TokenLayout,
    targets: Sequence[str] = (),
) -> dict[str, Tensor]:  # fmt: skip
    """The terms of block l's [CLS] update, m = skip + sum_g c_g + bias (each (images, 1, hidden),
    float32), `high_norm`: the term of the highest-norm non-[CLS] token (part of its group's), the
    term of each one-token target among `targets` (`register3`, `token5`: part of its group's) and of
    each one-head target (`head5`: gamma1 W_o^h times the head's output, over every group)."""
    weights = cls_attention(view, block_input, keys)  # images, heads, tokens
    sums = group_partial_sums(weights, values, layout)
    skip = block_input[:, 0].float()
    variants = attention_readout(view, sums, skip)
    bias = output_bias_term(view)
    terms = {group: variants[group] - bias for group in GROUPS}
    terms["skip"] = skip
    terms["bias"] = bias.expand_as(skip)
    image = torch.arange(weights.shape[0], device=weights.device)
    heads = per_head(values, weights.shape[1])  # images, heads, tokens, head_dim
    for target in ("high_norm", *(t for t in targets if target_kind(t) == ONE_TOKEN)):
        row = model_rows(target, block_input, layout)[:, 0]  # images
        terms[target] = contribution(view, weights[image, :, row].unsqueeze(-1) * heads[image, :, row])
    if chosen := [(t, head) for t in targets if (head := one_head(t)) is not None]:
        outputs = (weights.unsqueeze(2) @ heads).squeeze(2)  # images, heads, head_dim
        per_head_terms = head_terms(view, {"all": outputs})["all"]  # images, heads, hidden
        for target, head in chosen:
            terms[target] = per_head_terms[:, head]
    return {name: term.unsqueeze(1) for name, term in terms.items()}


def rebuilt_state(terms: Mapping[str, Tensor], replaced: Mapping[str, Tensor]) -> Tensor:
    """m' = skip + sum_g c_g + bias with the `replaced` terms swapped in (images, hidden)."""
    state = terms["skip"] + sum(terms[group] for group in GROUPS) + terms["bias"]
    for target, value in replaced.items():
        state = state - terms[target] + value
    return state[:, 0]


def per_image(indices: Tensor | None, rows: int) -> Tensor | None:
    """The dataset index of each row of a pass: a pass may run several copies of the batch, copy
    after copy (the deletion passes run their orders together), each copy replaced as its image."""
    if indices is None or rows == indices.shape[0]:
        return indices
    if rows % indices.shape[0]:
        raise ValueError(f"a pass of {rows} rows under an intervention on {indices.shape[0]} images")
    return indices.repeat(rows // indices.shape[0])


class ModelLevel(Level):
    name = "model"
    description = "the target tokens' states entering the block are replaced; the network runs on them"
    targets = (*GROUPS, "high_norm", ARTIFACT, ONE_TOKEN, ONE_HEAD, NEURONS)

    def tap(self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout,
            indices: Tensor | None) -> Tap:  # fmt: skip
        return _ReplacingRows(intervention, backbone, layout, indices)

    def current(self, target: str, parts: BlockParts, view: HFBlock, layout: TokenLayout) -> Tensor:
        if acts_inside(target):
            return parts.read(inside_point(target))[..., inside_columns(target, view)].float()
        return take_rows(parts.input, model_rows(target, parts.input, layout)).float()

    def reads(self, target: str) -> frozenset[str]:
        return frozenset({inside_point(target)}) if acts_inside(target) else frozenset()


def head_columns(view: HFBlock, head: int) -> slice:
    """Head `head`'s columns of the attention output before the output projection (heads side by side)."""
    width = view.attention.head_dim
    return slice(head * width, (head + 1) * width)


def inside_point(target: str) -> str:
    """The block point (`harness.taps.REPLACEABLE`) a target replaced inside a block lives in."""
    return "neurons" if target_kind(target) == NEURONS else "heads"


def inside_columns(target: str, view: HFBlock) -> slice | list[int]:
    """The columns of its point (`inside_point`) a target replaced inside a block is: a head's slice
    of the attention output, or the chosen neurons of the MLP's activations."""
    head = one_head(target)
    return head_columns(view, head) if head is not None else list(cast(tuple[int, ...], neurons(target)))


class _ReplacingRows(Tap):
    """The target rows of each chosen block's input replaced by the mode's values; a target head's
    slice of the attention output (before the output projection) and target neurons of the MLP's
    activations (before its output projection), for every token."""

    def __init__(self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout,
                 indices: Tensor | None) -> None:  # fmt: skip
        self.intervention, self.backbone, self.layout, self.indices = intervention, backbone, layout, indices
        self.blocks = intervention.blocks
        self.mode = intervention.mode_of()
        self.rows = tuple(target for target in intervention.targets if not acts_inside(target))
        self.inside_targets = tuple(target for target in intervention.targets if acts_inside(target))
        self.replaces = frozenset(inside_point(target) for target in self.inside_targets)

    def inside(self, number: int, point: str, value: Tensor) -> Tensor:
        indices = per_image(self.indices, value.shape[0])
        view = self.backbone.view(number)
        value = value.clone()
        for target in (target for target in self.inside_targets if inside_point(target) == point):
            columns = inside_columns(target, view)
            key = ReferenceKey("model", target, number)
            replacement = self.mode.replacement(
                value[..., columns], key, indices, self.intervention.reference
            )
            value[..., columns] = replacement.to(value.dtype)
        return value

    def enter(self, number: int, tokens: Tensor) -> Tensor:
        indices = per_image(self.indices, tokens.shape[0])
        for target in self.rows:
            if target == ARTIFACT:  # zeroed (`Intervention.check_model`): a different set per image
                mask = artifact_mask(tokens, self.layout, self.backbone.info.artifact_threshold)
                tokens = tokens.masked_fill(mask.unsqueeze(-1), 0.0)
                continue
            rows = model_rows(target, tokens, self.layout)
            key = ReferenceKey("model", target, number)
            value = self.mode.replacement(take_rows(tokens, rows), key, indices, self.intervention.reference)
            tokens = put_rows(tokens, rows, value)
        return tokens


class ReadoutLevel(Level):
    name = "readout"
    description = "only the block's [CLS] update is rebuilt with the target's term replaced"
    targets = (*GROUPS, "high_norm", "skip", ONE_TOKEN, ONE_HEAD)
    rebuilds_cls = True

    def tap(self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout,
            indices: Tensor | None) -> Tap:  # fmt: skip
        return _RebuildingCls(intervention, backbone, layout, indices)

    def current(self, target: str, parts: BlockParts, view: HFBlock, layout: TokenLayout) -> Tensor:
        with torch.autocast(device_type=parts.input.device.type, enabled=False):
            keys, values = parts.read("keys"), parts.read("values")
            return readout_terms(view, parts.input, keys, values, layout, (target,))[target]

    def reads(self, target: str) -> frozenset[str]:
        return frozenset({"keys", "values"})


class _RebuildingCls(Tap):
    """Each chosen block's [CLS] output rebuilt from its update's terms with the targets' replaced (the
    rest of the block run on it, as the decomposition does); the other tokens' outputs are its own."""

    reads = frozenset({"keys", "values"})

    def __init__(self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout,
                 indices: Tensor | None) -> None:  # fmt: skip
        self.intervention, self.backbone, self.layout, self.indices = intervention, backbone, layout, indices
        self.blocks = intervention.blocks
        self.mode = intervention.mode_of()

    def leave(self, parts: BlockParts) -> Tensor:
        view = self.backbone.view(parts.number)
        indices = per_image(self.indices, parts.input.shape[0])
        with torch.autocast(device_type=parts.input.device.type, enabled=False):
            keys, values = parts.read("keys"), parts.read("values")
            terms = readout_terms(view, parts.input, keys, values, self.layout, self.intervention.targets)
            replaced = {}
            for target in self.intervention.targets:
                key = ReferenceKey("readout", target, parts.number)
                replaced[target] = self.mode.replacement(
                    terms[target], key, indices, self.intervention.reference
                )
            row = output_readout(view, None, rebuilt_state(terms, replaced))
        return torch.cat([row.to(parts.output.dtype).unsqueeze(1), parts.output[:, 1:]], dim=1)
