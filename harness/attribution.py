"""Attribution maps over the patches (issue 22, first part): per image, how much each patch is said
to have made the [CLS] output, by the field's maps; registers, distillation and [CLS] tokens are
never patches. Every map is (batch, grid_height, grid_width), float32, under `attribution/{map}`:

- `attention`: the last block's [CLS] attention over the patches, mean over heads (the paper's map,
  `map/attention`); `attention_heads` keeps the heads (batch, heads, grid_height, grid_width);
- `rollout` (Abnar & Zuidema 2020): R = B_L ... B_1 with B_l = 0.5 E_h[A_l] + 0.5 I, where A_l is
  block l's full attention, recomputed from its own queries and keys (the model's SDPA gives no
  weights; RoPE families rotate both as the model does); the [CLS] row of R over the patches;
- `chefer` (Chefer et al. 2021, "Generic attention-model explainability"): R = I, then for every
  block R <- R + E_h[(grad A_l * A_l)^+] R, the gradient of the target (`gradient_target`: a class
  score where the run has one, else the projection of `output/full` on its own detached direction)
  with respect to the attention weights the block used: grad A = grad O V^T per head, with O the
  block's attention output (the input of its output projection) and V its values, so no attention
  is materialised in the forward; the [CLS] row of R over the patches (a second, gradient pass);
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

The gradient maps explain a class where the run has class scores (`ClassScores`: a linear head's
logits, or the log of a k-NN bank's vote shares): the score of the class the clean output's scores
rank first (Chefer et al.'s "predicted class"); without them, the output itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from harness.decomposition import (
    DELETION_PREFIX,
    HFBlock,
    cls_attention,
    contribution,
    output_bias_term,
    per_head,
)
from harness.hooks import keeping, removed_after

if TYPE_CHECKING:
    from harness.backbone import DecomposingBackbone
    from harness.tokens import TokenLayout

ATTRIBUTION_PREFIX = "attribution/"
MAPS: tuple[str, ...] = (
    "attention", "rollout", "chefer", "integrated_gradients", "value_weighted", "contribution",
)  # fmt: skip
"""The maps of `attribution_maps`, each (batch, grid_height, grid_width); also `attention_heads`."""
INTEGRATION_STEPS = 32
"""Gauss-Legendre steps of the integrated gradients (captum's default method)."""


HEAD_MAP = "attention_head"
"""`attention_head{h}` (h = 1 ... heads): one head's map of `attention_heads`, scored like the others."""

EXPLAINED = "maps/explained"
"""The class the gradient maps explain and the perturbation curves follow, per image (batch,)."""

ClassScores = Callable[[Tensor], Tensor]
"""Class scores (n, classes) of pooled outputs (n, width), differentiable: a linear head's logits, or
the log of a k-NN bank's vote shares; their softmax is the probability of each class."""

SCORES: tuple[str, ...] = ("deletion", "insertion")
"""How a map is scored: its patches removed in its order (deletion), or only they kept (insertion)."""
SCORE_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
"""Shares of the patches removed or kept."""
MAP_ORDERS: tuple[str, ...] = ("top", "random", "bottom")
"""The orders every map of `MAPS` is scored in: its own (`top`), the random control (the same for
every map: seeded by dataset index, run once) and its reverse (`bottom`)."""
HEAD_ORDERS: tuple[str, ...] = ("top", "random")
"""The orders a single head's map is scored in: its own and the shared random control (no reverse:
one head's reversed curve would double the passes of a many-headed model for a control the
random one already gives)."""


def head_map_names(num_heads: int) -> tuple[str, ...]:
    """`attention_head1` ... `attention_head{num_heads}`."""
    return tuple(f"{HEAD_MAP}{head}" for head in range(1, num_heads + 1))


def class_scores_of(class_scores: ClassScores, pooled: Tensor) -> Tensor:
    """`class_scores` of pooled outputs in float32, outside any autocast (a k-NN vote's exp(s / 0.07)
    or a softmax in bf16 would round the probabilities the curves follow)."""
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        return class_scores(pooled.float()).float()


def gradient_target(pooled: Tensor, class_scores: ClassScores | None, explained: Tensor | None) -> Tensor:
    """What the gradient maps explain, per image (batch,): the class score of `explained` (batch,)
    classes where there are class scores, else the projection of the output on its own detached
    direction, <f, sg(f)> / ||sg(f)|| (whose gradient is that direction: the cosine to the detached
    output, the issue's wording, has zero gradient at the output itself)."""
    if class_scores is None or explained is None:
        return (pooled * nn.functional.normalize(pooled.detach(), dim=-1)).sum(dim=-1)
    return class_scores_of(class_scores, pooled).gather(1, explained.unsqueeze(1)).squeeze(1)


def explained_classes(class_scores: ClassScores | None, pooled: Tensor) -> Tensor | None:
    """The class each clean output's scores rank first (batch,), or None without class scores."""
    if class_scores is None:
        return None
    with torch.no_grad():
        return class_scores_of(class_scores, pooled.detach()).argmax(dim=-1)


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


def chefer_map(
    backbone: DecomposingBackbone, pixel_values: Tensor, layout: TokenLayout,
    class_scores: ClassScores | None = None,
) -> Tensor:  # fmt: skip
    """Chefer et al.'s relevance of the patches to the `gradient_target` (batch, patches), float32: one
    pass with gradients (the model's own weights stay frozen; only the activations enter the graph)."""
    recorder = _Gradients(backbone)
    with torch.enable_grad(), torch.inference_mode(False):
        pixels = pixel_values.detach().clone().requires_grad_(True)
        with recorder.attach():
            pooled = backbone.capture(pixels).pooled  # the model in eval mode, its flags restored
        target = gradient_target(pooled, class_scores, explained_classes(class_scores, pooled)).sum()
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
    backbone: DecomposingBackbone, pixel_values: Tensor, layout: TokenLayout,
    class_scores: ClassScores | None = None, steps: int = INTEGRATION_STEPS,
) -> Tensor:  # fmt: skip
    """Integrated gradients of the `gradient_target` of the clean image (its output's direction, or
    the class its scores rank first), from a black image to the image, pooled to the patches by a
    signed sum: (batch, patches), float32."""
    from captum.attr import IntegratedGradients  # only the attribution maps need it

    def target(pixels: Tensor, direction: Tensor, explained: Tensor) -> Tensor:
        pooled = backbone.capture(pixels).pooled
        if class_scores is None:
            return (pooled * direction).sum(dim=-1)
        return gradient_target(pooled, class_scores, explained)

    with torch.enable_grad(), torch.inference_mode(False):
        pixels = pixel_values.detach().clone()
        clean = backbone.capture(pixels).pooled.detach()
        direction = nn.functional.normalize(clean, dim=-1)
        explained = explained_classes(class_scores, clean)
        if explained is None:  # captum repeats every extra argument along the path: a tensor each
            explained = torch.zeros(clean.shape[0], dtype=torch.long, device=clean.device)
        attributions = IntegratedGradients(target).attribute(
            pixels, baselines=torch.zeros_like(pixels), additional_forward_args=(direction, explained),
            n_steps=steps,
        )  # fmt: skip
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


