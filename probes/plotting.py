"""Drawing shared by the probes' figures: colours, titles, per-variant bars and sweeps across models,
stacked histograms, CKA heatmaps. Each probe draws its own figures (`Probe.figures`,
`Probe.comparison_figures`) from these pieces; figures read finished runs, never live metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from probes.view import ComparedView, RunView

Results = Mapping[str, float]
NameOf = Callable[[str], str]
"""A probe's result name of a `{readout}/{variant}` (e.g. `lambda v: CKAProbe.result_name("cka", v)`)."""
GROUP_COLOURS = {"cls": "#7f7f7f", "distillation": "#8c564b", "register": "#d62728", "patch": "#1f77b4"}
"""One colour per token group (`harness.GROUPS`)."""
GROUP_COLOURS |= {"artifact": "#17becf", "ordinary": "#aec7e8"}  # the patches split by norm
VARIANT_COLOURS = {**GROUP_COLOURS, "full": "#2ca02c", "skip": "#ff7f0e"}
GROUP_LABELS = {"cls": "[CLS]", "distillation": "distillation", "register": "registers", "patch": "patches",
                "artifact": "artifact patches", "ordinary": "ordinary patches"}  # fmt: skip


def subplots(
    rows: int = 1, columns: int = 1, *, figsize: tuple[float, float], **options: Any
) -> tuple[Figure, Any]:
    """A figure and its axes (as `pyplot.subplots`), outside pyplot: no backend is chosen or changed
    (a notebook keeps its own) and no figure is kept open; the outputs draw it on an Agg canvas."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, **options)


def run_title(run: RunView) -> str:
    """The backbone and the number of images, for every figure's title."""
    return f"{run.backbone}, {run.num_images} images"


def histogram_rows(axis: Axes, rows: Sequence[tuple[str, np.ndarray, str]], edges: np.ndarray) -> None:
    """One histogram per row (label, counts, colour), stacked without overlap; bar height = share of
    that row's images (a full row = 1)."""
    for row, (_, counts, colour) in enumerate(rows):
        share = counts / max(counts.sum(), 1)
        axis.bar(edges[:-1], 0.9 * share, np.diff(edges), bottom=row, align="edge", color=colour)
        axis.axhline(row, color="black", linewidth=0.5)
    labels = [label.replace(" / ", " /\n") for label, _, _ in rows]
    axis.set_yticks(np.arange(len(rows)) + 0.45, labels, fontsize=8)
    axis.set_ylim(0, len(rows))
    axis.set_xlim(edges[0], edges[-1])


def variant_values(
    results: Results, variants: Sequence[str], name_of: NameOf, std_of: NameOf | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """readout -> variant -> (value, std) of the result `name_of(v)` of every variant v the run has;
    std from `std_of(v)`, NaN when the probe gives none."""
    found: dict[str, dict[str, tuple[float, float]]] = {}
    for variant in variants:
        if (name := name_of(variant)) in results:
            std = results.get(std_of(variant), float("nan")) if std_of else float("nan")
            readout, kind = variant.split("/", 1)
            found.setdefault(readout, {})[kind] = (results[name], std)
    return found


def error_bars(stds: Sequence[float]) -> np.ndarray | None:
    """Error bar lengths, 0 where a value has no std; None when none has one (no bars drawn)."""
    array = np.asarray(stds, dtype=float)
    return None if np.isnan(array).all() else np.nan_to_num(array)


def variant_colour(variant: str) -> str:
    """One colour per contribution, whichever readout or renormalisation."""
    return VARIANT_COLOURS.get(variant.removesuffix("_renorm"), "#4c72b0")


def variant_bars(
    run: RunView, name_of: NameOf, std_of: NameOf | None, title: str, ylabel: str, readout: str | None = None
) -> Figure | None:
    """Bars of a probe's per-variant results (± std where there is one), a panel per readout (or only
    `readout`)."""
    variants = [v for v in run.variants if readout is None or v.startswith(f"{readout}/")]
    found = variant_values(run.results, variants, name_of, std_of)
    if not found:
        return None
    readouts = sorted(found)
    figure, axes = subplots(1, len(readouts), figsize=(max(5.0 * len(readouts), 6.5), 4.0), squeeze=False)
    for axis, panel in zip(axes[0], readouts, strict=True):
        kinds = list(found[panel])
        values, stds = zip(*found[panel].values(), strict=True)
        axis.bar(range(len(kinds)), values, yerr=error_bars(stds), capsize=3,
                 color=[variant_colour(v) for v in kinds], edgecolor="black", linewidth=0.5,
                 hatch=["//" if v.endswith("_renorm") else "" for v in kinds])  # fmt: skip
        axis.set_xticks(range(len(kinds)), kinds, rotation=40, ha="right", fontsize=8)
        axis.set_title(f"{panel} readout", fontsize=9)
        axis.set_ylabel(ylabel)
    figure.suptitle(f"{title}\n{run_title(run)}", fontsize=10)
    figure.tight_layout()
    return figure


def top_k(classes: int) -> int:
    """5 (the paper's top-5), or 1 when there are 5 classes or fewer and top-5 is always 1."""
    return 5 if classes > 5 else 1


def accuracy_bars(
    run: RunView, names: tuple[NameOf, NameOf | None], k: int, classes: int, title: str
) -> Figure | None:
    """Top-k accuracy of each variant (`names`: a variant's result name and that of its std), with
    chance level (k / classes)."""
    figure = variant_bars(run, *names, title, f"top-{k} accuracy")
    if figure is not None:
        for axis in figure.axes:
            axis.set_ylim(0, 1.05)
            chance = min(k / max(classes, 1), 1.0)
            axis.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
            axis.legend(fontsize=7, loc="upper right")
    return figure


def cka_heatmap(axis: Axes, labels: Sequence[str], matrix: np.ndarray, title: str) -> None:
    """One CKA matrix as a heatmap in [0, 1], values written in the cells when few."""
    image = axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    rotation = 90 if len(labels) > 8 else 30 if max(len(label) for label in labels) > 6 else 0
    axis.set_xticks(
        range(len(labels)), labels, rotation=rotation, ha="right" if rotation else "center", fontsize=7
    )
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    if len(labels) <= 12:
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                      color="white" if value < 0.6 else "black")  # fmt: skip
    axis.set_title(title, fontsize=9)
    axis.figure.colorbar(image, ax=axis, fraction=0.046)


