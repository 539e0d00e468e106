"""Issue 20, item 5: a DeiT III `.pth` as its repository writes it (`{'model': ...}`, the keys of
`models_v2.vit_models`) loads, and equals DeiT III's own forward, written here from its description
(`models_v2.py`): patches + `pos_embed` (patch grid only), [CLS] prepended without a position; blocks
x + gamma_1 * attn(norm1(x)), x + gamma_2 * mlp(norm2(x)); LayerNorm eps 1e-6; the [CLS] row of the
final norm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.nn import functional
from torch.testing import assert_close

from harness import load_backbone
from harness.errors import CheckpointFormatError

WIDTH, DEPTH, HEADS, PATCH, SIDE = 32, 2, 2, 8, 3  # a 24 px model, 3 x 3 patches; MLP 2 x WIDTH


def deit3_state(seed: int = 0, width: int = WIDTH) -> dict[str, Tensor]:
    """Random, non-trivial weights in models_v2's names (the classifier `head` included); `width`
    192 is DeiT III-Ti's (3 heads: what a file without `num_heads` loads as)."""
    WIDTH, MLP = width, 2 * width  # noqa: N806
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int, scale: float = 0.2, offset: float = 0.0) -> Tensor:
        return torch.randn(*shape, generator=generator) * scale + offset

    state = {
        "cls_token": draw(1, 1, WIDTH),
        "pos_embed": draw(1, SIDE * SIDE, WIDTH),
        "patch_embed.proj.weight": draw(WIDTH, 3, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": draw(WIDTH),
        "norm.weight": draw(WIDTH, offset=1.0),
        "norm.bias": draw(WIDTH),
        "head.weight": draw(10, WIDTH),
        "head.bias": draw(10),
    }
    for i in range(DEPTH):
        block = f"blocks.{i}."
        state |= {
            block + "norm1.weight": draw(WIDTH, offset=1.0), block + "norm1.bias": draw(WIDTH),
            block + "attn.qkv.weight": draw(3 * WIDTH, WIDTH), block + "attn.qkv.bias": draw(3 * WIDTH),
            block + "attn.proj.weight": draw(WIDTH, WIDTH), block + "attn.proj.bias": draw(WIDTH),
            block + "gamma_1": draw(WIDTH, offset=0.5),
            block + "norm2.weight": draw(WIDTH, offset=1.0), block + "norm2.bias": draw(WIDTH),
            block + "mlp.fc1.weight": draw(MLP, WIDTH), block + "mlp.fc1.bias": draw(MLP),
            block + "mlp.fc2.weight": draw(WIDTH, MLP), block + "mlp.fc2.bias": draw(WIDTH),
            block + "gamma_2": draw(WIDTH, offset=0.5),
        }  # fmt: skip
    return state


def deit3_forward(state: dict[str, Tensor], pixels: Tensor) -> Tensor:
    """DeiT III's `forward_features` (pre-logits [CLS]), from the description; at another size the
    position grid is resized as DeiT's `main.py` does for another `--input-size` (bicubic to the
    exact grid, align_corners False, no antialiasing)."""

    def norm(x: Tensor, name: str) -> Tensor:
        return functional.layer_norm(x, (WIDTH,), state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-6)

    def linear(x: Tensor, name: str) -> Tensor:
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    patches = functional.conv2d(
        pixels, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH
    )
    grid = state["pos_embed"].reshape(1, SIDE, SIDE, WIDTH).permute(0, 3, 1, 2)
    grid = functional.interpolate(grid, size=patches.shape[-2:], mode="bicubic", align_corners=False)
    x = patches.flatten(2).transpose(1, 2) + grid.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x], dim=1)
    batch, tokens, _ = x.shape
    for i in range(DEPTH):
        block = f"blocks.{i}."
        qkv = linear(norm(x, block + "norm1"), block + "attn.qkv").reshape(batch, tokens, 3, HEADS, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = ((q * (WIDTH // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, tokens, WIDTH)
        x = x + state[block + "gamma_1"] * linear(attended, block + "attn.proj")
        hidden = functional.gelu(linear(norm(x, block + "norm2"), block + "mlp.fc1"))
        x = x + state[block + "gamma_2"] * linear(hidden, block + "mlp.fc2")
    return norm(x, "norm")[:, 0]


@pytest.fixture(scope="module")
def deit3_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deit3") / "deit_3_tiny_24_1k.pth"
    torch.save({"model": deit3_state()}, path)  # as the DeiT repository saves (and releases) them
    return path


@pytest.mark.parametrize("size", [(SIDE * PATCH,) * 2, (48, 64)], ids=["training-size", "48x64"])
def test_an_original_deit3_file_equals_deits_own_forward(deit3_file: Path, size: tuple[int, int]) -> None:
    backbone = load_backbone(deit3_file, num_heads=HEADS)
    info = backbone.info
    assert (info.source, info.family, info.num_layers, info.num_heads, info.patch_size) == (
        "checkpoint", "timm", DEPTH, HEADS, PATCH,
    )  # fmt: skip
    # DeiT III's own evaluation: crop ratio 1.0 (its README), its resize rule off the training size
    assert info.preprocessing.resize_ratio == 1.0 and info.pos_interpolation == "original"
    pixels = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))
    expected = deit3_forward(deit3_state(), pixels)
    full = backbone(pixels)["output/full"]
    assert_close(full, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # its classifier is the model's own (issue 34: it was dropped, so --head model found none)
    state = deit3_state()
    assert backbone.info.num_classes == 10 and backbone.classifier is not None
    logits = expected @ state["head.weight"].T + state["head.bias"]
    assert_close(backbone.classifier(full), logits, rtol=1e-5, atol=1e-5 * logits.abs().max().item())


def test_deit3_files_that_do_not_fit_are_one_line(tmp_path: Path) -> None:
    state = deit3_state()
    state["pos_embed"] = state["pos_embed"][:, :8]  # 8 positions: no square grid
    torch.save({"model": state}, tmp_path / "grid.pth")
    with pytest.raises(CheckpointFormatError, match="pos_embed holds 8 positions, not a square grid"):
        load_backbone(tmp_path / "grid.pth", num_heads=HEADS)
    state = deit3_state()
    del state["blocks.1.mlp.fc2.bias"]
    torch.save({"model": state}, tmp_path / "missing.pth")
    with pytest.raises(
        CheckpointFormatError, match=r"does not match a DeiT III model: .*blocks\.1\.mlp\.fc2\.bias"
    ):
        load_backbone(tmp_path / "missing.pth", num_heads=HEADS)
