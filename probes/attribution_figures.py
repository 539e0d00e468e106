"""The attribution probe's figures (`probes.attribution`): each map's gain over the random control,
its perturbation curves by patches and by pixels, the gallery of maps, and the gains across models;
drawn from a run's results and arrays by their names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.ticker import MaxNLocator

from harness.extras.attribution import CONTROL, MAPS, PIXEL_ORDERS, PIXEL_SCORE, SCORES, map_names
from probes.plotting import colour_key, named, run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GALLERY = "attribution/gallery/"
"""The arrays of the first images and their maps (`attribution/gallery/{index,image,map}`)."""
MEASURES: tuple[str, ...] = ("cosine", "probability", "accuracy")
"""What is read off each perturbed output: its cosine to the full output; with class scores the
probability of the full output's class; with labels too, whether its class is the label."""
FULL_ACCURACY = "maps/full/accuracy"
"""The class scores' top-1 accuracy on the full images (where the accuracy curves start)."""
BANDS_FROM = 10
"""The fewest images whose curves get bands (`curve_figure`)."""
MARKERS = ("s", "^", "v", "D", "P", "X", "*", "h", "<", ">")
SIGNED_CMAP = "RdBu_r"


def _signed(name: str) -> bool:
    """Whether the map `name` has a meaningful sign (`AttributionMap.signed`)."""
    return name in MAPS and MAPS[name].signed


def gain_figures(run: RunView, maps: Sequence[str], heads: Sequence[str]) -> dict[str, Figure]:
    """Each map's gain over the random control (every head's below the maps), for deletion and
    insertion, one row per measure, with 95 % intervals; and the token curves."""
    names = [*maps, *heads]
    measures = [m for m in MEASURES if f"maps/{names[0]}/deletion/{m}/gain" in run.results]
    figure, axes = subplots(
        len(measures), len(SCORES), figsize=(5 * len(SCORES), (0.3 * len(names) + 1.5) * len(measures)),
        sharey=True, squeeze=False,
    )  # fmt: skip
    positions = np.arange(len(names))
    colours = ["#1f77b4" if name in maps else "#9ecae1" for name in names]
    for row, measure in enumerate(measures):
        for axis, score in zip(axes[row], SCORES, strict=True):
            gains = [f"maps/{n}/{score}/{measure}/gain" for n in names]
            means = np.array([run.results[g] for g in gains])
            lows = np.array([run.results.get(f"{g}/ci_low", np.nan) for g in gains])
            highs = np.array([run.results.get(f"{g}/ci_high", np.nan) for g in gains])
            errors = np.nan_to_num(np.stack([means - lows, highs - means]))
            axis.barh(positions, means, xerr=errors, color=colours)
            axis.axvline(0, color="black", linewidth=0.8)
            axis.set_yticks(positions, names)
            axis.set_xlabel(f"{score} gain over random ({measure})")
            axis.xaxis.set_major_locator(MaxNLocator(nbins=5))  # no tick labels run into each other
    axes[0, 0].invert_yaxis()
    figure.suptitle(
        f"Which map shows what the model used: {run_title(run)}\n"
        "bars: mean gain over the random order; black lines: 95 % bootstrap intervals over images",
        fontsize=10,
    )
    figure.tight_layout()
    return named("attribution.png", figure) | named(
        "attribution_curves.png", curve_figure(run, maps, measures)
    )


