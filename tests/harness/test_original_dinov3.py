"""Issue 20, item 5: a DINOv3 `.pth` in its repository's layout (`storage_tokens`, `rope_embed.periods`,
a fused qkv whose key bias is masked, `ls1/ls2.gamma`, fc1/fc2 or SwiGLU's w1/w2/w3) loads, and equals
DINOv3's own forward written here from its description (`DinoVisionTransformer`, `SelfAttention`,
`RopePositionEmbedding`): [CLS], storage tokens, patches (no position embedding); RoPE on the patch
queries and keys only, coordinates normalised per axis to [-1, 1] at patch centres, angles
2 pi coord / period per axis, tiled twice, rotate-half; LayerNorm eps 1e-5; the final norm's [CLS]."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.nn import functional
from torch.testing import assert_close

from harness import load_backbone
from harness.errors import CheckpointFormatError

WIDTH, DEPTH, HEADS, PATCH, STORAGE, MLP = 64, 2, 2, 8, 4, 96
HEAD = WIDTH // HEADS


def dinov3_state(gated: bool, seed: int = 0) -> dict[str, Tensor]:
    """Random, non-trivial weights in DINOv3's names; the key bias non-zero but masked, as released."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int, scale: float = 0.2, offset: float = 0.0) -> Tensor:
        return torch.randn(*shape, generator=generator) * scale + offset

    state = {
        "cls_token": draw(1, 1, WIDTH),
        "storage_tokens": draw(1, STORAGE, WIDTH),
        "mask_token": draw(1, WIDTH),
        "patch_embed.proj.weight": draw(WIDTH, 3, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": draw(WIDTH),
        "rope_embed.periods": 100.0 ** (2 * torch.arange(HEAD // 4) / (HEAD // 2)),
        "norm.weight": draw(WIDTH, offset=1.0),
        "norm.bias": draw(WIDTH),
    }
    mask = torch.ones(3 * WIDTH)
    mask[WIDTH : 2 * WIDTH] = 0
    for i in range(DEPTH):
        block = f"blocks.{i}."
        state |= {
            block + "norm1.weight": draw(WIDTH, offset=1.0), block + "norm1.bias": draw(WIDTH),
            block + "attn.qkv.weight": draw(3 * WIDTH, WIDTH), block + "attn.qkv.bias": draw(3 * WIDTH),
            block + "attn.qkv.bias_mask": mask.clone(),
            block + "attn.proj.weight": draw(WIDTH, WIDTH), block + "attn.proj.bias": draw(WIDTH),
            block + "ls1.gamma": draw(WIDTH, offset=0.5),
            block + "norm2.weight": draw(WIDTH, offset=1.0), block + "norm2.bias": draw(WIDTH),
            block + "ls2.gamma": draw(WIDTH, offset=0.5),
        }  # fmt: skip
        if gated:
            state |= {
                block + "mlp.w1.weight": draw(MLP, WIDTH), block + "mlp.w1.bias": draw(MLP),
                block + "mlp.w2.weight": draw(MLP, WIDTH), block + "mlp.w2.bias": draw(MLP),
                block + "mlp.w3.weight": draw(WIDTH, MLP), block + "mlp.w3.bias": draw(WIDTH),
            }  # fmt: skip
        else:
            state |= {
                block + "mlp.fc1.weight": draw(MLP, WIDTH), block + "mlp.fc1.bias": draw(MLP),
                block + "mlp.fc2.weight": draw(WIDTH, MLP), block + "mlp.fc2.bias": draw(WIDTH),
            }  # fmt: skip
    return state


def rope(periods: Tensor, rows: int, columns: int) -> tuple[Tensor, Tensor]:
    """(sin, cos) of every patch, (rows * columns, head width), as RopePositionEmbedding computes them."""
    coords_h = torch.arange(0.5, rows) / rows
    coords_w = torch.arange(0.5, columns) / columns
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1) * 2 - 1
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2).tile(2)
    return torch.sin(angles), torch.cos(angles)


def rotate(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def dinov3_forward(state: dict[str, Tensor], pixels: Tensor, gated: bool) -> Tensor:
    """DINOv3's pooled [CLS] (`x_norm_clstoken`), from the description."""

    def norm(x: Tensor, name: str) -> Tensor:
        return functional.layer_norm(x, (WIDTH,), state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-5)

    def linear(x: Tensor, name: str, bias: Tensor | None = None) -> Tensor:
        return x @ state[f"{name}.weight"].T + (state[f"{name}.bias"] if bias is None else bias)

    patches = functional.conv2d(
        pixels, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH
    )
    rows, columns = patches.shape[-2:]
    batch = len(pixels)
    x = torch.cat(
        [state["cls_token"].expand(batch, -1, -1), state["storage_tokens"].expand(batch, -1, -1),
         patches.flatten(2).transpose(1, 2)], dim=1,
    )  # fmt: skip
    sin, cos = rope(state["rope_embed.periods"], rows, columns)
    prefix = 1 + STORAGE
    for i in range(DEPTH):
        block = f"blocks.{i}."
        bias = state[block + "attn.qkv.bias"] * state[block + "attn.qkv.bias_mask"]
        qkv = linear(norm(x, block + "norm1"), block + "attn.qkv", bias).reshape(batch, -1, 3, HEADS, HEAD)
        q, k, v = (part.transpose(1, 2) for part in qkv.unbind(2))  # batch, heads, tokens, head width
        q = torch.cat([q[:, :, :prefix], rotate(q[:, :, prefix:], sin, cos)], dim=2)
        k = torch.cat([k[:, :, :prefix], rotate(k[:, :, prefix:], sin, cos)], dim=2)
        weights = (q @ k.transpose(-2, -1) * HEAD**-0.5).softmax(-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, -1, WIDTH)
        x = x + state[block + "ls1.gamma"] * linear(attended, block + "attn.proj")
        h = norm(x, block + "norm2")
        if gated:
            hidden = functional.silu(linear(h, block + "mlp.w1")) * linear(h, block + "mlp.w2")
            mlp = linear(hidden, block + "mlp.w3")
        else:
            mlp = linear(functional.gelu(linear(h, block + "mlp.fc1")), block + "mlp.fc2")
        x = x + state[block + "ls2.gamma"] * mlp
    return norm(x, "norm")[:, 0]


@pytest.mark.parametrize("gated", [False, True], ids=["mlp", "swiglu"])
@pytest.mark.parametrize("size", [(32, 32), (24, 40)], ids=["4x4", "3x5"])
def test_an_original_dinov3_file_equals_dinov3s_own_forward(
    gated: bool, size: tuple[int, int], tmp_path: Path
) -> None:
    state = dinov3_state(gated)
    torch.save({"teacher": {f"backbone.{key}": value for key, value in state.items()}}, tmp_path / "d3.pth")
    backbone = load_backbone(tmp_path / "d3.pth")
    info = backbone.info
    assert (info.source, info.family, info.num_layers, info.num_heads, info.num_registers, info.swiglu) == (
        "checkpoint", "dinov3", DEPTH, HEADS, STORAGE, gated,
    )  # fmt: skip
    # transformers' DINOv3 processor is DINOv3's own evaluation transform (a square resize, bilinear)
    assert (info.preprocessing.resize, info.preprocessing.interpolation) == ("square", "bilinear")
    pixels = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))
    expected = dinov3_forward(state, pixels, gated)
    full = backbone(pixels)["output/full"]
    assert_close(full, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_dinov3_files_transformers_cannot_hold_are_one_line(tmp_path: Path) -> None:
    state = dinov3_state(gated=False)
    state["cls_norm.weight"], state["cls_norm.bias"] = torch.ones(WIDTH), torch.zeros(WIDTH)
    torch.save(state, tmp_path / "untied.pth")
    with pytest.raises(CheckpointFormatError, match="cls_norm"):
        load_backbone(tmp_path / "untied.pth")
    state = dinov3_state(gated=False)
    state["rope_embed.periods"] = state["rope_embed.periods"] * 0.5  # min/max periods: not base ** x
    torch.save(state, tmp_path / "periods.pth")
    with pytest.raises(CheckpointFormatError, match="RoPE periods are not base"):
        load_backbone(tmp_path / "periods.pth")


def test_an_unmasked_key_bias_is_kept(tmp_path: Path) -> None:
    """Without the mask (a layout that adds its key bias), transformers' `key_bias` holds it."""
    state = {key: value for key, value in dinov3_state(gated=False).items() if not key.endswith("bias_mask")}
    torch.save(state, tmp_path / "kbias.pth")
    backbone = load_backbone(tmp_path / "kbias.pth")
    assert backbone.model.config.key_bias
    for key in [key for key in state if key.endswith("qkv.bias")]:
        state[key.replace("bias", "bias_mask")] = torch.ones(3 * WIDTH)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = dinov3_forward(state, pixels, gated=False)
    assert_close(
        backbone(pixels)["output/full"], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item()
    )