def reader_of(runs: Sequence[RunView]) -> str:
    """What reads the pooled output of `runs` (`BackboneInfo.readout`), for titles: "[CLS]",
    "pooling-head", or "[CLS] or pooling-head" across runs of both."""
    readouts = {run.info.readout for run in runs}
    if readouts == {"cls"}:
        return "[CLS]"
    return "pooling-head" if readouts == {"map"} else "[CLS] or pooling-head"


def models_axis(axis: Axes, compared: Sequence[ComparedView], measured: Sequence[bool] | None = None) -> None:
    """The compared runs along the x axis, in the order given; a run that did not measure what the
    axis shows (`measured` False) says so under its name, in grey, so its empty slot is not read as 0."""
    shown = measured if measured is not None else [True] * len(compared)
    labels = [
        c.label if found else f"{c.label}\n(not measured)" for c, found in zip(compared, shown, strict=True)
    ]
    axis.set_xticks(range(len(compared)), labels, rotation=30, ha="right", fontsize=8)
    for tick, found in zip(axis.get_xticklabels(), shown, strict=True):
        if not found:
            tick.set_color("grey")
    axis.set_xlim(-0.5, len(compared) - 0.5)


def variant_sweep(
    compared: Sequence[ComparedView],
    names: tuple[NameOf, NameOf | None],
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None,
    readout: str | None = None,
) -> Figure | None:
    """One series of markers per variant across models (± std where the probe gives one; no line
    joins them: the models are not a sequence), a panel per readout (or only `readout`); `names`
    gives a variant's result name and that of its std."""
    found = [
        variant_values(
            c.run.results,
            [v for v in c.run.variants if readout is None or v.startswith(f"{readout}/")],
            *names,
        )
        for c in compared
    ]
    readouts = sorted({readout for values in found for readout in values})
    if not readouts:
        return None
    figure, axes = subplots(
        1, len(readouts), figsize=(max(4.5, 1.3 * len(compared) + 3) * len(readouts), 4.0), squeeze=False
    )
    for axis, panel in zip(axes[0], readouts, strict=True):
        variants = list(dict.fromkeys(v for values in found for v in values.get(panel, {})))
        for v, variant in enumerate(variants):
            pairs = [values.get(panel, {}).get(variant, (np.nan, np.nan)) for values in found]
            means, stds = np.array(pairs).T
            dodge = (v - (len(variants) - 1) / 2) * 0.25 / len(variants)  # error bars side by side
            renorm = "renorm" in variant  # hollow squares: the renormalised variants
            style = dict(marker="s" if renorm else "o", fillstyle="none" if renorm else "full",
                         color=variant_colour(variant))  # fmt: skip
            axis.errorbar(np.arange(len(compared)) + dodge, means, yerr=error_bars(stds), linestyle="none",
                          markersize=5, capsize=2, label=variant, **style)  # fmt: skip
        models_axis(axis, compared, [bool(values.get(panel)) for values in found])
        if ylim is not None:
            axis.set_ylim(*ylim)
        axis.set_ylabel(ylabel)
        axis.set_title(f"{panel} readout", fontsize=9)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def accuracy_sweep(
    compared: Sequence[ComparedView], names_at: Callable[[int], tuple[NameOf, NameOf | None]],
    classes: Sequence[int], title: str,
) -> Figure | None:  # fmt: skip
    """Top-k accuracy per variant across models; top-1 when any run has 5 classes or fewer
    (`names_at(k)`: a variant's top-k result name and that of its std; `title` may hold `{k}`)."""
    k = min((top_k(n) for n in classes if n), default=5)
    return variant_sweep(compared, names_at(k), title.format(k=k), f"top-{k} accuracy", (0, 1.05))


def colour_key(figure: Figure, axis: Axes, cmap: str, signed: bool = False) -> None:
    """A horizontal colour bar under `axis` saying what its per-image colour scale means: low to high
    (each image's own minimum to maximum), or for a signed map -max, 0, +max (centred at 0)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = Normalize(-1.0, 1.0) if signed else Normalize(0.0, 1.0)
    bar = figure.colorbar(
        ScalarMappable(scale, cmap), ax=axis, orientation="horizontal", fraction=0.08, pad=0.04
    )
    ticks = [-1.0, 0.0, 1.0] if signed else [0.0, 1.0]
    bar.set_ticks(ticks, labels=["-max", "0", "+max"] if signed else ["low", "high"])
    bar.ax.tick_params(labelsize=7)


def named(name: str, figure: Figure | None) -> dict[str, Figure]:
    """`{name: figure}`, or nothing when the figure could not be drawn."""
    return {} if figure is None else {name: figure}
