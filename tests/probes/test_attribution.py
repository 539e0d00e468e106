"""The attribution probe against numpy: areas under the perturbation curves, the gain over the random
control, the rank agreement, seeded bootstrap intervals; batch order does not matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import PIXELS
from harness.extras.attribution import EXPLAINED, SCORES, head_map_names, map_names
from probes.attribution import AttributionProbe, bootstrap_interval
from probes.attribution_figures import gallery_figure

FRACTIONS = (0.1, 0.25, 0.5, 0.75)
TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
HEADS = 2
CLASSES = 3
MAPS = map_names()
HEAD_MAPS = head_map_names(range(1, HEADS + 1))


def batch(images: np.ndarray, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """What the backbone gives the probe with class scores: every map's curves (one head's without
    the reversed order), one random control shared by every map, the probabilities and predicted
    classes along the curves, and the class each full image is given."""

    def curves() -> dict[str, torch.Tensor]:
        shape = (len(images), len(FRACTIONS))
        return {
            "": torch.rand(shape, generator=generator),
            "/probability": torch.rand(shape, generator=generator),
            "/predicted": torch.randint(CLASSES, shape, generator=generator),
        }

    rows = {PIXELS: torch.rand(len(images), 3, 8, 8, generator=generator) - 0.5}
    rows[EXPLAINED] = torch.randint(CLASSES, (len(images),), generator=generator)
    for score in SCORES:  # one control for every map
        rows |= {f"maps/random/{score}{suffix}": v for suffix, v in curves().items()}
    for name in (*MAPS, *HEAD_MAPS):
        for score in SCORES:
            orders = ("top",) if name in HEAD_MAPS else ("top", "bottom")
            for order, values in ((order, curves()) for order in orders):
                rows |= {f"maps/{name}/{score}/{order}{suffix}": v for suffix, v in values.items()}
        rows[f"maps/{name}/rank_agreement"] = torch.rand(len(images), generator=generator) * 2 - 1
        rows[f"attribution/{name}"] = torch.rand(len(images), 2, 2, generator=generator)
    return rows


@pytest.mark.parametrize("classes", [False, True], ids=["cosine", "with class scores and labels"])
def test_areas_gains_and_agreement_equal_numpy(classes: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    indices = [np.arange(0, 5), np.arange(5, 12), np.arange(12, 13)]
    batches = [batch(part, generator) for part in indices]
    labels = [torch.randint(CLASSES, (len(part),), generator=generator) for part in indices]
    scores = torch.nn.Linear(4, CLASSES) if classes else None
    probe, shuffled = (
        AttributionProbe(seed=3, heads=range(1, HEADS + 1), class_scores=scores, labelled=classes)
        for _ in range(2)
    )
    for part, rows, label in zip(indices, batches, labels, strict=True):
        probe.update(rows, label, torch.from_numpy(part))
    for part, rows, label in reversed(list(zip(indices, batches, labels, strict=True))):  # the same
        shuffled.update(rows, label, torch.from_numpy(part))
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
    label = torch.cat(labels).numpy()
    measures = {"cosine": ""} | ({"probability": "/probability", "accuracy": "/predicted"} if classes else {})
    assert not any("/probability/" in name or "/accuracy/" in name for name in results) or classes
    if classes:
        assert results["maps/full/accuracy"] == pytest.approx((every[EXPLAINED] == label).mean())
    span = FRACTIONS[-1] - FRACTIONS[0]

    def measured(curve: str, measure: str) -> np.ndarray:
        values = every[curve + measures[measure]]
        return (values == label[:, None]).astype(np.float64) if measure == "accuracy" else values

    for name in (*MAPS, *HEAD_MAPS):
        orders = ("top", "random") if name in HEAD_MAPS else ("top", "random", "bottom")
        for score in SCORES:
            for measure in measures:
                prefix = f"maps/{name}/{score}/{measure}"
                names = {order: f"maps/{name}/{score}/{order}" for order in orders} | {
                    "random": f"maps/random/{score}"
                }
                curves = {order: measured(names[order], measure) for order in orders}
                areas = {order: TRAPEZOID(curve, FRACTIONS, axis=1) / span for order, curve in curves.items()}
                for order in orders:
                    shown = f"maps/random/{score}/{measure}" if order == "random" else f"{prefix}/{order}"
                    area = (
                        f"maps/random/{score}/{measure}/area"
                        if order == "random"
                        else f"{prefix}/area/{order}"
                    )
                    assert results[area] == pytest.approx(areas[order].mean(), rel=1e-6, abs=1e-12)
                    assert results[f"{shown}/25"] == pytest.approx(
                        curves[order][:, 1].mean(), rel=1e-6, abs=1e-12
                    )
                    spread = curves[order][:, 1].std(ddof=1)
                    assert results[f"{shown}/25/std"] == pytest.approx(spread, rel=1e-6, abs=1e-12)
                gain = (
                    areas["random"] - areas["top"] if score == "deletion" else areas["top"] - areas["random"]
                )
                # a difference of two areas in [0, 1] kept as float32 rows: its rounding is the areas'
                assert results[f"{prefix}/gain"] == pytest.approx(gain.mean(), rel=1e-5, abs=1e-6)
                low, high = results[f"{prefix}/gain/ci_low"], results[f"{prefix}/gain/ci_high"]
                assert low <= gain.mean() <= high
            assert f"maps/{name}/{score}/cosine/area/bottom" in results or name in HEAD_MAPS
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


def test_one_image_keeps_its_row_and_its_gallery_is_drawn() -> None:
    """A run of one image: the gallery's index keeps its row axis (torchmetrics squeezes a
    one-element result) and the gallery figure draws that image and every map."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    probe = AttributionProbe(seed=0, heads=range(1, HEADS + 1))
    rows = batch(np.arange(1), torch.Generator().manual_seed(4))
    probe.update(rows, torch.full((1,), -1), torch.tensor([7]))
    arrays = probe.arrays()
    assert arrays["attribution/gallery/index"].tolist() == [7]
    run = SimpleNamespace(arrays=arrays, backbone="tiny", num_images=1)
    figure = gallery_figure(run)  # type: ignore[arg-type]
    assert figure is not None
    assert sum(1 for axis in figure.axes if axis.images) == len(MAPS) + 1  # besides the colour keys
    plt.close(figure)
