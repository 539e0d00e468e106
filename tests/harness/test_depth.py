"""The per-layer decomposition (`--layers`) against each block's own forward pass in HF's modules."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import parse_layers
from harness.decomposition import DEPTH_PREFIX, depth_quantities
from harness.extras import Depth
from harness.tokens import TokenLayout, present_groups
from tests.conftest import ARCHITECTURES, tiny_model, wrap


def block_attention(model: nn.Module, number: int, pixels: Tensor, group: str | None) -> Tensor:
    """gamma1 * attention output of block `number` (1-based) at [CLS], with the values outside `group`
    zeroed (None: all values), computed by HF's own attention module on HF's own hidden states."""
    layer = model.encoder.layer[number - 1]
    block_input = model(pixel_values=pixels, output_hidden_states=True).hidden_states[number - 1]
    layout = TokenLayout.for_image(*pixels.shape[-2:], model.config.patch_size, model_registers(model))
    handle = None
    if group is not None:
        outside = torch.ones(layout.num_tokens, dtype=torch.bool)
        outside[layout.slice(group)] = False

        def zero_values(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
            return output.masked_fill(outside[None, :, None], 0.0)

        handle = layer.attention.v_proj.register_forward_hook(zero_values)
    try:
        output, _ = layer.attention(layer.norm1(block_input))
    finally:
        if handle is not None:
            handle.remove()
    return layer.layer_scale1(output)[:, 0]


def model_registers(model: nn.Module) -> int:
    return getattr(model.config, "num_register_tokens", 0)


def rest_of_block(model: nn.Module, number: int, state: Tensor) -> Tensor:
    layer = model.encoder.layer[number - 1]
    return state + layer.layer_scale2(layer.mlp(layer.norm2(state)))


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
@torch.no_grad()
def test_every_block_against_hf(registers: int, swiglu: bool, pixels: Tensor) -> None:
    model = tiny_model(registers=registers, swiglu=swiglu, layers=3, attn_implementation="eager")
    backbone = wrap(model)
    decomposition = backbone(pixels, extras=[Depth((1, 2, 3))])
    hidden = model(pixel_values=pixels, output_hidden_states=True, output_attentions=True)
    layout = decomposition.layout
    groups = present_groups(registers)
    assert {n for n in decomposition if n.startswith(DEPTH_PREFIX)} == {
        DEPTH_PREFIX + q for q in depth_quantities(registers)
    }
    scale = float(hidden.hidden_states[-1].abs().max())
    assert float(decomposition.pooler_error) < 1e-5 * scale  # covers every block's rebuilt output
    for column, number in enumerate((1, 2, 3)):
        block_output = hidden.hidden_states[number][:, 0]
        skip = hidden.hidden_states[number - 1][:, 0]
        layer = model.encoder.layer[number - 1]
        bias = layer.layer_scale1(layer.attention.o_proj.bias)
        full = rest_of_block(model, number, skip + block_attention(model, number, pixels, None))
        assert_close(full, block_output, atol=1e-5 * scale, rtol=0)  # the readout of full is the block
        weights = hidden.attentions[number - 1][:, :, 0]  # batch, heads, tokens: eager softmax
        for group in groups:
            got = decomposition[f"{DEPTH_PREFIX}split/{group}"][:, column]
            assert_close(got, weights[:, :, layout.slice(group)].sum(-1).mean(1), atol=1e-6, rtol=0)
            part = block_attention(model, number, pixels, group)  # c_g + c_b
            norm = decomposition[f"{DEPTH_PREFIX}norm/{group}"][:, column]
            assert_close(norm, (part - bias).norm(dim=-1), atol=1e-5 * scale, rtol=1e-5)
            cosine = nn.functional.cosine_similarity(rest_of_block(model, number, part), block_output, dim=-1)
            assert_close(decomposition[f"{DEPTH_PREFIX}cosine/{group}"][:, column], cosine, atol=1e-5, rtol=0)
        assert_close(
            decomposition[f"{DEPTH_PREFIX}norm/skip"][:, column], skip.norm(dim=-1), atol=1e-5 * scale, rtol=0
        )
        skip_cosine = nn.functional.cosine_similarity(
            rest_of_block(model, number, skip), block_output, dim=-1
        )
        assert_close(decomposition[f"{DEPTH_PREFIX}cosine/skip"][:, column], skip_cosine, atol=1e-5, rtol=0)
    for group in groups:  # the last block's entries agree with the last-layer names
        assert_close(decomposition[f"{DEPTH_PREFIX}split/{group}"][:, -1], decomposition[f"split/{group}"])


@torch.no_grad()
def test_chosen_blocks_only_and_none_by_default(pixels: Tensor) -> None:
    backbone = wrap(tiny_model(registers=4, layers=4))
    plain = backbone(pixels)
    assert not any(name.startswith(DEPTH_PREFIX) for name in plain)
    chosen = backbone(pixels, extras=[Depth((3, 1, 3))])  # ascending, once each
    assert chosen[f"{DEPTH_PREFIX}split/patch"].shape == (3, 2)
    for name in plain:  # the last-layer decomposition is unchanged
        assert torch.equal(plain[name], chosen[name]), name
    all_blocks = wrap(tiny_model(registers=4, layers=4))
    every = all_blocks(pixels, extras=[Depth((1, 2, 3, 4))])
    assert_close(every[f"{DEPTH_PREFIX}cosine/patch"][:, [0, 2]], chosen[f"{DEPTH_PREFIX}cosine/patch"])
    with pytest.raises(ValueError, match=r"numbered 1\.\.4"):
        backbone(pixels, extras=[Depth((5,))])
    assert not any(name.startswith(DEPTH_PREFIX) for name in backbone(pixels))  # nothing stays on


@torch.no_grad()
def test_compiled_blocks_leave_decomposed_blocks_eager(pixels: Tensor) -> None:
    backbone = wrap(tiny_model(registers=4, layers=4))
    expected = backbone(pixels, extras=[Depth((2,))])
    got = backbone.compiling("eager")(pixels, extras=[Depth((2,))])
    for name, tensor in expected.items():
        assert_close(got[name], tensor, atol=1e-5 * (float(tensor.abs().max()) or 1.0), rtol=0, msg=name)


def test_parse_layers() -> None:
    assert parse_layers("last", 12) == () and parse_layers("all", 2) == (1, 2)
    assert parse_layers(" 12, 1 ,6", 12) == (1, 6, 12) and parse_layers("all") == ()
    for bad in ("", "0", "first", "1,,2", "-1"):
        with pytest.raises(ValueError, match="--layers takes last, all or block numbers"):
            parse_layers(bad, 12)
    with pytest.raises(ValueError, match=r"blocks 1\.\.12"):
        parse_layers("13", 12)
