"""Registers probe (Fig 2b) against numpy on HF's own penultimate hidden states."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from harness.decomposition import PENULTIMATE
from probes import RegistersProbe
from probes.metrics import HighNormToken
from tests.conftest import ARCHITECTURES, tiny_model, wrap
from tests.probes.tester import check_metric


def reference(
    states: np.ndarray, norm1: torch.nn.Module, num_registers: int, top_dims: int
) -> dict[str, float]:
    """From the penultimate hidden states (images, tokens, hidden), with explicit pairwise cosines."""
    tokens = states[:, 1:]
    norms = np.linalg.norm(tokens, axis=2)
    top = norms.argmax(1)
    top_state = tokens[np.arange(len(top)), top]
    after = norm1(torch.from_numpy(top_state).float()).detach().double().numpy()
    unit = top_state / np.linalg.norm(top_state, axis=1, keepdims=True)
    n = len(top)
    pairwise = [unit[i] @ unit[j] for i in range(n) for j in range(n) if i != j]
    positions = np.bincount(top + 1, minlength=states.shape[1])
    top_norm = norms.max(1).mean()
    other_norm = ((norms.sum(1) - norms.max(1)) / (norms.shape[1] - 1)).mean()
    dims = np.argsort(-np.abs(top_state.mean(0)))[:top_dims]
    return {
        "top_in_registers": float(np.mean(top + 1 <= num_registers)),
        "top_token": int(positions.argmax()),
        "top_token_share": positions.max() / n,
        "top_norm": top_norm,
        "other_norm": other_norm,
        "norm_ratio": top_norm / other_norm,
        "pairwise_cosine": float(np.mean(pairwise)),
        "top_dims_before": float(np.abs(top_state.mean(0)[dims]).mean()),
        "top_dims_after": float(np.abs(after.mean(0)[dims]).mean()),
    }


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_registers_probe_equals_numpy_on_hf_hidden_states(registers: int, swiglu: bool) -> None:
    model = tiny_model(registers, swiglu)
    pixels = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    decomposition = wrap(model)(pixels)
    penultimate = (
        model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].detach().double().numpy()
    )
    num_tokens = 1 + registers + 64
    probe = RegistersProbe(32, num_tokens, registers)
    probe.update(decomposition, torch.zeros(7), torch.arange(7))
    expected = reference(penultimate, model.encoder.layer[-1].norm1, registers, top_dims=32)
    results = probe.compute()
    for key, value in expected.items():
        assert results[f"registers/{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    top = np.linalg.norm(penultimate[:, 1:], axis=2).argmax(1) + 1
    counts = probe.arrays()["registers/top_token_counts"]
    assert counts.tolist() == np.bincount(top, minlength=num_tokens).tolist()


def test_high_norm_token_everywhere() -> None:
    model = tiny_model(4, False)
    pixels = torch.randn(9, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    decomposition = wrap(model)(pixels)
    columns = [decomposition[name] for name in PENULTIMATE]
    batches = [tuple(column[s : s + 2] for column in columns) for s in range(0, 9, 2)]
    whole = HighNormToken(32, 69, 4)
    whole.update(*columns)
    check_metric(functools.partial(HighNormToken, 32, 69, 4), batches, whole.compute(), atol=1e-9)


def test_register_hits_start_after_a_distillation_token() -> None:
    """With a distillation token at position 1, registers sit at 2..r+1: a top token at position 1 is
    not a register hit, one at r+1 is."""
    metric = HighNormToken(4, 10, 2, first_register=2)
    positions = torch.tensor([1, 2, 3, 4])  # distillation, register, register, first patch
    states = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    metric.update(positions, torch.ones(4), torch.ones(4), states, states)
    assert float(metric.compute()["top_in_registers"]) == pytest.approx(0.5)
