"""Layer x layer CKA of the [CLS] states against the numpy Gram-matrix formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import InsufficientDataError
from probes import LayerCKAProbe
from tests.probes.metrics.test_cka import debiased_gram_cka, gram_linear_cka


def test_every_pair_of_chosen_blocks_matches_the_gram_formulas() -> None:
    generator = np.random.default_rng(0)
    states = generator.normal(size=(40, 6, 5))  # images, embeddings + 5 blocks, hidden
    states[:, 3] = 2 * states[:, 2] + 1  # a pair with CKA 1
    layers = (1, 2, 3, 5)
    probe = LayerCKAProbe(layers, hidden_size=5)
    for start in range(0, 40, 9):
        probe.update(
            {"hidden/cls": torch.from_numpy(states[start : start + 9])}, torch.zeros(0), torch.zeros(0)
        )
    results = probe.compute()
    assert len(results) == 2 * len(layers) * (len(layers) - 1) // 2
    for i in layers:
        for j in layers:
            if i < j:
                plain = results[LayerCKAProbe.result_name("cka_layers", i, j)]
                debiased = results[LayerCKAProbe.result_name("cka_layers_debiased", j, i)]  # either order
                assert plain == pytest.approx(gram_linear_cka(states[:, i], states[:, j]), rel=1e-9)
                assert debiased == pytest.approx(
                    debiased_gram_cka(states[:, i], states[:, j]), rel=1e-7, abs=1e-9
                )
    assert results["cka_layers/2/3"] == pytest.approx(1.0, rel=1e-12)


def test_one_block_is_skipped_with_its_reason() -> None:
    probe = LayerCKAProbe((3,), hidden_size=5)
    probe.update({"hidden/cls": torch.randn(4, 4, 5)}, torch.zeros(0), torch.zeros(0))
    with pytest.raises(InsufficientDataError, match="2 or more blocks"):
        probe.compute()
