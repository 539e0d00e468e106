"""timm's `Eva` (EVA-02, Perception Encoder core): RoPE on the patches, SwiGLU, layer scale `gamma_1` /
`gamma_2`, read from the [CLS] row or by an attention pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from timm.layers import apply_rot_embed_cat
from timm.layers.attention import AttentionRope
from timm.models.eva import Eva, EvaAttention, EvaBlock
from torch import Tensor, nn

from harness.families.base import AttentionView, BlockView, UnitScale
from harness.families.timm_vit import TimmFamily, pooling_problem
from harness.tokens import TokenLayout

_PARTS = ("q", "k", "v")


class _Gamma(nn.Module):
    """EVA's layer scale (a bare parameter `gamma_1` / `gamma_2` of its block) under the
    decomposition's name (`lambda1`)."""

    def __init__(self, gamma: Tensor) -> None:
        super().__init__()
        self.lambda1 = gamma

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs * self.lambda1


class _InputPart(nn.Module):
    """q, k or v of an EVA attention, computed from the attention's input: rows of its fused `qkv`
    (with the biases it keeps apart, `q_bias` / `v_bias`) or its own projection, then the per-head
    norm (`q_norm` / `k_norm`). EVA applies its fused weights with `F.linear`, so no hook on a
    projection fires: a forward hook on this part goes on the block's `norm1` (whose output the
    attention reads) and computes the part there, in the model's own pass."""

    def __init__(self, attention: Any, part: int, norm1: nn.Module) -> None:
        super().__init__()
        self.attention: Any = attention
        self.part = part
        self._norm1 = [norm1]  # a reference, not a child
        self.norm = (attention.q_norm, attention.k_norm, nn.Identity())[part]

    def _weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        attention = self.attention
        if attention.qkv is None:
            projection = getattr(attention, f"{_PARTS[self.part]}_proj")
            return projection.weight, projection.bias
        width = attention.qkv.out_features // 3
        rows = slice(self.part * width, (self.part + 1) * width)
        if attention.qkv.bias is not None:
            return attention.qkv.weight[rows], attention.qkv.bias[rows]
        return attention.qkv.weight[rows], getattr(attention, f"{_PARTS[self.part]}_bias", None)

    def forward(self, inputs: Tensor) -> Tensor:
        weight, bias = self._weight_and_bias()
        projected = nn.functional.linear(inputs, weight, bias)
        return self.norm(projected.unflatten(-1, (self.attention.num_heads, -1))).flatten(-2)

    def register_forward_hook(self, hook: Any, **kwargs: Any) -> Any:
        def on_norm(module: nn.Module, inputs: Any, output: Tensor) -> Any:
            hook(self, (output,), self(output))

        return self._norm1[0].register_forward_hook(on_norm, **kwargs)


