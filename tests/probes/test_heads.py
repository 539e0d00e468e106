"""The heads probe against a numpy reference written from its description: per image, each head's
projection share of each group's term and of the update, its cosine to the update, and the smallest
carrying set found by trying every set of heads; means and stds over images, fed batch by batch."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from cls_decoupling.cli import evaluate
from harness import DecomposingBackbone
from harness.extras import head_prefix
from probes.heads import HeadsProbe
from probes.registry import ProbeSelection
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_deit


def smallest_set(shares: np.ndarray, reach: float = 0.9) -> tuple[int, set[int]]:
    """The fewest heads whose shares sum to `reach` or more, by trying every set of each size."""
    for size in range(1, len(shares) + 1):
        for chosen in itertools.combinations(range(len(shares)), size):
            if shares[list(chosen)].sum() >= reach:
                return size, set(chosen)
    raise AssertionError("the shares sum to less than the reach")


def reference(terms: np.ndarray, masses: np.ndarray) -> dict[str, np.ndarray]:
    """terms (images, heads, groups, hidden), masses (images, heads, groups) -> per-image quantities."""
    images, heads, groups, _ = terms.shape
    share = np.zeros((images, heads, groups))
    cosine, update, in_set = (np.zeros((images, heads)) for _ in range(3))
    carrying = np.zeros(images)
    for i in range(images):
        for g in range(groups):
            total = terms[i, :, g].sum(0)
            if total @ total > 0:
                share[i, :, g] = [terms[i, h, g] @ total / (total @ total) for h in range(heads)]
        whole = terms[i].sum(1)  # heads, hidden
        u = whole.sum(0)
        update[i] = whole @ u / (u @ u)
        cosine[i] = whole @ u / (np.linalg.norm(whole, axis=1) * np.linalg.norm(u))
        carrying[i], members = smallest_set(update[i])
        in_set[i, list(members)] = 1
    return {"share": share, "mass": masses, "cosine": cosine, "update": update, "in_set": in_set,
            "carrying": carrying}  # fmt: skip


@pytest.mark.parametrize("make", [lambda: tiny_model(registers=2, layers=3, heads=8), tiny_deit])
@torch.no_grad()
def test_results_and_arrays_equal_the_reference(make: object) -> None:
    backbone = DecomposingBackbone.from_model(make())  # type: ignore[operator]
    info = backbone.info
    pixels = torch.randn(7, 3, 32, 40, generator=torch.Generator().manual_seed(4))
    groups = backbone.layout_for(pixels).groups
    probe = HeadsProbe((1, info.num_layers), info.num_layers, info.num_heads, groups)
    entries: dict[str, list[Tensor]] = {}
    for batch in (pixels[:4], pixels[4:]):
        decomposition = backbone(batch, extras=probe.extras())
        probe.update(decomposition, torch.full((len(batch),), -1), torch.arange(len(batch)))
        for name in decomposition:
            entries.setdefault(name, []).append(decomposition[name])
    results, arrays = probe.compute(), probe.arrays()
    for block in (1, info.num_layers):
        entry, prefix = head_prefix(block, info.num_layers), HeadsProbe.result_prefix(block, info.num_layers)

        def stacked(kind: str, entry: str = entry) -> np.ndarray:
            return np.stack(
                [torch.cat(entries[f"{entry}{kind}{g}"]).double().numpy() for g in groups], axis=2
            )

        expected = reference(stacked(""), stacked("split/"))
        for quantity in ("share", "mass", "cosine", "update"):
            np.testing.assert_allclose(arrays[prefix + quantity], expected[quantity].mean(0), atol=2e-5)
            std = arrays[f"{prefix}{quantity}/std"]
            np.testing.assert_allclose(std, expected[quantity].std(0), atol=2e-5)
        np.testing.assert_allclose(arrays[prefix + "in_set"], expected["in_set"].mean(0), atol=1e-9)
        assert results[prefix + "carrying"] == pytest.approx(expected["carrying"].mean())
        assert results[prefix + "carrying/std"] == pytest.approx(expected["carrying"].std(), abs=1e-9)
        mean_update = expected["update"].mean(0)
        assert results[prefix + "carrying_set"] == smallest_set(mean_update)[0]
        assert results[prefix + "top_head"] == int(mean_update.argmax()) + 1
        assert results[prefix + "top_update"] == pytest.approx(mean_update.max(), abs=2e-5)
        for g, group in enumerate(groups):
            top = expected["share"].mean(0)[:, g].max()
            assert results[f"{prefix}top_share/{group}"] == pytest.approx(top, abs=2e-5)
        np.testing.assert_allclose(expected["share"].sum(1), 1, atol=1e-4)  # the shares are a partition


def test_evaluate_writes_the_heads_results_and_figures(tmp_path: Path) -> None:
    """`--probe heads --layers 1` on the built-in demo: last-block and block-1 results, both figures;
    `all` holds it and `--from-features` cannot feed it."""
    output = tmp_path / "run"
    argv = ["--backbone", "random:tiny", "--data", "demo", "--limit", "3", "--resolution", "56",
            "--num-workers", "0", "--probe", "heads", "--layers", "1", "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 0
    summary = json.loads((output / "results.json").read_text())
    results = summary["results"]
    assert {"heads/carrying", "heads/layer1/carrying", "heads/top_head"} <= set(results)
    assert 1 <= results["heads/carrying"] <= summary["backbone"]["num_heads"]
    assert all((output / "figures" / name).is_file() for name in ("heads.png", "heads_update.png"))
    assert "heads" in ProbeSelection.parse("all").names
    assert "heads" not in ProbeSelection.parse("all", pixels=False).names
