"""The attribution probe's pixel test (`--perturbation pixels`) against numpy: top-1 accuracy per step
against the labels, the area from the full images' accuracy at 0 (np.trapz x 100, the maintainer's
formula), the same in any batch order; its figure with 1, 2 and many images; its refusals."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from harness import PIXELS
from harness.extras.attribution import EXPLAINED, PIXEL_FRACTIONS, head_map_names
from probes.attribution import AttributionProbe

TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
CLASSES = 3
MAPS = ("attention", "contribution")
HEAD_MAPS = head_map_names((1,))


def batch(count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """What the backbone gives the probe with `--perturbation pixels` only: each map's classes along
    both orders (one head's: positive only), the random control's, the class of each full image."""
    steps = (count, len(PIXEL_FRACTIONS))
    rows = {PIXELS: torch.rand(count, 3, 8, 8, generator=generator) - 0.5}
    rows[EXPLAINED] = torch.randint(CLASSES, (count,), generator=generator)
    rows["maps/random/pixels/predicted"] = torch.randint(CLASSES, steps, generator=generator)
    for name in (*MAPS, *HEAD_MAPS):
        for order in ("positive",) if name in HEAD_MAPS else ("positive", "negative"):
            rows[f"maps/{name}/pixels/{order}/predicted"] = torch.randint(CLASSES, steps, generator=generator)
        rows[f"maps/{name}/rank_agreement"] = torch.rand(count, generator=generator)
        rows[f"attribution/{name}"] = torch.rand(count, 2, 2, generator=generator)
    return rows


def probe() -> AttributionProbe:
    return AttributionProbe(seed=1, maps=MAPS, heads=(1,), class_scores=torch.nn.Linear(4, CLASSES),
                            labelled=True, perturbations=("pixels",))  # fmt: skip


def fed(sizes: list[int], seed: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """The probe's results over batches of `sizes` images, fed in order and in reverse (equal), with
    every row and label fed."""
    generator = torch.Generator().manual_seed(seed)
    starts = np.cumsum([0, *sizes])
    batches = [batch(size, generator) for size in sizes]
    labels = [torch.randint(CLASSES, (size,), generator=generator) for size in sizes]
    forward, backward = probe(), probe()
    for start, rows, label in zip(starts, batches, labels, strict=False):
        forward.update(rows, label, torch.arange(start, start + len(label)))
    for start, rows, label in reversed(list(zip(starts, batches, labels, strict=False))):
        backward.update(rows, label, torch.arange(start, start + len(label)))
    results = forward.compute()
    np.testing.assert_equal(results, backward.compute())  # NaN intervals of one image too
    every = {name: np.concatenate([rows[name].numpy() for rows in batches]) for name in batches[0]}
    return results, every, torch.cat(labels).numpy()


def test_accuracy_per_step_and_area_equal_numpy() -> None:
    results, every, labels = fed([5, 7, 1])
    clean = (every[EXPLAINED] == labels).astype(np.float64)
    assert results["maps/full/accuracy"] == pytest.approx(clean.mean())
    x = [0.0, *PIXEL_FRACTIONS]
    curves = {"maps/random/pixels": "maps/random/pixels/predicted"}
    curves |= {
        f"maps/{n}/pixels/{o}": f"maps/{n}/pixels/{o}/predicted"
        for n in MAPS
        for o in ("positive", "negative")
    }
    curves |= {f"maps/{n}/pixels/positive": f"maps/{n}/pixels/positive/predicted" for n in HEAD_MAPS}
    for prefix, entry in curves.items():
        correct = (every[entry] == labels[:, None]).astype(np.float64)
        for column, fraction in enumerate(PIXEL_FRACTIONS):
            assert results[f"{prefix}/{round(100 * fraction)}"] == pytest.approx(correct[:, column].mean())
            assert results[f"{prefix}/{round(100 * fraction)}/std"] == pytest.approx(
                correct[:, column].std(ddof=1)
            )
        mean_curve = np.concatenate([[clean.mean()], correct.mean(axis=0)])
        assert results[f"{prefix}/area"] == pytest.approx(TRAPEZOID(mean_curve, x) * 100, rel=1e-9)
        assert (
            results[f"{prefix}/area/ci_low"] <= results[f"{prefix}/area"] <= results[f"{prefix}/area/ci_high"]
        )
    assert "maps/attention_head1/pixels/negative/area" not in results
    assert not [name for name in results if "/deletion/" in name or "/insertion/" in name]  # pixels only


@pytest.mark.parametrize("sizes", [[1], [2], [30, 17]], ids=["one image", "two images", "many images"])
def test_the_pixel_figure_and_headlines_are_drawn_for_any_number_of_images(sizes: list[int]) -> None:
    results, _, _ = fed(sizes, seed=2)
    run = SimpleNamespace(results=results, arrays={}, backbone="tiny", num_images=sum(sizes),
                          info=SimpleNamespace(heads_read=2))  # fmt: skip
    figures = AttributionProbe.figures(run)  # type: ignore[arg-type]
    assert list(figures) == ["attribution_pixels.png"]  # no token curves were run
    axes = figures["attribution_pixels.png"].axes
    assert len(axes) == 2 and all(len(axis.lines) == len(MAPS) + 1 for axis in axes)
    assert axes[0].lines[0].get_xdata()[0] == 0  # the curves start from the full images' accuracy
    for figure in figures.values():
        plt.close(figure)
    headlines = [name for name, _ in AttributionProbe.run_headlines(run)]  # type: ignore[arg-type]
    assert headlines == [f"maps/{n}/pixels/{o}/area" for o in ("positive", "negative") for n in MAPS]


def test_pixels_need_class_scores_and_labels() -> None:
    with pytest.raises(ValueError, match="accuracy against the labels"):
        AttributionProbe(maps=MAPS, class_scores=torch.nn.Linear(4, CLASSES), perturbations=("pixels",))
    with pytest.raises(ValueError, match="accuracy against the labels"):
        AttributionProbe(maps=MAPS, labelled=True, perturbations=("pixels",))