class EvaFamily(TimmFamily):
    """timm's `Eva` (EVA-02 `eva02_*`, Perception Encoder core `vit_pe_core_*`): pre-norm `EvaBlock`s
    with EVA's attention or timm's `AttentionRope` (q, k, v fused or apart, q_norm / k_norm), RoPE
    on the patch queries and keys (`attention_keys` / `attention_queries` rotate them with the
    model's own `rope` for the image's grid; [CLS] and registers unrotated), layer scale `gamma_1` /
    `gamma_2` where present, `norm_pre` the sequence entering the first block. Read from the [CLS]
    row (`global_pool='token'`: `fc_norm(norm(x))`) or by its `AttentionPoolLatent` over every
    token (`'map'`, PE-core). Refused: a norm or gate between the attention and its output
    projection (EVA-02-CLIP's `scale_attn_inner`: the heads' outputs are normalised together, so
    the update is not a sum over tokens), grouped-query attention, per-block RoPE (`rope_mixed`)."""

    name = "eva"
    model_types = (Eva,)
    short_names: ClassVar[Mapping[str, str]] = {  # Meta's Perception Encoder core image towers, in timm
        "pe_core_b16": "timm:vit_pe_core_base_patch16_224.fb",
        "pe_core_l14": "timm:vit_pe_core_large_patch14_336.fb",
        "pe_core_g14": "timm:vit_pe_core_gigantic_patch14_448.fb",
    }
    takes_extra_tokens = False  # its RoPE counts the prefix from the start: an inserted token is a patch

    @staticmethod
    def unsupported(model: Any) -> str:
        if problem := pooling_problem(model, model.cls_token is not None):
            return problem
        if getattr(model, "rope_mixed", False):
            return "a RoPE of its own per block"
        for block in model.blocks:
            attention = block.attn
            if type(block) is not EvaBlock or type(attention) not in (EvaAttention, AttentionRope):
                return f"{type(block).__name__} blocks with {type(attention).__name__}, not pre-norm EvaBlock"
            if not isinstance(attention.norm, nn.Identity) or attention.gate is not None:
                return "a norm or gate between attention and its output projection"
            if getattr(attention, "num_kv_groups", 1) != 1:
                return "grouped-query attention"
        return ""

    def prefix(self) -> tuple[int, int]:
        cls = int(self.model.cls_token is not None)
        return cls, self.model.num_prefix_tokens - cls

    def view(self, block: Any) -> Any:
        attention = block.attn
        query, key, value = (_InputPart(attention, part, block.norm1) for part in range(3))
        view = AttentionView(query, key, value, attention.proj, attention.num_heads, attention.head_dim,
                             attention.scale)  # fmt: skip
        scales = [
            _Gamma(gamma) if gamma is not None else UnitScale(attention.proj)
            for gamma in (block.gamma_1, block.gamma_2)
        ]
        return BlockView(block.norm1, view, scales[0], block.norm2, block.mlp, scales[1])

    def embed(self, pixel_values: Tensor) -> Tensor:
        model = self.model
        tokens, _ = model._pos_embed(model.patch_embed(pixel_values))
        return model.norm_pre(tokens)

    def rope(self, layout: TokenLayout) -> Tensor | None:
        """The model's own rotary embedding for `layout`'s patch grid, (patches, 2 x head width): sines
        then cosines; None for a model without RoPE."""
        rope = self.model.rope
        if rope is None:
            return None
        grid = (layout.grid_height, layout.grid_width)
        return rope.get_embed(shape=grid) if self.model.dynamic_img_size else rope.get_embed()

    def attention_keys(self, keys: Tensor, layout: TokenLayout) -> Tensor:
        return self._rotated(keys, layout)

    def attention_queries(self, queries: Tensor, layout: TokenLayout) -> Tensor:
        return self._rotated(queries, layout)

    def _rotated(self, projections: Tensor, layout: TokenLayout) -> Tensor:
        """Query or key projections (after q_norm / k_norm) with the patches' rotated as the model
        rotates them ([CLS] and registers not), float32."""
        embedding = self.rope(layout)
        if embedding is None:
            return projections
        batch, tokens, hidden = projections.shape
        heads = self.model.blocks[0].attn.num_heads
        per_head = projections.float().view(batch, tokens, heads, -1).transpose(1, 2)
        prefix = layout.slice("patch").start
        half = getattr(self.model.blocks[0].attn, "rotate_half", False)
        patches = apply_rot_embed_cat(
            per_head[:, :, prefix:], embedding.to(per_head.device).float(), half=half
        )
        return (
            torch.cat((per_head[:, :, :prefix], patches), dim=2)
            .transpose(1, 2)
            .reshape(batch, tokens, hidden)
        )

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        embedding = self.rope(layout)
        if embedding is not None:
            embedding = embedding.to(tokens.device)
            if patches is not None:  # each row's own patches: (batch, 1, kept, 2 x head width)
                embedding = embedding[patches].unsqueeze(1)
        for block in self.model.blocks:
            tokens = block(tokens, rope=embedding)
        return tokens