def attribution_maps(
    backbone: DecomposingBackbone, pixel_values: Tensor, class_scores: ClassScores | None = None
) -> dict[str, Tensor]:
    """Every map of `MAPS` (and `attention_heads`) for a batch, from one pass of the model and the
    gradient maps' passes (explaining a class where `class_scores` are given).

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
        "chefer": chefer_map(backbone, pixel_values, layout, class_scores),
        "integrated_gradients": integrated_gradients_map(backbone, pixel_values, layout, class_scores),
        "value_weighted": patch_terms.norm(dim=-1),
        "contribution": (patch_terms * direction.unsqueeze(1)).sum(dim=-1),
    }
    result = {ATTRIBUTION_PREFIX + name: value.reshape(batch, *grid) for name, value in maps.items()}
    result[ATTRIBUTION_PREFIX + "attention_heads"] = weights.reshape(batch, -1, *grid)
    return result


def scored_map_names(maps: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The maps perturbation and rank agreement score, by name: every `attribution/{map}` of `MAPS`
    in `maps`, and each head's map (`HEAD_MAP`) where `attribution/attention_heads` is there."""
    named = {name: maps[ATTRIBUTION_PREFIX + name] for name in MAPS if ATTRIBUTION_PREFIX + name in maps}
    heads = maps.get(ATTRIBUTION_PREFIX + "attention_heads")
    if heads is not None:
        named |= dict(zip(head_map_names(heads.shape[1]), heads.unbind(dim=1), strict=True))
    return named


