"""The last block's [CLS] output split into contributions (docs/design.md#the-decomposition).

Notation as in docs/design.md, for the last block with input x (batch, tokens, hidden):

    u = norm1(x); a^h_j = softmax_j(q^h_[CLS] . k^h_j * scaling)      (post-softmax [CLS] row)
    S_g = concat_h sum_{j in g} a^h_j v^h_j                             (group partial sums)
    c_g = gamma1 * (W_o S_g),  c_b = gamma1 * b_o,  s = x_[CLS]         (contributions)
    m = s + c_cls + c_register + c_patch + c_b                          (mid-block state)
    f = final_norm(m + gamma2 * MLP(norm2(m)))                          (pooled output)

Only the [CLS] query row is recomputed here; keys and values are the ones the model's own
forward pass produced for the last block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from harness.families.base import PoolView
from harness.tokens import GROUPS, TokenLayout, present_groups, split_groups

READOUTS: tuple[str, ...] = ("attention", "output")
PROJECTION = "projection"
"""The third readout of models with a projection to a joint space (CLIP's `visual_projection`):
`projection/{variant}` = P `output/{variant}` (CKA is not invariant to P, so both are reported)."""
VARIANTS: tuple[str, ...] = ("full", "patch", "register", "cls", "distillation", "skip")
RENORMALISED_VARIANTS: tuple[str, ...] = ("patch", "register", "cls", "distillation")
RENORM_SUFFIX = "_renorm"
ARTIFACT_GROUPS: tuple[str, ...] = ("artifact", "ordinary")
"""The patch group split by norm (`BackboneInfo.artifact_threshold`, docs/design.md#artifacts): the
patches whose norm in the last block's input exceeds the threshold, and the other patches; their
variants (and `_renorm`) and `split/artifact` join the decomposition, and `patch` stays every patch."""
ARTIFACT_COUNT = "artifact/count"
"""How many patches of each image are artifacts: (batch,)."""
HIDDEN_CLS = "hidden/cls"
"""[CLS] hidden state after the embeddings and after every block: (batch, layers + 1, hidden)."""
HIDDEN_CLS_COSINE = "hidden/cls_cosine"
"""Cosine of each `hidden/cls` state to the last block's [CLS] output: (batch, layers + 1)."""
PIXELS = "pixels"
"""The batch's normalised images (batch, 3, H, W), handed to consumers next to the decomposition."""
ATTENTION_MAP = "map/attention"
"""Last-layer [CLS] attention over patches, averaged over heads: (batch, grid_height, grid_width)."""
PENULTIMATE = (
    "penultimate/top_token",
    "penultimate/top_norm",
    "penultimate/other_norm",
    "penultimate/top_state",
    "penultimate/top_state_norm1",
)
"""The highest-norm non-[CLS] token of the penultimate layer's output (= the last block's input):
its sequence position (batch), its L2 norm (batch), the mean norm of the other non-[CLS] tokens
(batch), its state (batch, hidden) and that state after the last block's norm1 (batch, hidden)."""


LINEAR_INPUT_CLS = "linear_input/cls"
"""The final-normed [CLS] row after each of the last `LINEAR_INPUT_BLOCKS` blocks (batch, those blocks,
hidden; fewer in a shallower model), the last one `output/full`: with `LINEAR_INPUT_PATCH_MEAN`, the
input of DINOv2's linear classifiers (`_LinearClassifierWrapper`); [CLS] readouts only."""
LINEAR_INPUT_PATCH_MEAN = "linear_input/patch_mean"
"""The mean over the patches (registers and [CLS] left out) of the last block's final-normed output
(batch, hidden); [CLS] readouts only."""
LINEAR_INPUT_BLOCKS = 4
"""Blocks whose final-normed [CLS] rows DINOv2's four-block linear classifiers read."""


DEPTH_PREFIX = "depth/"
"""Per-layer entries (`--layers`): `depth/{quantity}` is (batch, chosen layers), see `depth_quantities`."""

HFBlock = Any
"""A block under the decomposition's names (norm1, attention.{q,k,v,o}_proj, layer_scale1, ...): an HF
`Dinov2Layer` itself, or a family's `harness.families.BlockView`; or an attention-pooling head read
as one (`harness.families.PoolView`: its query is its learned latent, and it has no skip)."""


def variant_names(
    num_registers: int, projection: bool = False, num_distillation: int = 0, num_cls: int = 1,
    skip: bool = True, artifact: bool = False,
) -> tuple[str, ...]:  # fmt: skip
    """Names of every `{readout}/{variant}` a model with `num_registers` registers (and
    `num_distillation` distillation tokens, `num_cls` [CLS] tokens) has, and the
    `projection/{variant}` readout when it has a projection.

    Models without registers have no register variants (their register group is empty); only
    distilled models have distillation variants; a model pooled by an attention head (`skip`
    False) has no residual around its readout, so no skip variant; with the patch group split by
    norm (`artifact`) the `ARTIFACT_GROUPS` follow the groups, and their renormalised variants the
    groups' ones.

    >>> [n.removeprefix("attention/") for n in variant_names(0) if n.startswith("attention/")]
    ['full', 'patch', 'cls', 'skip', 'patch_renorm', 'cls_renorm']
    >>> [n for n in variant_names(0, num_cls=0, skip=False) if n.startswith("attention/")]
    ['attention/full', 'attention/patch', 'attention/patch_renorm']
    """
    groups = present_groups(num_registers, num_distillation, num_cls)
    plain = [v for v in VARIANTS if (v not in GROUPS or v in groups) and (skip or v != "skip")]
    renorm = [v + RENORM_SUFFIX for v in RENORMALISED_VARIANTS if v in groups]
    if artifact:
        plain += ARTIFACT_GROUPS
        renorm += [v + RENORM_SUFFIX for v in ARTIFACT_GROUPS]
    readouts = READOUTS + ((PROJECTION,) if projection else ())
    return tuple(f"{readout}/{v}" for readout in readouts for v in plain + renorm)


def depth_quantities(num_registers: int, num_distillation: int = 0) -> tuple[str, ...]:  # [CLS] models
    """What is measured per image at every chosen block l (docs/design.md#the-decomposition):

    - `split/{group}`: the [CLS] query's attention mass on the group, mean over heads;
    - `norm/{group}`: ||c_g||, the group's contribution to the [CLS] update; `norm/skip`: ||s||;
    - `cosine/{variant}`: cosine of the variant's output readout (pushed through the rest of block
      l, no final norm) to the block's own [CLS] output, for every group and the skip.

    Models without registers have no register entries (nor distillation entries without one).

    >>> depth_quantities(0)[:3]
    ('split/cls', 'split/patch', 'norm/cls')
    """
    groups = present_groups(num_registers, num_distillation)
    return (
        *(f"split/{group}" for group in groups),
        *(f"norm/{group}" for group in groups),
        "norm/skip",
        *(f"cosine/{variant}" for variant in (*groups, "skip")),
    )


def parse_layers(text: str, num_layers: int | None = None) -> tuple[int, ...]:
    """`--layers`: "last" (no per-layer decomposition: the last block is always decomposed), "all",
    or a comma list of block numbers (1-based) -> the blocks to decompose as they run, ascending.
    Without `num_layers` only the syntax is checked ("all" -> ()).

    >>> parse_layers("3,1,3", 12), parse_layers("all", 3), parse_layers("last", 12)
    ((1, 3), (1, 2, 3), ())

    Raises:
        ValueError: not one of those forms, or a block outside 1..num_layers.
    """
    text = text.strip()
    if text == "last":
        return ()
    if text == "all":
        return tuple(range(1, num_layers + 1)) if num_layers else ()
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise ValueError(f"--layers takes last, all or block numbers like 1,6,12; got {text!r}")
    numbers = tuple(sorted({int(part) for part in parts}))
    if num_layers is not None and numbers[-1] > num_layers:
        raise ValueError(f"--layers {text}: this backbone has blocks 1..{num_layers}")
    return numbers


def depth_names(num_registers: int, num_distillation: int = 0) -> tuple[str, ...]:
    """The decomposition's per-layer entries: `depth/{quantity}` for every `depth_quantities`."""
    return tuple(DEPTH_PREFIX + q for q in depth_quantities(num_registers, num_distillation))


def split_names(num_distillation: int = 0, artifact: bool = False) -> tuple[str, ...]:
    """Names of the per-image attention split, one per group of `split_groups`, and `split/artifact`
    (part of `split/patch`) where the patches are split by norm."""
    return tuple(f"split/{group}" for group in split_groups(num_distillation)) + (
        ("split/artifact",) if artifact else ()
    )


class Decomposition(Mapping[str, Tensor]):
    """Read-only mapping from the names of docs/design.md#names to the tensors of one batch.

    Keys: every name of `variant_names` (batch, hidden) (`projection/*`: batch, projection), every
    `split_names` entry (batch), `hidden/cls` (batch, layers + 1, hidden), `hidden/cls_cosine`
    (batch, layers + 1), `map/attention` (batch, grid_height, grid_width), the `PENULTIMATE` entries,
    and what the call's extras add under their own names (`depth/*`, `deletion/*`, `attribution/*`,
    `maps/*`: `harness.extras`).

    Attributes:
        layout: token positions of this batch.
        pooler_error: max abs difference (0-dim tensor) between the reconstructed
            `output/full` (and whatever else the call rebuilt) and the model's own; a built-in
            exactness check.
        passes: the decompositions of other passes of the call, by name (a pass under an
            intervention, by the intervention's name), read with `pass_of`.
    """

    def __init__(
        self, tensors: Mapping[str, Tensor], layout: TokenLayout, pooler_error: Tensor,
        passes: Mapping[str, Decomposition] | None = None,
    ) -> None:  # fmt: skip
        self._tensors = MappingProxyType(dict(tensors))
        self.layout = layout
        self.pooler_error = pooler_error
        self.passes = MappingProxyType(dict(passes or {}))

    def with_entries(self, tensors: Mapping[str, Tensor]) -> Decomposition:
        """This decomposition with `tensors` added (e.g. the batch's images under `PIXELS`)."""
        return Decomposition({**self._tensors, **tensors}, self.layout, self.pooler_error, self.passes)

    def pass_of(self, name: str) -> Decomposition:
        """The decomposition of the pass `name`, with this one's images (`PIXELS`) where it has them."""
        if name not in self.passes:
            raise KeyError(f"this call ran no pass {name!r}; it ran {sorted(self.passes) or 'none'}")
        found = self.passes[name]
        return found.with_entries({PIXELS: self[PIXELS]}) if PIXELS in self else found

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in this decomposition; it has {sorted(self._tensors)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def variants(self) -> tuple[str, ...]:
        """The `{readout}/{variant}` names present, in canonical order."""
        layout = self.layout
        return variant_names(
            layout.num_registers, f"{PROJECTION}/full" in self._tensors, layout.num_distillation,
            layout.num_cls, "attention/skip" in self._tensors, "attention/artifact" in self._tensors,
        )  # fmt: skip


def skip_of(layer: HFBlock, block_input: Tensor) -> Tensor:
    """s, the residual the block adds to its [CLS] update (batch, hidden), float32: the [CLS] row of
    its input; zeros for an attention-pooling head, which has none."""
    if isinstance(layer, PoolView):
        return block_input.new_zeros(block_input.shape[0], block_input.shape[-1], dtype=torch.float32)
    return block_input[:, 0].float()


def cls_attention(layer: HFBlock, block_input: Tensor, keys: Tensor) -> Tensor:
    """Post-softmax attention of the [CLS] query (a pooling head's latent) over all tokens, per head.

    Args:
        layer: the block (`HFBlock`: `norm1`, `attention.q_proj`, ...).
        block_input: x, the block's input (batch, tokens, hidden).
        keys: the block's key projections (batch, tokens, hidden).

    Returns:
        a (batch, heads, tokens), float32, each row summing to 1.
    """
    attention = layer.attention
    batch = keys.shape[0]
    if isinstance(layer, PoolView) and layer.mean_from is not None:  # the token mean: uniform weights
        tokens = keys.shape[1]
        weights = keys.new_zeros(batch, 1, tokens, dtype=torch.float32)
        weights[:, :, layer.mean_from :] = 1.0 / (tokens - layer.mean_from)
        return weights
    if isinstance(layer, PoolView):  # the learned latent, the same for every image
        source = layer.latent.detach().float().reshape(1, -1).expand(batch, -1)
    else:
        source = applied(layer.norm1, block_input[:, 0])
    query_cls = applied(attention.q_proj, source)  # batch, hidden
    query_cls = query_cls.view(batch, attention.num_attention_heads, 1, attention.head_dim)
    logits = (query_cls @ per_head(keys, attention.num_attention_heads).transpose(-1, -2)).squeeze(
        2
    ) * attention.scaling  # batch, heads, tokens
    return logits.softmax(dim=-1)


def per_head(projections: Tensor, heads: int) -> Tensor:
    """Query, key or value projections (batch, tokens, hidden) split into heads: (batch, heads,
    tokens, head width), float32."""
    batch, tokens, _ = projections.shape
    return projections.float().view(batch, tokens, heads, -1).transpose(1, 2)


def group_partial_sums(weights: Tensor, values: Tensor, layout: TokenLayout) -> dict[str, Tensor]:
    """S_g per head for every token group: the [CLS] attention output restricted to that group.

    Args:
        weights: a (batch, heads, tokens).
        values: the block's value projections (batch, tokens, hidden).
        layout: token positions.

    Returns:
        group name -> sum_{j in g} a^h_j v^h_j (batch, heads, head_dim); 0 for an empty group.
    """
    values = per_head(values, weights.shape[1])  # batch, heads, tokens, head_dim
    sums = {}
    for group in GROUPS:
        span = layout.slice(group)
        group_weights = weights[:, :, span].unsqueeze(2)  # batch, heads, 1, group tokens
        sums[group] = (group_weights @ values[:, :, span]).squeeze(2)  # batch, heads, head_dim
    return sums


def artifact_mask(tokens: Tensor, layout: TokenLayout, threshold: float) -> Tensor:
    """(batch, tokens) bool: the patches whose L2 norm in `tokens` (a block's input) exceeds
    `threshold`; False at every other position."""
    mask = tokens.float().norm(dim=-1) > threshold
    mask[:, : layout.slice("patch").start] = False
    return mask


def artifact_sums(
    weights: Tensor, values: Tensor, mask: Tensor, sums: Mapping[str, Tensor], masses: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """S_g and M^h_g of the `ARTIFACT_GROUPS` (the patches in `mask`, and the other patches: the patch
    group's S and M less the artifacts'), from the read block's weights (batch, heads, tokens)."""
    artifact_weights = weights * mask.unsqueeze(1).to(weights.dtype)  # batch, heads, tokens
    artifact = (artifact_weights.unsqueeze(2) @ per_head(values, weights.shape[1])).squeeze(2)
    artifact_mass = artifact_weights.sum(dim=-1)
    return (
        {"artifact": artifact, "ordinary": sums["patch"] - artifact},
        {"artifact": artifact_mass, "ordinary": masses["patch"] - artifact_mass},
    )


def group_masses(weights: Tensor, layout: TokenLayout) -> dict[str, Tensor]:
    """Attention mass of the [CLS] query on each group, per head: (batch, heads), summing to 1."""
    return {group: weights[:, :, layout.slice(group)].sum(dim=-1) for group in GROUPS}


def renormalise(partial_sums: Mapping[str, Tensor], masses: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """S_g divided per head by that head's mass on g (softmax restricted to g); empty groups stay 0."""
    renormalised = {}
    for group, partial in partial_sums.items():
        mass = masses[group].unsqueeze(-1)  # batch, heads, 1
        renormalised[group] = torch.where(
            mass > 0, partial / mass.clamp_min(torch.finfo(mass.dtype).tiny), 0.0
        )
    return renormalised


def attention_readout(layer: HFBlock, partial_sums: Mapping[str, Tensor], skip: Tensor) -> dict[str, Tensor]:
    """The attention-readout variants from per-head group partial sums (residual only in skip).

    full = c_cls + c_register + c_patch + c_b; g = c_g + c_b for each group; skip = s. Heads are
    concatenated in the model's order before the output projection.
    """
    bias_term = output_bias_term(layer)  # c_b
    contributions = {group: contribution(layer, s) for group, s in partial_sums.items()}  # c_g
    variants = {group: c + bias_term for group, c in contributions.items()}
    variants["full"] = sum(contributions.values()) + bias_term
    variants["skip"] = skip.float()
    return variants


def contribution(layer: HFBlock, partial_sum: Tensor) -> Tensor:
    """c = gamma1 * (W_o S) of a per-head partial sum S (batch, heads, head_dim): float32 (batch, hidden)."""
    gamma1 = layer.layer_scale1.lambda1.float()
    return gamma1 * (partial_sum.flatten(1) @ layer.attention.o_proj.weight.float().T)


def head_terms(layer: HFBlock, partial_sums: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Head h's part of each group's contribution, gamma1 * (W_o^h S^h_g) with W_o^h the output
    projection's columns of head h: (batch, heads, hidden) per group, float32; summed over heads it
    is c_g (`contribution`), the bias term c_b belonging to no head."""
    weight = layer.attention.o_proj.weight.float()  # hidden, heads * head_dim (heads side by side)
    gamma1 = layer.layer_scale1.lambda1.float()
    terms = {}
    for group, partial in partial_sums.items():  # batch, heads, head_dim
        by_head = weight.view(weight.shape[0], partial.shape[1], partial.shape[2])  # hidden, heads, head_dim
        terms[group] = gamma1 * torch.einsum("bhk,dhk->bhd", partial, by_head)
    return terms


def decompose_heads(
    layer: HFBlock, block_input: Tensor, keys: Tensor, values: Tensor, layout: TokenLayout
) -> dict[str, Tensor]:
    """The per-head terms of one block's [CLS] update for every group the layout has: `{group}`,
    (batch, heads, hidden) (`head_terms`), and `split/{group}`, each head's [CLS] attention mass on
    the group (batch, heads)."""
    with torch.autocast(device_type=block_input.device.type, enabled=False):
        weights = cls_attention(layer, block_input, keys)
        groups = layout.groups
        sums = group_partial_sums(weights, values, layout)
        terms = head_terms(layer, {group: sums[group] for group in groups})
        masses = group_masses(weights, layout)
    return terms | {f"split/{group}": masses[group] for group in groups}


def output_bias_term(layer: HFBlock) -> Tensor:
    """c_b = gamma1 * b_o (zeros for an output projection without a bias), float32."""
    gamma1 = layer.layer_scale1.lambda1.float()
    bias = layer.attention.o_proj.bias
    return gamma1 * bias.float() if bias is not None else torch.zeros_like(gamma1)


def output_readout(layer: HFBlock, final_norm: nn.Module | None, state: Tensor) -> Tensor:
    """final_norm(v + gamma2 * MLP(norm2(v))): a [CLS] state pushed through the rest of the block
    (without a final norm for a block other than the last)."""
    residual = applied(layer.layer_scale2, applied(layer.mlp, applied(layer.norm2, state)))
    return state + residual if final_norm is None else applied(final_norm, state + residual)


def decompose_block(
    layer: HFBlock, block_input: Tensor, keys: Tensor, values: Tensor, layout: TokenLayout
) -> tuple[dict[str, Tensor], Tensor]:
    """The `depth_quantities` of one block, per image, from its input, keys and values.

    Returns:
        quantity -> (batch,) float32, and the block's [CLS] output rebuilt from the
        decomposition (s + attention/full through the rest of the block), (batch, hidden).
    """
    with torch.autocast(device_type=block_input.device.type, enabled=False):
        weights = cls_attention(layer, block_input, keys)
        skip = skip_of(layer, block_input)
        masses = group_masses(weights, layout)
        zeroed = attention_readout(layer, group_partial_sums(weights, values, layout), skip)
        bias_term = output_bias_term(layer)
        groups = layout.groups
        states = [skip + zeroed["full"], *(zeroed[group] for group in groups), skip]
        outputs = output_readout(layer, None, torch.cat(states)).split(skip.shape[0])
        full = outputs[0]
        result = {f"split/{group}": masses[group].mean(dim=1) for group in groups}
        result |= {f"norm/{group}": (zeroed[group] - bias_term).norm(dim=-1) for group in groups}
        result["norm/skip"] = skip.norm(dim=-1)
        for variant, output in zip((*groups, "skip"), outputs[1:], strict=True):
            result[f"cosine/{variant}"] = nn.functional.cosine_similarity(
                output.double(), full.double(), dim=-1
            ).float()
    return result, full


def decompose_last_block(
    layer: HFBlock,
    final_norm: nn.Module,
    block_input: Tensor,
    keys: Tensor,
    values: Tensor,
    layout: TokenLayout,
    artifacts: Tensor | None = None,
) -> dict[str, Tensor]:
    """Every variant and split of docs/design.md#the-decomposition for one batch.

    Args:
        layer: the block that reads the pooled output: the last block (`HFBlock`), or the model's
            attention-pooling head (`PoolView`).
        final_norm: what follows it: the model's final layer norm, or what follows the head.
        block_input: x (batch, tokens, hidden): the block's input, or the tokens the head reads.
        keys: its key projections (batch, tokens, hidden).
        values: its value projections (batch, tokens, hidden).
        layout: token positions; must match the sequence length.
        artifacts: (batch, tokens) bool, the patches split off as artifacts (`artifact_mask`); None:
            no split.

    Returns:
        name -> tensor for every `variant_names(layout.num_registers)`, `split/*` and
        `map/attention` (with `artifacts`, also the `ARTIFACT_GROUPS`' variants, `split/artifact` and
        `ARTIFACT_COUNT`). `output/full` is f, the model's pooled output.
    """
    if block_input.shape[1] != layout.num_tokens:
        raise ValueError(
            f"sequence has {block_input.shape[1]} tokens but the layout expects {layout.num_tokens}"
        )
    with torch.autocast(device_type=block_input.device.type, enabled=False):
        weights = cls_attention(layer, block_input, keys)
        skip = skip_of(layer, block_input)
        partial_sums = group_partial_sums(weights, values, layout)
        masses = group_masses(weights, layout)
        zeroed = attention_readout(layer, partial_sums, skip)
        renormalised = attention_readout(layer, renormalise(partial_sums, masses), skip)
        attention = {f"attention/{variant}": vector for variant, vector in zeroed.items()}
        attention |= {f"attention/{v}{RENORM_SUFFIX}": renormalised[v] for v in RENORMALISED_VARIANTS}
        if artifacts is not None:
            split_sums, split_masses = artifact_sums(weights, values, artifacts, partial_sums, masses)
            bias = output_bias_term(layer)
            for end, sums in (("", split_sums), (RENORM_SUFFIX, renormalise(split_sums, split_masses))):
                attention |= {f"attention/{g}{end}": bias + contribution(layer, s) for g, s in sums.items()}
            masses = {**masses, **split_masses}
        averaged = isinstance(layer, PoolView) and layer.mean_from  # a mean that leaves the prefix out
        every = variant_names(
            0 if averaged else layout.num_registers, num_distillation=layout.num_distillation,
            num_cls=0 if averaged else layout.num_cls, skip=not isinstance(layer, PoolView),
            artifact=artifacts is not None,
        )  # fmt: skip
        names = [name for name in every if name.startswith("attention/")]
        # output readout of every variant in one pass; output/full starts from m = s + attention/full
        states = [skip + attention[name] if name == "attention/full" else attention[name] for name in names]
        outputs = output_readout(layer, final_norm, torch.cat(states)).split(skip.shape[0])
        result = {name: attention[name] for name in names}  # canonical order, empty groups dropped
        result |= {
            name.replace("attention/", "output/", 1): out for name, out in zip(names, outputs, strict=True)
        }
        result |= {f"split/{g}": masses[g].mean(dim=1) for g in split_groups(layout.num_distillation)}
        if artifacts is not None:
            result["split/artifact"] = masses["artifact"].mean(dim=1)
            result[ARTIFACT_COUNT] = artifacts.sum(dim=1).float()
        patch_weights = weights[:, :, layout.slice("patch")].mean(dim=1)
        result[ATTENTION_MAP] = patch_weights.view(-1, layout.grid_height, layout.grid_width)
    return result


def projection_readout(projection: nn.Module, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`projection/{variant}` = P `output/{variant}` for every output variant (float32 math)."""
    names = [name for name in outputs if name.startswith("output/")]
    with torch.autocast(device_type=outputs[names[0]].device.type, enabled=False):
        projected = applied(projection, torch.stack([outputs[name] for name in names]))
    return {
        name.replace("output/", f"{PROJECTION}/", 1): row for name, row in zip(names, projected, strict=True)
    }


def highest_norm_token(layer: HFBlock, block_input: Tensor, layout: TokenLayout) -> dict[str, Tensor]:
    """The `PENULTIMATE` entries: the non-[CLS] token of largest L2 norm in the last block's input
    (its sequence position, its norm, the mean norm of the other non-[CLS] tokens, its state before
    and after norm1)."""
    after_cls = layout.slice("cls").stop
    tokens = block_input[:, after_cls:].float()  # batch, distillation + registers + patches, hidden
    norms = tokens.norm(dim=-1)
    top_norm, top = norms.max(dim=1)
    top_state = tokens[torch.arange(tokens.shape[0], device=tokens.device), top]
    other_norm = (norms.sum(dim=1) - top_norm) / max(norms.shape[1] - 1, 1)
    values = (top + after_cls, top_norm, other_norm, top_state, applied(layer.norm1, top_state))
    return dict(zip(PENULTIMATE, values, strict=True))


def linear_input(
    final_norm: nn.Module, block_output: Tensor, cls_states: Tensor, layout: TokenLayout
) -> dict[str, Tensor]:
    """`LINEAR_INPUT_CLS` and `LINEAR_INPUT_PATCH_MEAN` of a [CLS] readout: DINOv2's
    `get_intermediate_layers(norm=True)` [CLS] rows of the last blocks (`cls_states` without the
    embeddings' row) and the mean of its patch tokens after the last block (`block_output`)."""
    blocks = cls_states[:, 1:][:, -LINEAR_INPUT_BLOCKS:]
    with torch.autocast(device_type=block_output.device.type, enabled=False):
        patches = applied(final_norm, block_output[:, layout.slice("patch")])
        return {LINEAR_INPUT_CLS: applied(final_norm, blocks), LINEAR_INPUT_PATCH_MEAN: patches.mean(dim=1)}


def applied(module: nn.Module, inputs: Tensor) -> Tensor:
    """Run `module` in its parameters' dtype (float32 without any) and return float32 (exact math
    under any precision)."""
    parameter = next(module.parameters(), None)
    return module(inputs.to(torch.float32 if parameter is None else parameter.dtype)).float()
