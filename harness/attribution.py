"""Attribution maps over the patches (issue 22, first part): per image, how much each patch is said
to have made the [CLS] output, by the field's maps; registers, distillation and [CLS] tokens are
never patches. Every map is (batch, grid_height, grid_width), float32, under `attribution/{map}`:

- `attention`: the last block's [CLS] attention over the patches, mean over heads (the paper's map,
  `map/attention`); `attention_heads` keeps the heads (batch, heads, grid_height, grid_width);
- `rollout` (Abnar & Zuidema 2020): R = B_L ... B_1 with B_l = 0.5 E_h[A_l] + 0.5 I, where A_l is
  block l's full attention, recomputed from its own queries and keys (the model's SDPA gives no
  weights; RoPE families rotate both as the model does); the [CLS] row of R over the patches;
- `chefer` (Chefer et al. 2021, "Generic attention-model explainability"): R = I, then for every
  block R <- R + E_h[(grad A_l * A_l)^+] R, the gradient of the target (the projection of
  `output/full` on its own detached direction, <f, sg(f)> / ||sg(f)||, whose gradient is the output's
  direction: the cosine to the detached output has zero gradient at the output itself) with respect
  to the attention weights the block used: grad A = grad O V^T per head, with O the block's attention
  output (the input of its output projection) and V its values, so no attention is materialised in
  the forward; the [CLS] row of R over the patches (a second, gradient pass);
- `integrated_gradients` (Sundararajan et al. 2017, through captum): the same target's integrated
  gradients along the straight path from a black image (zeros after normalisation: the dataset's mean
  colour) to the image, summed over the channels and the pixels of each patch (signed, so the patches
  sum to the target's change along the path); `INTEGRATION_STEPS` gradient passes;
- `value_weighted` (Kobayashi et al. 2020): ||c_j||, the norm of patch j's exact contribution to the
  last [CLS] update, c_j = gamma1 W_o concat_h(a^h_j v^h_j) (the decomposition's terms, one token at a
  time: the patch group's c_patch = sum_j c_j);
- `contribution`: <c_j, u>, c_j projected on the direction u of the [CLS] update (`attention/full`):
  the signed share of the update each patch makes (they sum, with the other groups' and the bias's,
  to ||attention/full||).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from harness.decomposition import HFBlock, cls_attention, contribution, output_bias_term, per_head
from harness.hooks import keeping, removed_after

if TYPE_CHECKING:
    from harness.backbone import DecomposingBackbone
    from harness.tokens import TokenLayout

ATTRIBUTION_PREFIX = "attribution/"
MAPS: tuple[str, ...] = (
    "attention", "rollout", "chefer", "integrated_gradients", "value_weighted", "contribution",
)  # fmt: skip
INTEGRATION_STEPS = 32
"""Gauss-Legendre steps of the integrated gradients (captum's default method)."""
"""The maps of `attribution_maps`, each (batch, grid_height, grid_width); also `attention_heads`."""


SCORES: tuple[str, ...] = ("deletion", "insertion")
"""How a map is scored: its patches removed in its order (deletion), or only they kept (insertion)."""
SCORE_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
"""Shares of the patches removed or kept."""


def attention_matrix(view: HFBlock, queries: Tensor, keys: Tensor) -> Tensor:
    """Post-softmax attention of every query over every key, per head: (batch, heads, tokens, tokens),
    float32, from a block's query and key projections (as its softmax sees them)."""
    attention = view.attention
    heads = attention.num_attention_heads
    logits = per_head(queries, heads) @ per_head(keys, heads).transpose(-1, -2)
    return (logits * attention.scaling).softmax(dim=-1)


def rollout_step(rollout: Tensor | None, attention: Tensor) -> Tensor:
    """R <- (0.5 E_h[A] + 0.5 I) R: one block of Abnar & Zuidema's rollout (R = I before the first)."""
    mixed = 0.5 * attention.mean(dim=1) + 0.5 * torch.eye(attention.shape[-1], device=attention.device)
    return mixed if rollout is None else mixed @ rollout


class RolloutHooks:
    """Forward hooks on every block's query and key projections for one pass: each block's full
    attention is folded into the rollout as the block ends, and dropped (one block's at a time)."""

    def __init__(self, backbone: DecomposingBackbone, layout: TokenLayout) -> None:
        self.backbone, self.layout = backbone, layout
        self.kept: dict[str, Tensor] = {}
        self.rollout: Tensor | None = None

    @contextlib.contextmanager
    def attach(self) -> Iterator[None]:
        family, backbone = self.backbone.family, self.backbone
        handles = []
        for number, block in enumerate(family.blocks, start=1):
            view = backbone.view(number)
            handles += [
                view.attention.q_proj.register_forward_hook(keeping(self.kept, "queries")),
                view.attention.k_proj.register_forward_hook(keeping(self.kept, "keys")),
                block.register_forward_hook(self._fold(view)),
            ]
        with removed_after(handles):
            yield

    def _fold(self, view: HFBlock) -> Any:
        def fold(module: nn.Module, inputs: Any, output: Tensor) -> None:
            family = self.backbone.family
            queries = family.attention_queries(self.kept.pop("queries"), self.layout)
            keys = family.attention_keys(self.kept.pop("keys"), self.layout)
            with torch.autocast(device_type=queries.device.type, enabled=False):
                self.rollout = rollout_step(self.rollout, attention_matrix(view, queries, keys))

        return fold


def chefer_step(relevance: Tensor | None, attention: Tensor, gradient: Tensor) -> Tensor:
    """R <- R + E_h[(grad A * A)^+] R: one block of Chefer et al.'s relevance (R = I before the first)."""
    weighted = (gradient * attention).clamp_min(0).mean(dim=1)  # batch, tokens, tokens
    if relevance is None:
        relevance = torch.eye(attention.shape[-1], device=attention.device).expand_as(weighted)
    return relevance + weighted @ relevance


class _Gradients:
    """Forward hooks on every block for one pass with gradients: each block's queries, keys, values
    and attention output (the input of its output projection, kept in the graph)."""

    def __init__(self, backbone: DecomposingBackbone) -> None:
        self.backbone = backbone
        self.kept: list[dict[str, Tensor]] = []

    @contextlib.contextmanager
    def attach(self) -> Iterator[None]:
        handles = []
        for number in range(1, self.backbone.info.num_layers + 1):
            view = self.backbone.view(number)
            parts: dict[str, Tensor] = {}
            self.kept.append(parts)
            handles += [
                view.attention.q_proj.register_forward_hook(keeping(parts, "queries")),
                view.attention.k_proj.register_forward_hook(keeping(parts, "keys")),
                view.attention.v_proj.register_forward_hook(keeping(parts, "values")),
                view.attention.o_proj.register_forward_pre_hook(keeping(parts, "heads")),
            ]
        with removed_after(handles):
            yield


def chefer_map(backbone: DecomposingBackbone, pixel_values: Tensor, layout: TokenLayout) -> Tensor:
    """Chefer et al.'s relevance of the patches to the output (batch, patches), float32: one pass with
    gradients (the model's own weights stay frozen; only the activations enter the graph)."""
    recorder = _Gradients(backbone)
    with torch.enable_grad(), torch.inference_mode(False):
        pixels = pixel_values.detach().clone().requires_grad_(True)
        with recorder.attach():
            pooled = backbone.capture(pixels).pooled  # the model in eval mode, its flags restored
        direction = nn.functional.normalize(pooled.detach(), dim=-1)
        target = (pooled * direction).sum()
        heads = [parts["heads"] for parts in recorder.kept]
        gradients = torch.autograd.grad(target, heads)
    relevance: Tensor | None = None
    family = backbone.family
    for number, (parts, gradient) in enumerate(zip(recorder.kept, gradients, strict=True), start=1):
        view = backbone.view(number)
        queries = family.attention_queries(parts["queries"].detach(), layout)
        keys = family.attention_keys(parts["keys"].detach(), layout)
        heads = view.attention.num_attention_heads
        attention_gradient = per_head(gradient, heads) @ per_head(parts["values"].detach(), heads).transpose(
            -1, -2
        )
        relevance = chefer_step(relevance, attention_matrix(view, queries, keys), attention_gradient)
    assert relevance is not None  # the model has blocks
    return relevance[:, 0, layout.slice("patch")]


def integrated_gradients_map(
    backbone: DecomposingBackbone, pixel_values: Tensor, layout: TokenLayout, steps: int = INTEGRATION_STEPS
) -> Tensor:
    """Integrated gradients of the output's projection on its own (clean, detached) direction, from a
    black image to the image, pooled to the patches by a signed sum: (batch, patches), float32."""
    from captum.attr import IntegratedGradients  # only the attribution maps need it

    def projection(pixels: Tensor, direction: Tensor) -> Tensor:
        return (backbone.capture(pixels).pooled * direction).sum(dim=-1)

    with torch.enable_grad(), torch.inference_mode(False):
        pixels = pixel_values.detach().clone()
        direction = nn.functional.normalize(backbone.capture(pixels).pooled.detach(), dim=-1)
        attributions = IntegratedGradients(projection).attribute(
            pixels, baselines=torch.zeros_like(pixels), additional_forward_args=(direction,), n_steps=steps
        )
    patch = backbone.patch_size
    per_pixel = attributions.detach().float().sum(dim=1)  # batch, height, width
    batch = per_pixel.shape[0]
    cells = per_pixel.view(batch, layout.grid_height, patch, layout.grid_width, patch).sum(dim=(2, 4))
    return cells.flatten(1)


def token_contributions(view: HFBlock, block_input: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """c_j = gamma1 W_o concat_h(a^h_j v^h_j) for every token j of a block's [CLS] update: (batch,
    tokens, hidden), float32 (the decomposition's c_g, one token at a time)."""
    weights = cls_attention(view, block_input, keys)  # batch, heads, tokens
    batch, heads, tokens = weights.shape
    weighted = (weights.unsqueeze(-1) * per_head(values, heads)).permute(
        0, 2, 1, 3
    )  # batch, tokens, heads, width
    return contribution(view, weighted.reshape(batch * tokens, heads, -1)).view(batch, tokens, -1)


def attribution_maps(backbone: DecomposingBackbone, pixel_values: Tensor) -> dict[str, Tensor]:
    """Every map of `MAPS` (and `attention_heads`) for a batch, from one pass of the model.

    Returns:
        `attribution/{map}` -> (batch, grid_height, grid_width), float32.
    """
    layout = backbone.layout_for(pixel_values)
    recorder = RolloutHooks(backbone, layout)
    with recorder.attach():
        capture = backbone.capture(pixel_values)
    assert recorder.rollout is not None  # every block ran
    view, patches = backbone.last_block, layout.slice("patch")
    grid = (layout.grid_height, layout.grid_width)
    with torch.autocast(device_type=pixel_values.device.type, enabled=False):
        weights = cls_attention(view, capture.block_input, capture.keys)[
            :, :, patches
        ]  # batch, heads, patches
        contributions = token_contributions(view, capture.block_input, capture.keys, capture.values)
        update = contributions.sum(dim=1) + output_bias_term(view)  # attention/full
        direction = nn.functional.normalize(update, dim=-1)
        patch_terms = contributions[:, patches]
    batch = pixel_values.shape[0]
    maps = {
        "attention": weights.mean(dim=1),
        "rollout": recorder.rollout[:, 0, patches],
        "chefer": chefer_map(backbone, pixel_values, layout),
        "integrated_gradients": integrated_gradients_map(backbone, pixel_values, layout),
        "value_weighted": patch_terms.norm(dim=-1),
        "contribution": (patch_terms * direction.unsqueeze(1)).sum(dim=-1),
    }
    result = {ATTRIBUTION_PREFIX + name: value.reshape(batch, *grid) for name, value in maps.items()}
    result[ATTRIBUTION_PREFIX + "attention_heads"] = weights.reshape(batch, -1, *grid)
    return result


def perturbation_curves(
    backbone: DecomposingBackbone, pixel_values: Tensor, maps: Mapping[str, Tensor], indices: Tensor,
    fractions: Sequence[float] = SCORE_FRACTIONS, seed: int = 0,
) -> dict[str, Tensor]:  # fmt: skip
    """Every map scored by the same causal tests: `maps/{map}/{score}/{order}` (batch, fractions),
    the cosine to the full output of the model run with the round(f x patches) first patches of the
    order removed (`deletion`) or only those kept with [CLS] and registers (`insertion`); orders `top`
    (the map's highest first), `random` (seeded by dataset index: the control) and `bottom` (its
    lowest first: the reversed control). `maps` holds `attribution/{map}` (batch, grid_height,
    grid_width), e.g. from `attribution_maps`."""
    layout = backbone.layout_for(pixel_values)
    with torch.no_grad():
        pooled = backbone.capture(pixel_values).pooled
    curves: dict[str, Tensor] = {}
    for name, values in maps.items():
        if values.dim() != 3:  # per-head maps are not scored
            continue
        map_name = name.removeprefix(ATTRIBUTION_PREFIX)
        for score in SCORES:
            with torch.no_grad():
                passes = backbone.deletion_passes(
                    pixel_values,
                    values,
                    pooled,
                    layout,
                    indices,
                    fractions,
                    seed,
                    insertion=score == "insertion",
                )
            curves |= {
                f"maps/{map_name}/{score}/{key.split('/')[-1]}": cosines for key, cosines in passes.items()
            }
    return curves


def rank_agreement(first: Tensor, second: Tensor) -> Tensor:
    """Spearman's rank correlation of two maps over the patches, per image (batch,): the Pearson
    correlation of their ranks (ties broken by position)."""
    ranks = [
        values.flatten(1).argsort(dim=1, stable=True).argsort(dim=1).double() for values in (first, second)
    ]
    centred = [rank - rank.mean(dim=1, keepdim=True) for rank in ranks]
    return nn.functional.cosine_similarity(centred[0], centred[1], dim=1).float()


def scored_maps(
    backbone: DecomposingBackbone, pixel_values: Tensor, indices: Tensor, seed: int = 0
) -> dict[str, Tensor]:
    """Every map (`attribution_maps`), its perturbation curves (`perturbation_curves`) and its rank
    agreement with the exact contribution map, `maps/{map}/rank_agreement` (batch,)."""
    maps = attribution_maps(backbone, pixel_values)
    reference = maps[ATTRIBUTION_PREFIX + "contribution"]
    agreement = {
        f"maps/{name}/rank_agreement": rank_agreement(maps[ATTRIBUTION_PREFIX + name], reference)
        for name in MAPS
    }
    return {**maps, **perturbation_curves(backbone, pixel_values, maps, indices, seed=seed), **agreement}
