"""Independent references for the pooled and timm families' tests: the attention-pooling heads
recomputed from their own modules as their papers describe them, and every block's [CLS] attention
row as timm's own non-fused softmax computes it."""

from __future__ import annotations

from torch import Tensor, nn

from harness import DecomposingBackbone


def pool_reference(backbone: DecomposingBackbone, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pool recomputed from its own parameters: (its input tokens, the per-head attention of
    the latent over them (batch, heads, tokens), its attention output before the MLP)."""
    family = backbone.family
    kept: list[Tensor] = []
    pool = family.pool_view()
    assert pool is not None
    handle = pool.module.register_forward_pre_hook(lambda module, inputs: kept.append(inputs[0]))
    try:
        family.pooled(pixels)
    finally:
        handle.remove()
    tokens = kept[0]
    module = pool.module
    if isinstance(getattr(module, "attention", None), nn.MultiheadAttention):  # SigLIP's head
        latent = module.probe.expand(tokens.shape[0], -1, -1)
        attention = module.attention
        output, weights = attention(latent, tokens, tokens, need_weights=True, average_attn_weights=False)
        return tokens, weights[:, :, 0], output[:, 0]
    if hasattr(module, "output_proj"):  # AIMv2's head: the latent is the query, written out
        heads = module.num_heads
        query = module.cls_token.unflatten(-1, (heads, -1)).transpose(1, 2)  # 1, heads, 1, width
        key, value = (
            p(tokens).unflatten(-1, (heads, -1)).transpose(1, 2) for p in (module.k_proj, module.v_proj)
        )
        weights = ((query @ key.transpose(-1, -2)) * query.shape[-1] ** -0.5).softmax(dim=-1)
        output = module.output_proj((weights @ value).transpose(1, 2).flatten(2))
        return tokens, weights[:, :, 0], output[:, 0]
    heads = module.num_heads  # timm's AttentionPoolLatent, written out
    query = module.q_norm(module.q(module.latent).unflatten(-1, (heads, -1)).transpose(1, 2))
    key, value = module.kv(tokens).unflatten(-1, (2, heads, -1)).permute(2, 0, 3, 1, 4)
    key = module.k_norm(key)
    weights = ((query * module.scale) @ key.transpose(-1, -2)).softmax(dim=-1)  # batch, heads, 1, tokens
    output = module.proj((weights @ value).transpose(1, 2).flatten(2))
    return tokens, weights[:, :, 0], output[:, 0]


def own_cls_rows(model: nn.Module, pixels: Tensor) -> list[Tensor]:
    """Every block's attention row of the first token ([CLS]) as a timm model computes it (its non-fused
    softmax, read at `attn_drop`; timm's `Attention`, EVA's and `AttentionRope`): (batch, heads, tokens)
    per block."""
    rows: list[Tensor] = []
    handles = []
    for block in model.blocks:
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(lambda m, i, o: rows.append(o[:, :, 0])))
    try:
        model.forward_features(pixels)
    finally:
        for handle in handles:
            handle.remove()
        for block in model.blocks:
            block.attn.fused_attn = True
    return rows
