"""One figure per probe, drawn from the results of a run, reading like the paper's panels.

Each function takes the run's results (DESIGN.md names -> numbers) and the backbone's name and
returns a matplotlib Figure, or None when the run has no results for that probe.
`run_figures` gives all of them by file name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import matplotlib

matplotlib.use("Agg")  # files only: no display is ever needed
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Results = Mapping[str, float]
_GROUP_COLOURS = {"cls": "#7f7f7f", "register": "#d62728", "patch": "#1f77b4"}


def split_figure(results: Results, backbone: str) -> Figure | None:
    """Fig 2a: mean share of the last-layer [CLS] attention on [CLS], registers and patches."""
    groups = [g for g in ("cls", "register", "patch") if f"split/{g}/mean" in results]
    if not groups:
        return None
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    means = [results[f"split/{g}/mean"] for g in groups]
    stds = [results[f"split/{g}/std"] for g in groups]
    axis.bar(groups, means, yerr=stds, capsize=4, color=[_GROUP_COLOURS[g] for g in groups])
    axis.set_ylim(0, 1)
    axis.set_ylabel("share of [CLS] attention")
    two_way = results.get("split/register_vs_patch/mean", float("nan"))
    axis.set_title(
        f"Last-layer [CLS] attention (mean ± std over images)\n{backbone}; "
        f"registers / (registers + patches) = {two_way:.3f}",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def _variant_bars(results: Results, pattern: str, title: str, ylabel: str, backbone: str) -> Figure | None:
    """Grouped bars of `{prefix}/{readout}/{variant}` results, one group per readout."""
    found: dict[str, dict[str, float]] = {}
    for name, value in results.items():
        match = re.fullmatch(pattern, name)
        if match:
            found.setdefault(match.group("readout"), {})[match.group("variant")] = value
    if not found:
        return None
    readouts = sorted(found)
    figure, axes = plt.subplots(1, len(readouts), figsize=(4.5 * len(readouts), 3.6), squeeze=False)
    for axis, readout in zip(axes[0], readouts, strict=True):
        variants = list(found[readout])
        axis.bar(range(len(variants)), [found[readout][v] for v in variants], color="#4c72b0")
        axis.set_xticks(range(len(variants)), variants, rotation=40, ha="right", fontsize=8)
        axis.set_title(f"{readout} readout", fontsize=9)
        axis.set_ylabel(ylabel)
    figure.suptitle(f"{title}\n{backbone}", fontsize=10)
    figure.tight_layout()
    return figure


def cka_figure(results: Results, backbone: str) -> Figure | None:
    """Fig 3a / 6: linear CKA of the full output with each variant."""
    figure = _variant_bars(
        results,
        r"cka/(?P<readout>\w+)/(?P<variant>\w+)",
        "Linear CKA with the full [CLS] output",
        "CKA",
        backbone,
    )
    if figure is not None:
        for axis in figure.axes:
            axis.set_ylim(0, 1.05)
    return figure


def oneshot_figure(results: Results, backbone: str) -> Figure | None:
    """Fig 3b: one-shot top-5 accuracy of each variant against centroids of the full output.

    With 5 classes or fewer top-5 is always 1, so the figure shows top-1 instead.
    """
    classes = int(results.get("oneshot/classes", 0))
    k = 5 if classes > 5 else 1
    return _variant_bars(
        results,
        rf"oneshot/(?P<readout>\w+)/(?P<variant>\w+)/top{k}",
        f"One-shot top-{k} accuracy ({classes} classes, mean over episodes)",
        f"top-{k} accuracy",
        backbone,
    )


def norms_figure(results: Results, backbone: str) -> Figure | None:
    """Fig 5a: L2 norm of each contribution (attention readout: patch, register, cls against skip)."""
    return _variant_bars(
        results, r"norm/(?P<readout>attention)/(?P<variant>\w+)", "L2 norm of each contribution to [CLS]",
        "L2 norm (mean over images)", backbone,
    )  # fmt: skip


def layerwise_figure(results: Results, backbone: str) -> Figure | None:
    """Fig 5b: cosine of the [CLS] state after each layer to the last layer's [CLS]."""
    layers = sorted(int(m.group(1)) for name in results if (m := re.fullmatch(r"layerwise/(\d+)", name)))
    if not layers:
        return None
    means = [results[f"layerwise/{layer}"] for layer in layers]
    stds = [results[f"layerwise/{layer}/std"] for layer in layers]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.errorbar(layers, means, yerr=stds, marker="o", markersize=3, capsize=2)
    axis.set_xlabel("layer (0 = embeddings)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("cosine to last-layer [CLS]")
    axis.set_ylim(-1.05, 1.05)
    axis.set_title(f"[CLS] across layers\n{backbone}", fontsize=10)
    figure.tight_layout()
    return figure


FIGURES: dict[str, Callable[[Results, str], Figure | None]] = {
    "split.png": split_figure,
    "cka.png": cka_figure,
    "oneshot.png": oneshot_figure,
    "norms.png": norms_figure,
    "layerwise.png": layerwise_figure,
}


def run_figures(results: Results, backbone: str) -> dict[str, Figure]:
    """Every figure the results allow, by file name."""
    figures = {name: draw(results, backbone) for name, draw in FIGURES.items()}
    return {name: figure for name, figure in figures.items() if figure is not None}
