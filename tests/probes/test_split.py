from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import SplitProbe
from probes.split import TWO_WAY


def _decomposition(masses: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        f"split/{group}": torch.from_numpy(masses[:, i])
        for i, group in enumerate(("cls", "register", "patch"))
    }


def test_split_probe_results_and_two_way_share_match_numpy() -> None:
    rng = np.random.default_rng(0)
    masses = rng.dirichlet([1.0, 2.0, 5.0], size=23)
    probe = SplitProbe()
    for start in range(0, 23, 5):
        probe.update(_decomposition(masses[start : start + 5]), torch.zeros(0), torch.zeros(0))
    results, arrays = probe.compute(), probe.arrays()
    two_way = masses[:, 1] / (masses[:, 1] + masses[:, 2])
    columns = {"cls": masses[:, 0], "register": masses[:, 1], "patch": masses[:, 2], TWO_WAY: two_way}
    assert list(results) == [
        SplitProbe.result_name(c, s) for c in SplitProbe.COLUMNS for s in SplitProbe.STATS
    ]
    for column, values in columns.items():
        assert results[SplitProbe.result_name(column, "mean")] == pytest.approx(values.mean(), abs=1e-12)
        assert results[SplitProbe.result_name(column, "std")] == pytest.approx(values.std(), abs=1e-12)
        expected = np.histogram(values, bins=20, range=(0, 1))[0]
        assert arrays[SplitProbe.histogram_name(column)].tolist() == expected.tolist()
    np.testing.assert_allclose(arrays[SplitProbe.BIN_EDGES].numpy(), np.linspace(0, 1, 21), atol=1e-15)


def test_no_registers_gives_zero_two_way_share() -> None:
    probe = SplitProbe()
    masses = np.array([[1.0, 0.0, 0.0], [0.2, 0.0, 0.8]])
    probe.update(_decomposition(masses), torch.zeros(0), torch.zeros(0))
    assert probe.compute()[SplitProbe.result_name(TWO_WAY, "mean")] == 0.0


def test_unequal_masses_are_refused() -> None:
    inputs = {"split/cls": torch.zeros(2), "split/register": torch.zeros(3), "split/patch": torch.zeros(2)}
    with pytest.raises(ValueError, match="equal \\(images,\\) vectors"):
        SplitProbe().update(inputs, torch.zeros(0), torch.zeros(0))
