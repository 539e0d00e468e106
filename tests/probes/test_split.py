from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from probes import AttentionSplit
from tests.probes.tester import check_metric


def test_mean_and_std_match_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    masses = rng.dirichlet([1.0, 2.0, 5.0], size=23)
    metric = AttentionSplit()
    for start in range(0, 23, 5):
        part = torch.from_numpy(masses[start : start + 5]).float()
        metric.update(part[:, 0], part[:, 1], part[:, 2])
    result = metric.compute()
    for column, group in enumerate(("cls", "register", "patch")):
        mean, std, counts = result[group]
        assert counts.tolist() == np.histogram(masses[:, column], bins=20, range=(0, 1))[0].tolist()
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


def test_split_tester_everywhere() -> None:
    rng = np.random.default_rng(1)
    masses = rng.dirichlet([0.5, 1.0, 4.0], size=17)
    batches = [tuple(torch.from_numpy(masses[s : s + 4, i]) for i in range(3)) for s in range(0, 17, 4)]
    two_way = masses[:, 1] / (masses[:, 1] + masses[:, 2])
    reference = {
        name: (column.mean(), column.std(), np.histogram(column, bins=7, range=(0, 1))[0])
        for name, column in zip(
            ("cls", "register", "patch", "register_vs_patch"), [*masses.T, two_way], strict=True
        )
    }
    check_metric(partial(AttentionSplit, bins=7), batches, reference, atol=1e-12)


def test_histogram_bins_match_numpy_at_the_edges() -> None:
    """Values on bin edges, 0 and 1 land where numpy.histogram puts them (last bin closed)."""
    shares = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.2499, 0.999], dtype=torch.float64)
    metric = AttentionSplit(bins=4)
    metric.update(shares, 1 - shares, torch.zeros_like(shares))
    expected = np.histogram(shares.numpy(), bins=4, range=(0, 1))[0]
    assert metric.compute()["cls"].counts.tolist() == expected.tolist()
    assert metric.bin_edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
