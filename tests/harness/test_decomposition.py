"""The decomposition against HF's own forward pass and HF's own attention module."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone, variant_names
from harness.tokens import TokenLayout, split_groups
from tests.conftest import ARCHITECTURES, tiny_model, wrap


def group_attention_output(
    model: nn.Module, pixels: Tensor, group: str, layout: TokenLayout, renormalise: bool
) -> Tensor:
    """gamma1 * attention([CLS]) of the last block with values (or keys) outside `group` removed.

    Uses HF's own attention module: zeroing the values of the other groups gives the zeroed
    variant; masking their keys gives the softmax restricted to the group (renormalised).
    """
    layer = model.encoder.layer[-1]
    block_input = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    outside = torch.ones(layout.num_tokens, dtype=torch.bool)
    outside[layout.slice(group)] = False
    mask = None
    if renormalise:
        mask = torch.zeros(pixels.shape[0], 1, layout.num_tokens, layout.num_tokens)
        mask[..., outside] = float("-inf")
        handle = None
    else:

        def zero_values(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
            return output.masked_fill(outside[None, :, None], 0.0)

        handle = layer.attention.v_proj.register_forward_hook(zero_values)
    try:
        output, _ = layer.attention(layer.norm1(block_input), attention_mask=mask)
    finally:
        if handle is not None:
            handle.remove()
    return layer.layer_scale1(output)[:, 0]


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_output_full_equals_pooler_output(registers: int, swiglu: bool, pixels: Tensor) -> None:
    model = tiny_model(registers, swiglu)
    decomposition = wrap(model)(pixels)
    pooled = model(pixel_values=pixels).pooler_output
    assert (decomposition["output/full"] - pooled).abs().max() < 1e-4
    assert decomposition.pooler_error < 1e-4


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_zeroed_variants_add_up_to_full(registers: int, swiglu: bool, pixels: Tensor) -> None:
    model = tiny_model(registers, swiglu)
    d = wrap(model)(pixels)
    last = model.encoder.layer[-1]
    bias_term = last.layer_scale1.lambda1 * last.attention.o_proj.bias
    groups = d.layout.groups
    # each group variant carries c_b once; the full output carries it once in total
    summed = sum(d[f"attention/{g}"] for g in groups) - (len(groups) - 1) * bias_term
    assert_close(summed, d["attention/full"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_mid_block_state_is_skip_plus_attention(registers: int, swiglu: bool, pixels: Tensor) -> None:
    model = tiny_model(registers, swiglu)
    d = wrap(model)(pixels)
    layer = model.encoder.layer[-1]
    block_input = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    attention_output, _ = layer.attention(layer.norm1(block_input))
    mid_state = block_input + layer.layer_scale1(attention_output)  # HF's own residual step
    assert_close(d["attention/skip"] + d["attention/full"], mid_state[:, 0], atol=1e-5, rtol=1e-5)
    assert_close(d["attention/skip"], block_input[:, 0])


@pytest.mark.parametrize("renormalise", [False, True], ids=["zeroed", "renormalised"])
@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_group_variants_match_hf_attention(
    registers: int, swiglu: bool, renormalise: bool, pixels: Tensor
) -> None:
    model = tiny_model(registers, swiglu, attn_implementation="eager")
    d = wrap(model)(pixels)
    suffix = "_renorm" if renormalise else ""
    for group in d.layout.groups:
        expected = group_attention_output(model, pixels, group, d.layout, renormalise)
        assert_close(d[f"attention/{group}{suffix}"], expected, atol=1e-5, rtol=1e-5, msg=group)


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_output_readout_pushes_variant_through_block(registers: int, swiglu: bool, pixels: Tensor) -> None:
    model = tiny_model(registers, swiglu)
    d = wrap(model)(pixels)
    layer = model.encoder.layer[-1]
    for name in ("patch", "cls", "skip", "patch_renorm"):
        state = d[f"attention/{name}"]
        expected = model.layernorm(state + layer.layer_scale2(layer.mlp(layer.norm2(state))))
        assert_close(d[f"output/{name}"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_split_and_map_match_eager_attention_weights(registers: int, swiglu: bool, pixels: Tensor) -> None:
    model = tiny_model(registers, swiglu, attn_implementation="eager")
    d = wrap(model)(pixels)
    weights = model(pixel_values=pixels, output_attentions=True).attentions[-1][
        :, :, 0
    ]  # batch, heads, tokens
    layout = d.layout
    for group in split_groups():
        assert_close(
            d[f"split/{group}"], weights[:, :, layout.slice(group)].sum(-1).mean(1), atol=1e-6, rtol=1e-5
        )
    total = d["split/cls"] + d["split/register"] + d["split/patch"]
    assert_close(total, torch.ones_like(total))
    expected_map = weights[:, :, layout.slice("patch")].mean(1).view(-1, 8, 10)  # 32 x 40 px, 4 px patches
    assert_close(d["map/attention"], expected_map, atol=1e-6, rtol=1e-5)
    if not registers:
        assert torch.all(d["split/register"] == 0)


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_names_shapes_and_token_count(registers: int, swiglu: bool, pixels: Tensor) -> None:
    model = tiny_model(registers, swiglu)
    d = wrap(model)(pixels)
    hidden_states = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    layout = d.layout
    assert hidden_states[-1].shape[1] == layout.num_tokens == 1 + registers + layout.num_patches
    assert (layout.grid_height, layout.grid_width) == (8, 10)
    assert d.variants == variant_names(registers)
    assert ("attention/register" in d) == bool(registers)
    for name in d.variants:
        assert d[name].shape == (3, 32) and d[name].dtype == torch.float32
    assert_close(d["hidden/cls"], torch.stack([h[:, 0] for h in hidden_states], dim=1))
    with pytest.raises(KeyError, match="not in this decomposition"):
        d["attention/bogus"]


def test_decomposition_is_read_only(pixels: Tensor) -> None:
    d = wrap(tiny_model())(pixels)
    with pytest.raises(TypeError):
        d["output/full"] = torch.zeros(1)  # type: ignore[index]


def test_batch_items_are_independent(pixels: Tensor) -> None:
    backbone = wrap(tiny_model(4, True))
    together = backbone(pixels)
    alone = backbone(pixels[1:2])
    for name in together.variants:
        assert_close(together[name][1:2], alone[name], atol=1e-5, rtol=1e-5)


def test_bf16_autocast_keeps_float32_and_stays_close(pixels: Tensor) -> None:
    backbone = wrap(tiny_model(4, False))
    reference = backbone(pixels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = backbone(pixels)
    assert low["output/full"].dtype == torch.float32
    assert low.pooler_error < 0.1
    assert_close(low["output/full"], reference["output/full"], atol=0.1, rtol=0.05)


def test_bad_pixel_shapes_are_refused() -> None:
    backbone = wrap(tiny_model())
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        backbone(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        backbone(torch.zeros(3, 32, 32))


def test_each_call_runs_in_eval_mode_and_leaves_the_models_flags(pixels: Tensor) -> None:
    model = tiny_model(registers=4)
    backbone = DecomposingBackbone.from_model(model)
    backbone.train()  # Lightning's call: the wrapper's flag only
    model.train()
    for layer in model.encoder.layer:
        layer.drop_path = nn.Dropout(0.9)  # would change every output in training mode
    with torch.no_grad():
        expected = model.eval()(pixel_values=pixels).pooler_output
    model.train()
    with torch.no_grad():
        decomposition = backbone(pixels)
    assert_close(decomposition["output/full"], expected, atol=1e-5, rtol=1e-5)
    assert all(module.training for module in model.modules())  # as the caller left it
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_blocks_give_the_same_decomposition(backend: str, pixels: Tensor) -> None:
    """Compiled blocks leave the hooks and the eager last block alone: every tensor as before, and the
    model's own blocks keep their forward after each call."""
    model = tiny_model(registers=4, layers=3)
    eager = wrap(model)
    expected = eager(pixels)
    backbone = eager.compiling(backend)
    assert backbone.compiled == backend and eager.compiled is None
    for batch in (pixels, pixels[:2], pixels):  # a new batch size retraces; the same one reuses
        got = backbone(batch)
        assert set(got) == set(expected)
        for name, tensor in expected.items():
            scale = float(tensor.abs().max()) or 1.0
            assert_close(got[name], tensor[: batch.shape[0]], atol=1e-5 * scale, rtol=0, msg=name)
        assert float(got.pooler_error) <= 1e-5 * float(got["output/full"].abs().max())
        assert all("forward" not in vars(block) for block in model.encoder.layer)
    reference = model(pixel_values=pixels).pooler_output
    assert_close(backbone(pixels)["output/full"], reference, atol=1e-5, rtol=1e-5)