def pixel_figure(run: RunView, maps: Sequence[str]) -> Figure | None:
    """Chefer et al.'s test: top-1 accuracy against the share of pixels blacked out, from the full
    images' accuracy at 0, each map in both orders (one panel each) and the random control (dashed),
    each map's area in its label (None without the pixel test)."""
    scored = [name for name in maps if f"maps/{name}/{PIXEL_SCORE}/positive/area" in run.results]
    if not scored:
        return None
    figure, axes = subplots(1, len(PIXEL_ORDERS), figsize=(5.5 * len(PIXEL_ORDERS), 3.8), sharey=True,
                            squeeze=False)  # fmt: skip
    start = run.results.get(FULL_ACCURACY, np.nan)

    def curve(prefix: str) -> tuple[list[int], list[float]]:
        points = sorted(int(key.rsplit("/", 1)[1]) for key in run.results
                        if key.startswith(prefix + "/") and key.rsplit("/", 1)[1].isdigit())  # fmt: skip
        return [0, *points], [start, *(run.results[f"{prefix}/{point}"] for point in points)]

    for axis, order in zip(axes[0], PIXEL_ORDERS, strict=True):
        for position, name in enumerate(scored):
            prefix = f"maps/{name}/{PIXEL_SCORE}/{order}"
            area = run.results[f"{prefix}/area"]
            axis.plot(*curve(prefix), "-", marker=MARKERS[position % len(MARKERS)], markersize=4,
                      label=f"{name} ({area:.2f})", alpha=0.85)  # fmt: skip
        control = f"maps/{CONTROL}/{PIXEL_SCORE}"
        axis.plot(*curve(control), "--", marker="o", markersize=4, color="black",
                  label=f"random ({run.results[f'{control}/area']:.2f})")  # fmt: skip
        first = "most" if order == "positive" else "least"
        axis.set_xlabel(f"pixels blacked out (%), {first} relevant first")
        axis.set_title(
            f"{order} ({'lower' if order == 'positive' else 'higher'} area is better)", fontsize=10
        )
        axis.legend(fontsize=8)
    axes[0, 0].set_ylabel("top-1 accuracy")
    figure.suptitle(
        f"Pixel perturbation (Chefer et al.'s test; area = trapezoids x 100): {run_title(run)}",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def curve_figure(run: RunView, maps: Sequence[str], measures: Sequence[str]) -> Figure:
    """Every map's mean curve in its own order, and the random control (dashed), over the share of
    patches deleted or kept, one row per measure, each map its own marker; bands: the mean +- 1.96
    standard errors, within the measure's range, from `BANDS_FROM` images on (fewer give bands
    wider than the curves' differences, piling into a smear)."""
    figure, axes = subplots(
        len(measures), len(SCORES), figsize=(5.5 * len(SCORES), 3.6 * len(measures)), squeeze=False
    )
    root = np.sqrt(max(run.num_images, 1))
    bands = run.num_images >= BANDS_FROM
    for row, measure in enumerate(measures):
        for axis, score in zip(axes[row], SCORES, strict=True):
            lines = [(f"maps/{name}/{score}/{measure}/top", name, "-") for name in maps]
            lines.append((f"maps/{CONTROL}/{score}/{measure}", "random", "--"))
            for position, (prefix, label, style) in enumerate(lines):
                points = sorted(
                    int(name.rsplit("/", 1)[1]) for name in run.results
                    if name.startswith(prefix + "/") and name.rsplit("/", 1)[1].isdigit()
                )  # fmt: skip
                means = np.array([run.results[f"{prefix}/{point}"] for point in points])
                errors = 1.96 * np.array([run.results.get(f"{prefix}/{p}/std", 0.0) for p in points]) / root
                colour = "black" if label == "random" else None
                marker = "o" if label == "random" else MARKERS[position % len(MARKERS)]
                (line,) = axis.plot(
                    points, means, style, marker=marker, markersize=4, label=label, color=colour,
                    alpha=0.85, zorder=3 if label == "random" else 2,
                )  # fmt: skip
                if bands:  # a cosine, probability or accuracy is at most 1
                    floor = min(0.0, float(means.min()))
                    low = np.clip(means - errors, floor, 1.0)
                    high = np.clip(means + errors, floor, 1.0)
                    axis.fill_between(points, low, high, color=line.get_color(), alpha=0.08)
            axis.set_xlabel(f"patches {'deleted' if score == 'deletion' else 'kept'} (%), in the map's order")
            axis.set_ylabel(measure)
    axes[0, -1].legend(fontsize=8)
    what = "bands: 95 % of the mean" if bands else f"no bands under {BANDS_FROM} images"
    figure.suptitle(f"Perturbation curves of every map: {run_title(run)} ({what})")
    figure.tight_layout()
    return figure


def gallery_figure(run: RunView) -> Figure | None:
    """The first images and every map of each, side by side (None without the arrays)."""
    if GALLERY + "image" not in run.arrays:
        return None
    images = run.arrays[GALLERY + "image"].numpy()
    indices = run.arrays[GALLERY + "index"].tolist()
    maps = [name for name in map_names() if GALLERY + name in run.arrays]
    figure, axes = subplots(
        len(images), len(maps) + 1, figsize=(2 * (len(maps) + 1), 2 * len(images) + 0.6), squeeze=False
    )
    for row, (image, index) in enumerate(zip(images, indices, strict=True)):
        axes[row, 0].imshow(image.transpose(1, 2, 0))
        axes[row, 0].set_ylabel(f"image {index}")
        for column, name in enumerate(maps, start=1):
            values = run.arrays[GALLERY + name][row].numpy()
            if _signed(name):  # centred at 0: blue writes against the output, red with it
                extent = max(float(np.abs(values).max()), 1e-12)
                axes[row, column].imshow(values, cmap=SIGNED_CMAP, vmin=-extent, vmax=extent)
            else:
                axes[row, column].imshow(values, cmap="viridis")
            if row == 0:
                axes[row, column].set_title(name, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for column, name in enumerate(maps, start=1):
        colour_key(figure, axes[-1, column], SIGNED_CMAP if _signed(name) else "viridis", _signed(name))
    figure.suptitle(f"Attribution maps of the same images (each on its own scale): {run_title(run)}")
    figure.tight_layout()
    return figure


def compared_gain_figure(compared: Sequence[ComparedView], maps: Sequence[str]) -> dict[str, Figure]:
    """Each of `maps`' deletion gain (cosine) per model."""
    figure, axis = subplots(figsize=(max(6.0, 1.1 * len(maps) + 3), 4))
    width = 0.8 / len(compared)
    positions = np.arange(len(maps))
    for offset, item in enumerate(compared):
        values = [item.run.results.get(f"maps/{m}/deletion/cosine/gain", np.nan) for m in maps]
        axis.bar(positions + offset * width - 0.4 + width / 2, values, width, label=item.label)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(positions, maps, rotation=20, ha="right")
    axis.set_ylabel("deletion gain over random (cosine)")
    axis.legend()
    axis.set_title("Which map shows what each model used")
    figure.tight_layout()
    return named("compare_attribution.png", figure)
