"""`DecomposingBackbone.from_model` on a model a user built: its own output, nothing of it changed, and
gradients through the decomposition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.extras import Deletion, Depth
from tests.conftest import tiny_model

README = Path(__file__).resolve().parents[2] / "README.md"


def timm_vit() -> nn.Module:
    """A tiny timm ViT with registers and layer scale, any image size."""
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, depth=2, embed_dim=64, num_heads=4, img_size=32,
        patch_size=8, num_classes=0, reg_tokens=2, init_values=0.5, dynamic_img_size=True,
    )  # fmt: skip


def hf_dinov2() -> nn.Module:
    """A tiny transformers DINOv2 with registers whose [CLS] output depends on the patches."""
    model = tiny_model(registers=4, patch=8)
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.v_proj.weight.mul_(20)
    return model


def own_output(model: nn.Module, pixels: Tensor) -> Tensor:
    if isinstance(model, timm.models.VisionTransformer):
        return model.forward_head(model.forward_features(pixels), pre_logits=True)
    return model(pixel_values=pixels).pooler_output


MODELS = [pytest.param(timm_vit, id="timm"), pytest.param(hf_dinov2, id="hf-dinov2")]


def state_of(model: nn.Module) -> list[tuple[str, bool, int, int, bool, tuple[bool, ...]]]:
    """Per module: its name, training flag, hook counts, an own `forward`, its parameters' grad flags."""
    return [
        (name, module.training, len(module._forward_hooks), len(module._forward_pre_hooks),
         "forward" in vars(module), tuple(p.requires_grad for p in module.parameters(recurse=False)))
        for name, module in model.named_modules()
    ]  # fmt: skip


@pytest.mark.parametrize("make", MODELS)
def test_output_full_is_the_models_own_and_the_model_is_left_as_it_was(make: object) -> None:
    model = make()  # type: ignore[operator]
    model.train()  # as a user may hold it: training mode, trainable parameters
    before = state_of(model)
    backbone = DecomposingBackbone.from_model(model)
    assert backbone.info.family in ("timm", "dinov2") and backbone.info.source == "memory"
    pixels = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decomposition = backbone(pixels, torch.arange(len(pixels)), extras=[Depth((1, 2)), Deletion((0.5,))])
        model.eval()
        expected = own_output(model, pixels)
        model.train()
    scale = float(expected.abs().max())
    assert_close(decomposition["output/full"], expected, atol=1e-5 * scale, rtol=0)
    assert state_of(model) == before  # no hook, forward, mode or grad flag changed
    for backend in ("eager",):  # a compiled call restores the blocks' forwards too
        with torch.no_grad():
            backbone.compiling(backend)(pixels)
        assert state_of(model) == before


@pytest.mark.parametrize("make", MODELS)
def test_gradients_through_the_decomposition_equal_finite_differences(make: object) -> None:
    """d/d pixels of w . output/patch (a scalar of the patch-only readout), along the gradient itself
    and two random directions, against central differences of the decomposition's own value."""
    backbone = DecomposingBackbone.from_model(make().requires_grad_(False))  # type: ignore[operator]
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, 32, 32, generator=generator).requires_grad_(True)
    weights = torch.randn(backbone.info.hidden_size, generator=generator)

    def scalar(images: Tensor) -> Tensor:
        return (backbone(images)["output/patch"] @ weights).sum()

    (gradient,) = torch.autograd.grad(scalar(pixels), pixels)
    assert gradient.abs().max() > 0
    step = 1e-2
    directions = [gradient / gradient.norm(), *(torch.randn(pixels.shape, generator=generator) for _ in "ab")]
    for direction in directions:
        direction = direction / direction.norm()
        with torch.no_grad():
            ahead, behind = scalar(pixels + step * direction), scalar(pixels - step * direction)
        finite = (ahead - behind) / (2 * step)
        # float32 differences: tolerance against the gradient's own size (any unit direction's bound)
        assert_close(finite, (gradient * direction).sum(), atol=2e-2 * float(gradient.norm()), rtol=0)


def test_the_readmes_from_python_example_runs() -> None:
    """The README's "From Python" section, run as written."""
    section = README.read_text().split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md has no python example under 'From Python'"
    namespace: dict[str, object] = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    assert {"backbone", "decomposition"} <= set(namespace)
    pixels = namespace["pixels"]  # the sample photos through backbone.transform(224)
    assert isinstance(pixels, Tensor) and pixels.shape == (2, 3, 224, 224)
