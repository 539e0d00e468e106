"""AttnLRP (`attnlrp`): for every family and readout ([CLS] row, attention-pooling head, token mean),
the rules' forward is the model's own (the same pooled output), and the relevance of the tokens entering
block 1 sums to the explained score (conservation) once the biases, which take relevance of their own,
are zero; gated MLPs included. The map is the patch tokens' relevance; a norm the rules do not cover is
one line."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.decomposition import cls_attention
from harness.extras import AttributionMaps
from harness.extras.attribution.attnlrp import AttnLRPMap, _QueriesKeys, linear_norm, token_relevance
from harness.extras.attribution.maps import gradient_target
from harness.families.base import PoolView
from tests.conftest import scaled, tiny_model
from tests.harness.test_eva import tiny_eva
from tests.harness.test_family_knowledge import MODELS as FAMILIES
from tests.harness.test_pooled import WITH_PREFIX, tiny_aimv2, tiny_timm_map, tiny_timm_mean

MODELS = FAMILIES | {
    "aimv2_native": lambda: tiny_aimv2(native=True),
    "timm_map": tiny_timm_map,
    "timm_map_cls_registers": lambda: tiny_timm_map(**WITH_PREFIX),
    "timm_mean": tiny_timm_mean,
    "timm_mean_registers": lambda: tiny_timm_mean(reg_tokens=2),
    "eva_map": lambda: tiny_eva(global_pool="map"),
    "pe_core": lambda: tiny_eva("vit_pe_core_tiny_patch16_384"),
}
"""Every family, and every readout: [CLS] rows, attention-pooling heads, the token mean."""
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def relevance_of(backbone: DecomposingBackbone, pixels: Tensor, head: nn.Linear | None = None) -> tuple:
    """Every token's relevance, the rules' pooled output, the model's own and the explained score."""
    tap = _QueriesKeys(backbone.info.num_layers)
    capture = backbone.capture(pixels, [tap])
    own = capture.pooled
    explained = None if head is None else head(own).argmax(dim=-1)
    read = backbone.read_view
    pooling = cls_attention(read, capture.block_input, capture.keys) if isinstance(read, PoolView) else None

    def target(pooled: Tensor) -> Tensor:
        return gradient_target(pooled, head, explained)

    relevance, pooled = token_relevance(backbone, pixels, tap.kept, target, pooling)
    return relevance, pooled, own, target(pooled).detach()


def without_biases(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
    return model


def pixels_for(backbone: DecomposingBackbone) -> Tensor:
    side = backbone.family.fixed_resolution() or 32
    return torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", MODELS)
def test_the_rules_forward_is_the_models_own(family: str) -> None:
    backbone = DecomposingBackbone.from_model(MODELS[family]())
    if problem := AttnLRPMap().problem(backbone):
        pytest.skip(problem)
    _, pooled, own, _ = relevance_of(backbone, pixels_for(backbone))
    assert_close(pooled, own, **scaled(own))


@pytest.mark.parametrize("family", MODELS)
def test_relevance_is_conserved_without_biases(family: str) -> None:
    """Sum over every token entering block 1 (and every hidden unit) = the explained score: the output's
    projection on its own direction, and a bias-free head's logit of the predicted class."""
    backbone = DecomposingBackbone.from_model(without_biases(MODELS[family]()))
    if problem := AttnLRPMap().problem(backbone):
        pytest.skip(problem)
    pixels = pixels_for(backbone)
    head = nn.Linear(backbone.info.hidden_size, 5, bias=False)
    for classes in (None, head):
        relevance, _, _, score = relevance_of(backbone, pixels, classes)
        assert_close(relevance.sum(dim=1), score, rtol=1e-4, atol=1e-5 * score.abs().max().item())


@pytest.mark.parametrize("swiglu", [False, True])
def test_the_map_is_the_patches_relevance_and_the_rules_matter(swiglu: bool) -> None:
    """The extra's map is the patch tokens' relevance; it is not plain gradient x input (the rules
    change the backward: the norms' scale and the attention weights are held, the gate halved)."""
    model = tiny_model(registers=4, hidden=32, layers=3, heads=4, patch=4, image=32, swiglu=swiglu)
    backbone = DecomposingBackbone.from_model(model)
    decomposition = backbone(PIXELS, extras=[AttributionMaps(maps=("attnlrp",), scored=False)])
    relevance, _, _, _ = relevance_of(backbone, PIXELS)
    patches = relevance[:, decomposition.layout.slice("patch")]
    assert_close(decomposition["attribution/attnlrp"].flatten(1), patches, **scaled(patches))
    tokens = backbone.embed(PIXELS).detach().requires_grad_(True)
    output = backbone.pooled_from(tokens, decomposition.layout)
    (gradient,) = torch.autograd.grad(gradient_target(output, None, None).sum(), [tokens])
    plain = (tokens * gradient).sum(dim=-1)
    assert (plain - relevance).abs().max() > 1e-3 * relevance.abs().max()


def test_a_norm_without_a_rule_is_one_line() -> None:
    backbone = DecomposingBackbone.from_model(tiny_model())
    backbone.view(1).norm2.__class__ = type("GroupNormish", (nn.LayerNorm,), {})  # still a LayerNorm: covered
    assert AttnLRPMap().problem(backbone) is None
    with pytest.raises(ValueError, match="AttnLRP has no rule for the norm BatchNorm1d"):
        linear_norm(nn.BatchNorm1d(4), torch.zeros(2, 4))
