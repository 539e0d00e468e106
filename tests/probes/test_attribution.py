"""The attribution probe against numpy: areas under the perturbation curves, the gain over the random
control, the rank agreement, seeded bootstrap intervals; batch order does not matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import PIXELS
from harness.attribution import MAPS, SCORES
from harness.decomposition import DELETION_ORDERS
from probes.attribution import AttributionProbe, bootstrap_interval

FRACTIONS = (0.1, 0.25, 0.5, 0.75)
TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz


def batch(images: np.ndarray, generator: torch.Generator) -> dict[str, torch.Tensor]:
    rows = {PIXELS: torch.rand(len(images), 3, 8, 8, generator=generator) - 0.5}
    for name in MAPS:
        for score in SCORES:
            for order in DELETION_ORDERS:
                rows[f"maps/{name}/{score}/{order}"] = torch.rand(
                    len(images), len(FRACTIONS), generator=generator
                )
        rows[f"maps/{name}/rank_agreement"] = torch.rand(len(images), generator=generator) * 2 - 1
        rows[f"attribution/{name}"] = torch.rand(len(images), 2, 2, generator=generator)
    return rows


def test_areas_gains_and_agreement_equal_numpy() -> None:
    generator = torch.Generator().manual_seed(0)
    indices = [np.arange(0, 5), np.arange(5, 12), np.arange(12, 13)]
    batches = [batch(part, generator) for part in indices]
    probe, shuffled = AttributionProbe(seed=3), AttributionProbe(seed=3)
    for part, rows in zip(indices, batches, strict=True):
        probe.update(rows, torch.full((len(part),), -1), torch.from_numpy(part))
    for part, rows in reversed(list(zip(indices, batches, strict=True))):  # another order: the same
        shuffled.update(rows, torch.full((len(part),), -1), torch.from_numpy(part))
    results = probe.compute()
    assert results == shuffled.compute()
    # the gallery: the maps and images of the 4 smallest dataset indices, whatever the batch order
    gallery, again = probe.arrays(), shuffled.arrays()
    assert gallery["attribution/gallery/index"].tolist() == [0, 1, 2, 3]
    for name, value in gallery.items():
        assert torch.equal(value, again[name]), name
    assert torch.equal(gallery["attribution/gallery/rollout"], batches[0]["attribution/rollout"][:4])
    assert gallery["attribution/gallery/image"].dtype == torch.uint8
    every = {
        name: np.concatenate([rows[name].numpy() for rows in batches]).astype(np.float64)
        for name in batches[0]
    }
    span = FRACTIONS[-1] - FRACTIONS[0]
    for name in MAPS:
        for score in SCORES:
            areas = {
                order: TRAPEZOID(every[f"maps/{name}/{score}/{order}"], FRACTIONS, axis=1) / span
                for order in DELETION_ORDERS
            }
            for order in DELETION_ORDERS:
                assert results[f"maps/{name}/{score}/area/{order}"] == pytest.approx(
                    areas[order].mean(), rel=1e-6
                )
                curve = every[f"maps/{name}/{score}/{order}"]
                assert results[f"maps/{name}/{score}/{order}/25"] == pytest.approx(
                    curve[:, 1].mean(), rel=1e-6
                )
            gain = areas["random"] - areas["top"] if score == "deletion" else areas["top"] - areas["random"]
            assert results[f"maps/{name}/{score}/gain"] == pytest.approx(gain.mean(), rel=1e-5, abs=1e-9)
            low, high = (
                results[f"maps/{name}/{score}/gain/ci_low"],
                results[f"maps/{name}/{score}/gain/ci_high"],
            )
            assert low <= gain.mean() <= high
        agreement = every[f"maps/{name}/rank_agreement"]
        assert results[f"maps/{name}/rank_agreement"] == pytest.approx(agreement.mean(), rel=1e-6)


def test_bootstrap_intervals_are_seeded_and_shrink_with_the_images() -> None:
    values = torch.randn(200, generator=torch.Generator().manual_seed(1))
    assert bootstrap_interval(values, seed=5) == bootstrap_interval(values, seed=5)
    low, high = bootstrap_interval(values, seed=5)
    few_low, few_high = bootstrap_interval(values[:20], seed=5)
    assert high - low < few_high - few_low  # about sqrt(10) narrower
    standard_error = values.double().std().item() / np.sqrt(200)
    assert high - low == pytest.approx(2 * 1.96 * standard_error, rel=0.2)
    assert bootstrap_interval(torch.full((5,), 0.3), seed=0) == pytest.approx((0.3, 0.3))
    assert all(np.isnan(bootstrap_interval(torch.tensor([1.0]), seed=0)))


def test_the_gallery_keeps_the_same_images_on_one_or_two_processes() -> None:
    """`FirstImages` fed batch by batch, cloned, reset, and on 2 processes (tests/probes/tester.py):
    the maps and images of the smallest dataset indices."""
    import functools

    from datamodules.transforms import to_uint8_image
    from probes.attribution import FirstImages
    from tests.probes.tester import check_metric

    generator = torch.Generator().manual_seed(2)
    order = torch.randperm(11, generator=generator)
    maps = torch.rand(11, 2, 3, generator=generator)
    pixels = torch.rand(11, 3, 4, 4, generator=generator) - 0.5
    batches = [({"attribution/rollout": maps[part]}, pixels[part], order[part]) for part in order.split(3)]
    first = order.argsort()[:3]  # the rows of indices 0, 1, 2
    reference = {
        "attribution/rollout": maps[first],
        "image": to_uint8_image(pixels[first]),
        "index": torch.arange(3),
    }
    make = functools.partial(FirstImages, 3, ["attribution/rollout"], functools.partial(to_uint8_image))
    check_metric(make, batches, reference, atol=0)