def perturbation_curves(
    backbone: DecomposingBackbone, pixel_values: Tensor, maps: Mapping[str, Tensor], indices: Tensor,
    fractions: Sequence[float] = SCORE_FRACTIONS, seed: int = 0, class_scores: ClassScores | None = None,
) -> dict[str, Tensor]:  # fmt: skip
    """Every map scored by the same causal tests: `maps/{map}/{score}/{order}` (batch, fractions),
    the cosine to the full output of the model run with the round(f x patches) first patches of the
    order removed (`deletion`) or only those kept with [CLS] and registers (`insertion`); orders `top`
    (the map's highest first), `random` (seeded by dataset index: the control, run once and shared by
    every map) and `bottom` (its lowest first: the reversed control; not for one head's map,
    `HEAD_ORDERS`). With `class_scores`, also `.../{order}/probability` and `.../{order}/predicted`
    (`DecomposingBackbone.deletion_passes`), and `maps/explained` (batch,): the class the full
    output's scores rank first, whose probability the curves follow. `maps` holds
    `attribution/{map}` (batch, grid_height, grid_width) and `attribution/attention_heads`, e.g.
    from `attribution_maps`."""
    layout = backbone.layout_for(pixel_values)
    scored = scored_map_names(maps)
    curves: dict[str, Tensor] = {}
    with torch.no_grad():
        pooled = backbone.capture(pixel_values).pooled
        explained = explained_classes(class_scores, pooled)
        if explained is not None:
            curves[EXPLAINED] = explained
        for score in SCORES:

            def run(ranking: Tensor, orders: Sequence[str], score: str = score) -> dict[str, Tensor]:
                return backbone.deletion_passes(
                    pixel_values, ranking, pooled, layout, indices, fractions, seed,
                    insertion=score == "insertion", orders=orders, class_scores=class_scores,
                )  # fmt: skip

            control = run(next(iter(scored.values())), ("random",))  # the order ignores the map
            for name, values in scored.items():
                own = HEAD_ORDERS if name.startswith(HEAD_MAP) else MAP_ORDERS
                found = run(values, [order for order in own if order != "random"]) | control
                curves |= {
                    f"maps/{name}/{score}/{key.removeprefix(DELETION_PREFIX)}": value
                    for key, value in found.items()
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
    backbone: DecomposingBackbone, pixel_values: Tensor, indices: Tensor, seed: int = 0,
    class_scores: ClassScores | None = None,
) -> dict[str, Tensor]:  # fmt: skip
    """Every map (`attribution_maps`), its perturbation curves (`perturbation_curves`) and its rank
    agreement with the exact contribution map, `maps/{map}/rank_agreement` (batch,), for every map of
    `MAPS` and every head's (`head_map_names`)."""
    maps = attribution_maps(backbone, pixel_values, class_scores)
    reference = maps[ATTRIBUTION_PREFIX + "contribution"]
    scored = scored_map_names(maps)
    agreement = {f"maps/{name}/rank_agreement": rank_agreement(m, reference) for name, m in scored.items()}
    curves = perturbation_curves(backbone, pixel_values, maps, indices, seed=seed, class_scores=class_scores)
    return {**maps, **curves, **agreement}
