"""Norms (Fig 5a) and layerwise (Fig 5b) probes against numpy and HF's own hidden states."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from harness import variant_names
from probes import LayerwiseProbe, NormsProbe
from probes.metrics import ColumnStats, column_stats
from tests.conftest import ARCHITECTURES, tiny_model, wrap
from tests.probes.tester import check_metric


def test_column_stats_everywhere() -> None:
    values = np.random.default_rng(4).normal(size=(19, 3)) * [1.0, 5.0, 0.1] + [0.0, 100.0, -3.0]
    batches = [(torch.from_numpy(values[s : s + 4]),) for s in range(0, 19, 4)]
    reference = {"mean": values.mean(0), "std": values.std(0)}
    check_metric(functools.partial(ColumnStats, 3), batches, reference, atol=1e-9)
    functional = column_stats(torch.from_numpy(values))
    np.testing.assert_allclose(functional["mean"].numpy(), values.mean(0), atol=1e-12)
    np.testing.assert_allclose(functional["std"].numpy(), values.std(0), atol=1e-12)


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_layerwise_equals_cosines_of_hf_hidden_states(registers: int, swiglu: bool) -> None:
    model = tiny_model(registers, swiglu, layers=3)
    backbone = wrap(model)
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    probe = LayerwiseProbe(num_layers=3)
    probe.update(backbone(pixels), torch.zeros(5), torch.arange(5))
    hidden = [
        h[:, 0].detach().double().numpy()
        for h in model(pixel_values=pixels, output_hidden_states=True).hidden_states
    ]
    last = hidden[-1]
    results = probe.compute()
    for layer, states in enumerate(hidden):
        cosines = np.sum(states * last, 1) / (np.linalg.norm(states, axis=1) * np.linalg.norm(last, axis=1))
        assert results[f"layerwise/{layer}"] == pytest.approx(cosines.mean(), abs=1e-6)
        assert results[f"layerwise/{layer}/std"] == pytest.approx(cosines.std(), abs=1e-6)
    assert results["layerwise/3"] == pytest.approx(1.0, abs=1e-6)


def test_norms_equal_numpy_norms_of_the_variants() -> None:
    backbone = wrap(tiny_model(4, False))
    pixels = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    decomposition = backbone(pixels)
    probe = NormsProbe(variant_names(4))
    probe.update(decomposition, torch.zeros(6), torch.arange(6))
    probe.update(backbone(pixels[:2]), torch.zeros(2), torch.arange(6, 8))
    results = probe.compute()
    for variant in variant_names(4):
        values = np.concatenate([decomposition[variant].numpy(), decomposition[variant][:2].numpy()]).astype(
            np.float64
        )
        norms = np.linalg.norm(values, axis=1)
        assert results[f"norm/{variant}"] == pytest.approx(norms.mean(), rel=1e-5), variant
        assert results[f"norm/{variant}/std"] == pytest.approx(norms.std(), rel=1e-4, abs=1e-6), variant


@pytest.mark.parametrize(
    "sizes", [[500], [1] * 7 + [493], [250, 250], [13, 487]], ids=lambda s: f"{len(s)}-batches"
)
def test_std_of_nearly_constant_values_keeps_its_digits(sizes: list[int]) -> None:
    """Values of 1000 with a spread of 1e-5 (norms after a final LayerNorm look like this): the
    sum-of-squares form E[x^2] - E[x]^2 loses every digit of such a std in float64; the merged
    centred sums keep them, whatever the batches."""
    values = 1000.0 + 1e-5 * np.random.default_rng(6).normal(size=(500, 2))
    metric = ColumnStats(2)
    for part in np.split(values, np.cumsum(sizes)[:-1]):
        metric.update(torch.from_numpy(part))
    std = metric.compute()["std"].numpy()
    np.testing.assert_allclose(std, values.std(0), rtol=1e-6)


def test_forward_and_update_mixed_count_every_sample() -> None:
    """torchmetrics' forward merges a batch state into the running one as extra rows; the next update
    must merge them all."""
    values = torch.from_numpy(np.random.default_rng(8).normal(size=(10, 3)))
    metric = ColumnStats(3)
    metric(values[:3])
    metric(values[3:6])
    metric.update(values[6:])
    stats = metric.compute()
    np.testing.assert_allclose(stats["mean"].numpy(), values.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"].numpy(), values.numpy().std(0), rtol=1e-12)
