"""The register_neurons probe on the model whose planted neurons make each image's bright patch a
high-norm token: fed in two batches (out of order), it reports one outlier per image at the bright
patch, never [CLS], and the planted neurons as the top two, with their own scores (its figure: the
command-line test of test-time registers)."""

from __future__ import annotations

import torch

from harness import DecomposingBackbone
from harness.extras import NeuronScores, RegisterNeurons, ranked_neurons
from probes import ProbeContext
from probes.register_neurons import RegisterNeuronsProbe
from tests.harness.test_test_time_registers import (
    PLANTED,
    PLANTED_BLOCK,
    THRESHOLD,
    bright_patch_images,
    planted_model,
)


@torch.no_grad()
def test_the_probe_finds_the_planted_neurons_and_each_images_outlier() -> None:
    backbone = DecomposingBackbone.from_model(planted_model())
    search = RegisterNeurons(THRESHOLD, 3, 3)
    context = ProbeContext(backbone.info, neuron_search=search, neuron_top_k=4)
    probe = RegisterNeuronsProbe.from_context(context)
    assert probe.extras() == (search,)
    pixels, bright = bright_patch_images(6)
    whole = backbone(pixels, extras=[search])
    for part in (torch.tensor([3, 4, 5]), torch.tensor([0, 1, 2])):  # the later images first
        found = backbone(pixels[part], extras=[search])
        probe.update(found, torch.full((3,), -1), part)
    results, arrays = probe.compute(), probe.arrays()
    assert (
        results["register_neurons/outliers"] == 1.0
        and results["register_neurons/images_with_outliers"] == 1.0
    )
    assert results["register_neurons/cls_outlier"] == 0.0
    assert results["register_neurons/top_block"] == PLANTED_BLOCK
    assert results["register_neurons/top_neuron"] in PLANTED
    expected = torch.zeros(6, whole["register_neurons/outliers"].shape[1], dtype=torch.uint8)
    expected[torch.arange(6), bright] = 1
    assert torch.equal(arrays["register_neurons/outliers"], expected)  # in dataset order
    reference = NeuronScores(3, backbone.info.mlp_size)
    reference.update(whole["register_neurons/scores"], whole["register_neurons/outliers"])
    ranked = ranked_neurons(reference.compute()["scores"], 4)
    table = arrays["register_neurons/ranked"]
    assert table.shape == (4, 3) and {int(n) for n in table[:2, 1]} == set(PLANTED)
    assert torch.allclose(table[:, 2], torch.tensor([r.score for r in ranked], dtype=torch.float64))
