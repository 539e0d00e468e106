from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import AttentionSplit


def test_mean_and_std_match_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    masses = rng.dirichlet([1.0, 2.0, 5.0], size=23)
    metric = AttentionSplit()
    for start in range(0, 23, 5):
        part = torch.from_numpy(masses[start : start + 5]).float()
        metric.update(part[:, 0], part[:, 1], part[:, 2])
    result = metric.compute()
    for column, group in enumerate(("cls", "register", "patch")):
        mean, std = result[group]
        assert mean.item() == pytest.approx(masses[:, column].mean(), abs=1e-6)
        assert std.item() == pytest.approx(masses[:, column].std(), abs=1e-6)
    two_way = masses[:, 1] / (masses[:, 1] + masses[:, 2])
    assert result["register_vs_patch"][0].item() == pytest.approx(two_way.mean(), abs=1e-6)
    assert result["register_vs_patch"][1].item() == pytest.approx(two_way.std(), abs=1e-6)


def test_no_registers_gives_zero_register_share() -> None:
    metric = AttentionSplit()
    metric.update(torch.tensor([1.0, 0.2]), torch.zeros(2), torch.tensor([0.0, 0.8]))
    assert metric.compute()["register_vs_patch"][0].item() == 0.0


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="equal \\(images,\\) vectors"):
        AttentionSplit().update(torch.zeros(2), torch.zeros(3), torch.zeros(2))
