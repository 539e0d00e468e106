"""A set of MLP neurons as an intervention target (`neurons@12:5,17,300`): their activations after
the non-linearity replaced for every token, against the model's own forward with a forward hook on
the family's own MLP modules doing that (the activation module, or the up projection of a gated MLP:
zeroing it zeroes the gated product); the mean mode against a mean recorded here; the forms of the
spec, and what is refused, in one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.extras import Intervention, ReferenceStatistics, parse_intervention
from harness.extras.interventions.recording import record_reference
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_clip, tiny_dinov3, tiny_timm
from tests.harness.test_interventions import scaled

FAMILIES: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "dinov2": (lambda: tiny_model(registers=2, layers=3), "activation_fn"),
    "dinov2-swiglu": (lambda: tiny_model(swiglu=True, layers=3), "up_proj"),
    "dinov3-gated": (lambda: tiny_dinov3(use_gated_mlp=True), "up_proj"),
    "clip": (tiny_clip, "activation_fn"),
    "timm": (lambda: tiny_timm(init_values=0.5), "act"),
}
"""Family -> (a tiny model, the module of its MLP whose output columns are the neurons, or gate them)."""
NEURONS = (1, 5, 6)


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(3, 3, 32, 40, generator=torch.Generator().manual_seed(7))


def hooked_forward(
    backbone: DecomposingBackbone, pixels: Tensor, block: int, module: str, values: Callable[[Tensor], Tensor]
) -> Tensor:
    """The model's own pooled output with columns `NEURONS` of block `block`'s MLP `module` output
    set to `values(those columns)` (a forward hook on that module)."""
    mlp = backbone.view(block).mlp

    def replace(hooked: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        output = output.clone()
        output[..., list(NEURONS)] = values(output[..., list(NEURONS)])
        return output

    handle = getattr(mlp, module).register_forward_hook(replace)
    try:
        return backbone.family.pooled(pixels).float()
    finally:
        handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_zeroing_neurons_is_the_models_own_forward_with_them_zeroed(family: str, pixels: Tensor) -> None:
    make, module = FAMILIES[family]
    backbone = DecomposingBackbone.from_model(make())
    clean = backbone(pixels)["output/full"]
    layers = backbone.info.num_layers
    for block in (1, layers):
        intervention = parse_intervention(f"neurons@{block}:{','.join(map(str, NEURONS))}:zero", layers)
        got = backbone(pixels, extras=[intervention]).pass_of(intervention.name)
        expected = hooked_forward(backbone, pixels, block, module, torch.zeros_like)
        assert_close(got["output/full"], expected, **scaled(expected))
        assert (got["output/full"] - clean).abs().max() > 1e-4 * clean.abs().max()  # it acts
        # in the last block the decomposition no longer describes the output: only the outputs
        assert ("split/patch" in got) == (block < layers)


@torch.no_grad()
def test_mean_neurons_are_the_reference_images_mean_per_token(pixels: Tensor) -> None:
    """The mean mode writes each token position's mean activation over the reference images, as
    recorded here by a forward hook on the activation module."""
    backbone = DecomposingBackbone.from_model(tiny_model(registers=2, layers=3))
    reference = torch.randn(4, 3, 32, 40, generator=torch.Generator().manual_seed(8))
    seen: list[Tensor] = []
    activation = backbone.view(2).mlp.activation_fn
    handle = activation.register_forward_hook(lambda m, i, output: seen.append(output[..., list(NEURONS)]))
    backbone.family.pooled(reference)
    handle.remove()
    mean = seen[0].double().mean(dim=0).float()  # tokens, neurons
    intervention = Intervention(("neurons:" + ",".join(map(str, NEURONS)),), (2,), "mean")
    statistics = ReferenceStatistics(bank_size=4)
    record_reference(backbone, reference, torch.arange(4), [intervention], statistics)
    assert_close(statistics.mean(intervention.reference_keys()[0]), mean, **scaled(mean))
    got = backbone(pixels, extras=[intervention.using(statistics)]).pass_of(intervention.name)["output/full"]
    expected = hooked_forward(backbone, pixels, 2, "activation_fn", lambda current: mean.expand_as(current))
    assert_close(got, expected, **scaled(expected))


def test_spec_forms_and_refusals() -> None:
    backbone = DecomposingBackbone.from_model(tiny_model(layers=2))  # MLP width 128
    spoken = parse_intervention("neurons@2:17,5,5:zero", 2)
    written = parse_intervention("neurons:5,17@2:zero", 2)
    assert spoken == written and spoken.name == "model/neurons:5,17@2/zero"
    assert Intervention.from_name(spoken.name) == spoken
    assert backbone.info.mlp_size == 128
    with pytest.raises(ValueError, match=r"this model's MLPs have neurons 0\.\.127"):
        parse_intervention("neurons@1:3,128:zero", 2).check_model(backbone.info)
    with pytest.raises(ValueError, match="neurons:3 is no token"):
        parse_intervention("neurons@1:3:knockout", 2).check_model(backbone.info)
    with pytest.raises(ValueError, match="not a target of the readout level"):
        parse_intervention("neurons@1:3:zero:readout", 2)
    assert not parse_intervention("neurons@1:3:zero", 2).allows_deletion
    assert parse_intervention("register+neurons:3@1:zero", 2).targets == ("register", "neurons:3")
    with pytest.raises(ValueError, match="unknown intervention target"):  # a bare `neurons` names none
        parse_intervention("neurons@1:zero", 2)
