"""`attnlrp` (Achtibat et al. 2024, "AttnLRP: attention-aware layer-wise relevance propagation for
transformers", ICML): the relevance of each patch token entering the first block for the target
(`gradient_target`), written from the paper's rules for the layers these families use, as LXT's
efficient implementation applies them (gradient x input through a forward whose backward the rules
shape; LXT itself reads torchvision's ViT only, by patching torch's classes process-wide, so none of
these families):

- linear layers (projections, layer scale, head): the epsilon rule, which gradient x input is;
- LayerNorm / RMSNorm: the identity rule on the normalisation, its standard deviation (RMS) held
  constant (`linear_norm`);
- the MLP's element-wise non-linearity: the identity rule, and a gated MLP's product of two
  pre-activations the uniform rule, half the relevance to each (`_MlpRules`: the MLP's output projection
  gets sum_i f_i (h / f_i).detach() / k over its k pre-activations f_i, the same value as h);
- inside the attention, CP-LRP (LXT's choice for ViTs): the attention weights held constant, the
  relevance flowing through the values only. The weights are the model's own (its queries and keys as
  its softmax saw them in the clean pass, RoPE included: the map's tap).

Each block is run again from the family's view (x + ls1(W_o(A v(norm1 x))), then + ls2(mlp(norm2 x))),
then the readout: the [CLS] row's final norm, or an attention-pooling head or the token mean on the
final-normed tokens (`relevance_pool`, its weights held as the blocks' are), so the relevance of the
tokens entering block 1 sums to the target minus what the biases take (conservation: exact for a
model without biases, tested). The map is the patch tokens' relevance summed over the hidden
dimension: signed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from harness.backbone import DecomposingBackbone
from harness.decomposition import HFBlock, applied, cls_attention, per_head
from harness.extras.attribution.maps import AttributionMap, MapCall, attention_matrix
from harness.families.base import NoMLP, PoolView, mlp_output
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout

MLP_INPUTS: tuple[str, ...] = ("fc1", "up_proj", "c_fc", "gate_proj", "fc1_g", "fc1_x", "weights_in")
"""The names the families' MLPs give their input projections (one, two for a gated MLP, or one packed
with both halves: `weights_in` of DINOv2's SwiGLU, timm's `GluMlp` fc1)."""


def norm_parts(norm: nn.Module) -> list[nn.Module]:
    """The norms `norm` applies in turn, each a LayerNorm or an RMSNorm (a `Sequential`'s parts, none
    for `Identity`): what `linear_norm` holds the scale of.

    Raises:
        ValueError: a norm of another kind.
    """
    if isinstance(norm, nn.Identity):
        return []
    if isinstance(norm, nn.Sequential):
        return [inner for part in norm for inner in norm_parts(part)]
    if isinstance(norm, nn.LayerNorm) or "RMSNorm" in type(norm).__name__:
        return [norm]
    raise ValueError(f"AttnLRP has no rule for the norm {type(norm).__name__}")


def linear_norm(norm: nn.Module, inputs: Tensor) -> Tensor:
    """`norm` of `inputs` with its standard deviation (LayerNorm) or root mean square (RMSNorm) held
    constant: the same value, the identity rule's gradient; a `Sequential` of norms in turn.

    Raises:
        ValueError: a norm of another kind (`norm_parts`).
    """
    for part in norm_parts(norm):
        if isinstance(part, nn.LayerNorm):
            centred = inputs - inputs.mean(dim=-1, keepdim=True)
            normed = centred / (centred.pow(2).mean(dim=-1, keepdim=True) + part.eps).sqrt().detach()
        else:
            eps = getattr(part, "variance_epsilon", None) or getattr(part, "eps", None) or 1e-6
            normed = inputs / (inputs.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt().detach()
        weight, bias = getattr(part, "weight", None), getattr(part, "bias", None)
        if weight is not None:
            normed = normed * weight.float()
        inputs = normed + bias.float() if bias is not None else normed
    return inputs


def mlp_inputs(mlp: nn.Module) -> tuple[list[nn.Linear], bool]:
    """The MLP's input projections (`MLP_INPUTS`) and whether one of them is packed (its output both
    halves of a gated product).

    Raises:
        ValueError: none found, a norm inside the MLP, or widths that make no MLP of these forms.
    """
    inputs = [layer for name in MLP_INPUTS if isinstance(layer := getattr(mlp, name, None), nn.Linear)]
    output = mlp_output(mlp)
    inner = getattr(mlp, "norm", None)
    if not inputs or (inner is not None and not isinstance(inner, nn.Identity)):
        raise ValueError(f"AttnLRP has no rule for the MLP {type(mlp).__name__}")
    packed = len(inputs) == 1 and inputs[0].out_features == 2 * output.in_features
    if not packed and any(layer.out_features != output.in_features for layer in inputs):
        raise ValueError(f"AttnLRP has no rule for the MLP {type(mlp).__name__}: its widths do not chain")
    return inputs, packed


class _MlpRules:
    """Hooks on one MLP while it runs: its input projections' outputs kept (the pre-activations
    f_i), its output projection's input h replaced by sum_i f_i (h / f_i).detach() / k."""

    def __init__(self, mlp: nn.Module) -> None:
        self.inputs, self.packed = mlp_inputs(mlp)
        self.output = mlp_output(mlp)
        self.factors: list[Tensor] = []

    def keep(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self.factors.extend(output.chunk(2, dim=-1) if self.packed else (output,))

    def replace(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (neurons,) = args
        factors, self.factors = self.factors, []
        ruled = [factor * torch.where(factor == 0, 0.0, neurons / factor).detach() for factor in factors]
        return (torch.stack(ruled).sum(dim=0) / len(ruled),)

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        handles = [layer.register_forward_hook(self.keep) for layer in self.inputs]
        handles.append(self.output.register_forward_pre_hook(self.replace))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def relevance_block(view: HFBlock, tokens: Tensor, weights: Tensor) -> Tensor:
    """One pre-norm block of `view` on `tokens` (batch, tokens, hidden) under the rules, with its
    attention weights `weights` (batch, heads, tokens, tokens) held constant."""
    attention = view.attention
    values = per_head(
        applied(attention.v_proj, linear_norm(view.norm1, tokens)), attention.num_attention_heads
    )
    mixed = (weights @ values).transpose(1, 2).flatten(2)  # batch, tokens, heads x head width
    tokens = tokens + applied(view.layer_scale1, applied(attention.o_proj, mixed))
    with _MlpRules(view.mlp).hooked():
        update = applied(view.mlp, linear_norm(view.norm2, tokens))
    return tokens + applied(view.layer_scale2, update)


class _QueriesKeys(Tap):
    """Every block's queries and keys as its softmax sees them, in the clean pass (detached)."""

    reads = frozenset({"queries", "keys"})

    def __init__(self, num_layers: int) -> None:
        self.blocks = tuple(range(1, num_layers + 1))
        self.kept: list[tuple[Tensor, Tensor]] = []

    def leave(self, parts: BlockParts) -> None:
        self.kept.append((parts.read("queries").detach(), parts.read("keys").detach()))


def relevance_pool(view: PoolView, tokens: Tensor, weights: Tensor, after: nn.Module) -> Tensor:
    """An attention-pooling head (or the token mean) of `view` on the tokens it reads (batch, tokens,
    hidden) under the rules, its weights `weights` (batch, heads, tokens) held constant: v = W_o(A v),
    then v + mlp(norm2 v) (no residual, no MLP for `NoMLP`), then `after`: the pooled output."""
    attention = view.attention
    values = per_head(applied(attention.v_proj, tokens), attention.num_attention_heads)
    state = applied(attention.o_proj, (weights.unsqueeze(2) @ values).flatten(1))  # batch, hidden
    if not isinstance(view.mlp, NoMLP):
        with _MlpRules(view.mlp).hooked():
            state = state + applied(view.layer_scale2, applied(view.mlp, linear_norm(view.norm2, state)))
    return linear_norm(after, state)


class AttnLRPMap(AttributionMap):
    name = "attnlrp"
    position = 45
    signed = True
    description = (
        "Achtibat et al. 2024: AttnLRP relevance of each patch entering block 1 (CP-LRP in attention)"
    )

    def problem(self, backbone: DecomposingBackbone) -> str | None:
        """A norm or MLP the rules do not cover, in any block or the readout; None where they cover all."""
        try:  # the kinds only: nothing runs (the model may sit on any device)
            for number in range(1, backbone.info.num_layers + 1):
                view = backbone.view(number)
                mlp_inputs(view.mlp)
                for norm in (view.norm1, view.norm2):
                    norm_parts(norm)
            norm_parts(backbone.after_readout)
            pool = backbone.read_view
            if isinstance(pool, PoolView):  # what the head reads, and its own MLP
                norm_parts(backbone.family.final_norm)
                norm_parts(pool.norm2)
                if not isinstance(pool.mlp, NoMLP):
                    mlp_inputs(pool.mlp)
        except ValueError as error:
            return f"{error} ({backbone.info.name})"
        return None

    def tap(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Tap:
        return _QueriesKeys(backbone.info.num_layers)

    def attribute(self, call: MapCall) -> Tensor:
        tap = call.taps[self.name]
        assert isinstance(tap, _QueriesKeys)
        backbone, capture = call.backbone, call.capture
        pooling = None
        if isinstance(backbone.read_view, PoolView):  # its weights over the tokens, held as the blocks'
            with torch.autocast(device_type=capture.keys.device.type, enabled=False):
                pooling = cls_attention(backbone.read_view, capture.block_input, capture.keys)
        relevance, _ = token_relevance(backbone, call.pixel_values, tap.kept, call.target, pooling)
        return relevance[:, call.layout.slice("patch")]


def token_relevance(
    backbone: DecomposingBackbone, pixel_values: Tensor, queries_keys: Sequence[tuple[Tensor, Tensor]],
    target: Callable[[Tensor], Tensor], pooling: Tensor | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The relevance of every token entering block 1 for `target` of the pooled output (batch, tokens),
    and the pooled output the rules' forward gives (batch, hidden: the model's own, to rounding), from
    every block's queries and keys of the clean pass (`queries_keys`, as its softmax saw them) and,
    for a model pooled by a head or the token mean, that pool's weights (`pooling`, batch, heads,
    tokens; None: the [CLS] row's final norm)."""
    device = pixel_values.device.type
    unmixed = torch.autocast(device_type=device, enabled=False)
    with torch.enable_grad(), torch.inference_mode(False), unmixed:
        entering = backbone.embed(pixel_values.detach().clone()).detach().float()
        tokens = entering.clone().requires_grad_(True)
        state = tokens
        for number, (queries, keys) in enumerate(queries_keys, start=1):
            view = backbone.view(number)
            weights = attention_matrix(view, queries.clone(), keys.clone())  # constants of the pass
            state = relevance_block(view, state, weights)
        read = backbone.read_view
        if isinstance(read, PoolView):
            if pooling is None:
                raise ValueError(f"{backbone.info.name} is pooled by a head: give its weights (`pooling`)")
            tokens_read = linear_norm(backbone.family.final_norm, state)
            pooled = relevance_pool(read, tokens_read, pooling.clone(), backbone.after_readout)
        else:
            pooled = linear_norm(backbone.after_readout, state[:, 0])
        (gradient,) = torch.autograd.grad(target(pooled).sum(), [tokens])
    return (entering * gradient).sum(dim=-1).detach(), pooled.detach()
