"""What an attribution map is (`AttributionMap`: a class that registers itself by name, `MAPS`), and
what every map of one call shares (`MapCall`): the clean pass, the class it explains, and one gradient
pass for every map that reads the attention's gradients.

A map says, per image, how much each patch made the [CLS] output: (batch, patches), float32, in the
patch order of the token layout; registers, distillation and [CLS] tokens are never patches. The
gradient maps explain a class where the call has class scores (a linear head's logits, or the log of
a k-NN bank's vote shares): the score of the class the clean output's scores rank first (Chefer et
al.'s "predicted class"); without them, the output itself (`gradient_target`).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.backbone import DecomposingBackbone
from harness.capture import Capture
from harness.decomposition import HFBlock, cls_attention, contribution, output_bias_term, per_head
from harness.extras.scores import ClassScores, class_scores_of
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout

MAPS: dict[str, type[AttributionMap]] = {}
"""Map name -> class, filled as the package's modules define them; `map_names` gives their order."""
RESERVED: frozenset[str] = frozenset({"random", "full", "explained"})
"""Names no map may take: the random control's and the probe's other results'."""


class AttributionMap(ABC):
    """One attribution map. A subclass that sets `name` registers itself (a new map is one file of
    this package, which imports every module in it).

    Attributes:
        name: its name (`--maps`, results `maps/{name}/...`, entries `attribution/{name}`).
        position: where it sits among the maps (figures, results, the default `--maps`).
        description: one line for `--help` and the README.
        reads_cls_rows: whether it reads the [CLS] row of the blocks' attention (rollout, Chefer,
            LeGrad): it explains the [CLS] readout only, not an attention-pooling head's.
        signed: whether its values have a sign that means something (a patch writing against the
            output: `contribution`, `integrated_gradients`): drawn on a diverging scale centred at 0.
    """

    name: ClassVar[str]
    position: ClassVar[int] = 1000
    description: ClassVar[str]
    reads_cls_rows: ClassVar[bool] = False
    signed: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return
        if cls.name in RESERVED or "/" in cls.name:
            raise TypeError(f"{cls.name!r} cannot name a map")
        known = MAPS.get(cls.name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"two attribution maps are named {cls.name!r}")
        MAPS[cls.name] = cls

    def problem(self, backbone: DecomposingBackbone) -> str | None:
        """Why it cannot explain `backbone` (a part its rules do not cover), or None: by default none
        (a pooled model is `reads_cls_rows`' matter)."""
        return None

    def tap(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Tap | None:
        """What it reads in the clean pass (a fresh tap each call, in `MapCall.taps`); none by default."""
        return None

    @abstractmethod
    def attribute(self, call: MapCall) -> Tensor:
        """Its map of the call's images: (batch, patches), float32."""


def map_names() -> tuple[str, ...]:
    """Every registered map, in order (`AttributionMap.position`, then name)."""
    return tuple(sorted(MAPS, key=lambda name: (MAPS[name].position, name)))


def gradient_target(pooled: Tensor, class_scores: ClassScores | None, explained: Tensor | None) -> Tensor:
    """What the gradient maps explain, per image (batch,): the class score of `explained` (batch,)
    classes where there are class scores, else the projection of the output on its own detached
    direction, <f, sg(f)> / ||sg(f)|| (whose gradient is that direction: the cosine to the detached
    output has zero gradient at the output itself)."""
    if class_scores is None or explained is None:
        return (pooled * nn.functional.normalize(pooled.detach(), dim=-1)).sum(dim=-1)
    return class_scores_of(class_scores, pooled).gather(1, explained.unsqueeze(1)).squeeze(1)


def attention_matrix(view: HFBlock, queries: Tensor, keys: Tensor) -> Tensor:
    """Post-softmax attention of every query over every key, per head: (batch, heads, tokens, tokens),
    float32, from a block's queries and keys as its softmax sees them."""
    attention = view.attention
    heads = attention.num_attention_heads
    logits = per_head(queries, heads) @ per_head(keys, heads).transpose(-1, -2)
    return (logits * attention.scaling).softmax(dim=-1)


def token_contributions(view: HFBlock, block_input: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """c_j = gamma1 W_o concat_h(a^h_j v^h_j) for every token j of a block's [CLS] update: (batch,
    tokens, hidden), float32 (the decomposition's c_g, one token at a time)."""
    weights = cls_attention(view, block_input, keys)  # batch, heads, tokens
    batch, heads, tokens = weights.shape
    weighted = (weights.unsqueeze(-1) * per_head(values, heads)).permute(
        0, 2, 1, 3
    )  # batch, tokens, heads, width
    return contribution(view, weighted.reshape(batch * tokens, heads, -1)).view(batch, tokens, -1)


@dataclass(frozen=True)
class BlockGradient:
    """One block in the gradient pass: its queries and keys (as its softmax sees them) and values,
    detached, and the gradient of the target with respect to its attention output."""

    queries: Tensor
    keys: Tensor
    values: Tensor
    gradient: Tensor


class _Gradients(Tap):
    """Every block's queries, keys, values and attention output, kept in the graph of one pass."""

    reads = frozenset({"queries", "keys", "values", "heads"})

    def __init__(self, num_layers: int) -> None:
        self.blocks = tuple(range(1, num_layers + 1))
        self.parts: list[BlockParts] = []

    def leave(self, parts: BlockParts) -> None:
        self.parts.append(parts)


class MapCall:
    """What every map of one call reads: the call's clean pass and the class each image is explained
    for, and what two maps would otherwise compute twice (cached here for the call).

    Args:
        backbone: the decomposing backbone.
        pixel_values: the batch's images.
        capture: the call's clean pass.
        class_scores: the class scores the gradient maps explain (None: the output itself).
        explained: the class each image is explained for (None without class scores).
        taps: each map's tap of the clean pass, by map name.
    """

    def __init__(
        self, backbone: DecomposingBackbone, pixel_values: Tensor, capture: Capture,
        class_scores: ClassScores | None, explained: Tensor | None, taps: Mapping[str, Tap],
    ) -> None:  # fmt: skip
        self.backbone, self.pixel_values, self.capture = backbone, pixel_values, capture
        self.class_scores, self.explained, self.taps = class_scores, explained, taps
        self.layout = capture.layout

    def target(self, pooled: Tensor) -> Tensor:
        """The gradient maps' target of pooled outputs of the call's images (batch,) (the explained
        classes copied: they may come from a pass under inference mode, which autograd cannot save)."""
        explained = None if self.explained is None else self.explained.clone()
        return gradient_target(pooled, self.class_scores, explained)

    @functools.cached_property
    def patch_attention(self) -> Tensor:
        """The last block's [CLS] attention over the patches, per head: (batch, heads, patches)."""
        capture = self.capture
        with torch.autocast(device_type=capture.keys.device.type, enabled=False):
            weights = cls_attention(self.backbone.read_view, capture.block_input, capture.keys)
        return weights[:, :, self.layout.slice("patch")]

    @functools.cached_property
    def patch_terms(self) -> tuple[Tensor, Tensor]:
        """Each patch's exact contribution c_j to the last [CLS] update (batch, patches, hidden), and
        the direction of that update, `attention/full` (batch, hidden)."""
        capture, view = self.capture, self.backbone.read_view
        with torch.autocast(device_type=capture.keys.device.type, enabled=False):
            contributions = token_contributions(view, capture.block_input, capture.keys, capture.values)
            update = contributions.sum(dim=1) + output_bias_term(view)
        return contributions[:, self.layout.slice("patch")], nn.functional.normalize(update, dim=-1)

    @functools.cached_property
    def gradients(self) -> tuple[BlockGradient, ...]:
        """One pass with gradients through the model's own blocks (its weights stay frozen: only the
        activations enter the graph): every block's `BlockGradient`, for the target of each image."""
        tap = _Gradients(self.backbone.info.num_layers)
        with torch.enable_grad(), torch.inference_mode(False):
            pixels = self.pixel_values.detach().clone().requires_grad_(True)
            pooled = self.backbone.pooled(pixels, [tap])
            gradients = torch.autograd.grad(self.target(pooled).sum(), [p.read("heads") for p in tap.parts])
        return tuple(
            BlockGradient(p.read("queries").detach(), p.read("keys").detach(), p.read("values").detach(), g)
            for p, g in zip(tap.parts, gradients, strict=True)
        )

    def attention(self, number: int) -> Tensor:
        """Block `number`'s attention A in the gradient pass: (batch, heads, tokens, tokens)."""
        view, parts = self.backbone.view(number), self.gradients[number - 1]
        with torch.autocast(device_type=parts.keys.device.type, enabled=False):
            return attention_matrix(view, parts.queries, parts.keys)

    def attention_gradient(self, number: int) -> Tensor:
        """The target's gradient with respect to block `number`'s attention A: (batch, heads, tokens,
        tokens), grad A = grad O V^T per head, O the block's attention output and V its values (no
        attention materialised in the model's pass)."""
        heads = self.backbone.view(number).attention.num_attention_heads
        parts = self.gradients[number - 1]
        with torch.autocast(device_type=parts.values.device.type, enabled=False):
            return per_head(parts.gradient, heads) @ per_head(parts.values, heads).transpose(-1, -2)
