"""The `legrad` map against LeGrad written from the paper on the gradients of the models' own eager
attention weights (DINOv2, and DINOv3 with RoPE; the output's projection and a head's class as the
target), and zero on a model whose [CLS] output ignores the attention."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.extras import AttributionMaps
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_dinov3

EAGER = {
    "dinov2": lambda: tiny_model(registers=4, layers=3, attn_implementation="eager"),
    "dinov3": lambda: tiny_dinov3(attn_implementation="eager"),
}


def legrad_from(attentions: tuple[Tensor, ...], target: Tensor, patches: slice) -> Tensor:
    """LeGrad from the paper: E = 1/L sum_l mean_{h, i} ReLU(d target / d A^l)[h, i, :], at the
    patch columns."""
    gradients = torch.autograd.grad(target, attentions)
    per_block = [gradient.double().clamp(min=0).mean(dim=(1, 2)) for gradient in gradients]
    return (sum(per_block) / len(per_block))[:, patches]


@pytest.mark.parametrize("size", [(32, 40), (48, 32)], ids=["32x40", "48x32"])
@pytest.mark.parametrize("target", ["output", "class"])
@pytest.mark.parametrize("family", list(EAGER))
def test_legrad_is_the_papers_on_the_models_own_attention_gradients(
    family: str, target: str, size: tuple[int, int]
) -> None:
    model = EAGER[family]()
    backbone = DecomposingBackbone.from_model(model)
    pixels = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(7)
    head = nn.Linear(backbone.info.hidden_size, 5).requires_grad_(False) if target == "class" else None
    found = backbone(pixels, extras=[AttributionMaps(("legrad",), class_scores=head, scored=False)])
    outputs = model(pixel_values=pixels, output_attentions=True)
    pooled = outputs.pooler_output
    if head is None:
        score = (pooled * nn.functional.normalize(pooled.detach(), dim=-1)).sum()
    else:
        scores = head(pooled)
        score = scores.gather(1, scores.detach().argmax(dim=1, keepdim=True)).sum()
    layout = backbone.layout_for(pixels)
    expected = legrad_from(outputs.attentions, score, layout.slice("patch")).float()
    expected = expected.reshape(3, layout.grid_height, layout.grid_width)
    assert expected.abs().max() > 0  # the test can fail
    assert_close(found["attribution/legrad"], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


@torch.no_grad()
def test_legrad_is_zero_where_the_output_takes_nothing_from_the_attention() -> None:
    """Every attention output projection zero: the output does not depend on any attention weight."""
    model = EAGER["dinov2"]()
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.o_proj.weight.zero_()
    backbone = DecomposingBackbone.from_model(model)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    found = backbone(
        pixels, torch.arange(2), extras=[AttributionMaps(("legrad", "rollout"), fractions=(0.5,))]
    )
    assert torch.all(found["attribution/legrad"] == 0)
    assert torch.all(found["attribution/rollout"] > 0)  # attention alone still points somewhere
    assert "maps/legrad/deletion/top" in found and "maps/legrad/rank_agreement" in found
