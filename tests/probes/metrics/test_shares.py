from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from probes.metrics import ShareHistogram, share_histogram
from tests.probes.tester import check_metric


def test_mean_std_and_histogram_match_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    shares = rng.dirichlet([1.0, 2.0, 5.0], size=23)
    metric = ShareHistogram(columns=3)
    for start in range(0, 23, 5):
        metric.update(torch.from_numpy(shares[start : start + 5]).float())
    result = metric.compute()
    for column in range(3):
        expected = np.histogram(shares[:, column], bins=20, range=(0, 1))[0]
        assert result["counts"][column].tolist() == expected.tolist()
        assert result["mean"][column].item() == pytest.approx(shares[:, column].mean(), abs=1e-6)
        assert result["std"][column].item() == pytest.approx(shares[:, column].std(), abs=1e-6)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"expected \(samples, 3\) values"):
        ShareHistogram(columns=3).update(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least one bin"):
        ShareHistogram(columns=3, bins=0)


def test_shares_tester_everywhere() -> None:
    rng = np.random.default_rng(1)
    shares = rng.dirichlet([0.5, 1.0, 4.0], size=17)
    batches = [(torch.from_numpy(shares[s : s + 4]),) for s in range(0, 17, 4)]
    reference = {
        "mean": shares.mean(0),
        "std": shares.std(0),
        "counts": np.stack([np.histogram(column, bins=7, range=(0, 1))[0] for column in shares.T]),
    }
    check_metric(partial(ShareHistogram, columns=3, bins=7), batches, reference, atol=1e-12)


def test_histogram_bins_match_numpy_at_the_edges() -> None:
    """Values on bin edges, 0 and 1 land where numpy.histogram puts them (last bin closed)."""
    shares = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.2499, 0.999], dtype=torch.float64)
    expected = np.histogram(shares.numpy(), bins=4, range=(0, 1))[0]
    assert share_histogram(shares[:, None], bins=4)[0].tolist() == expected.tolist()
    metric = ShareHistogram(columns=2, bins=4)
    metric.update(torch.stack([shares, 1 - shares], dim=1))
    assert metric.compute()["counts"][0].tolist() == expected.tolist()
    assert metric.bin_edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
