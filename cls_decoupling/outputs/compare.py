"""Backbones side by side: the paper's cross-model figures and a table of every scalar per backbone.

Runs are compared in the order given (e.g. S, B, L, g): each figure has the backbones along its
x axis, as the paper's sweeps over model size do.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from cls_decoupling.outputs.figures import (
    CKA_TITLES,
    GROUP_COLOURS,
    GROUP_LABELS,
    NameOf,
    accuracy_names,
    cka_heatmap,
    deletion_curves,
    depth_layers,
    error_bars,
    histogram_rows,
    layerwise_layers,
    top_k,
    variant_colour,
    variant_values,
)
from cls_decoupling.outputs.report import format_value, markdown_table, results_by_probe
from cls_decoupling.outputs.runs import Run
from probes import (
    FULL_OUTPUT,
    CKAProbe,
    DeletionProbe,
    DepthProbe,
    LayerwiseProbe,
    LinearProbe,
    MapsProbe,
    NormsProbe,
    OneShotProbe,
    RegistersProbe,
)
from probes.metrics import linear_cka
from probes.split import TWO_WAY, SplitProbe

log = logging.getLogger(__name__)

COMPARISON_MARKDOWN = "comparison.md"
COMPARISON_CSV = "comparison.csv"


@dataclass(frozen=True)
class Compared:
    """One run of a comparison and the label it has in figures and tables (its folder's name, or its
    path where names repeat)."""

    label: str
    run: Run


def _models_axis(axis: plt.Axes, compared: Sequence[Compared]) -> None:
    axis.set_xticks(range(len(compared)), [c.label for c in compared], rotation=30, ha="right", fontsize=8)
    axis.set_xlim(-0.5, len(compared) - 0.5)


def split_comparison(compared: Sequence[Compared]) -> Figure | None:
    """Fig 2a across models: mean share of [CLS] attention on each group (± std over images) and, for
    models with registers, the distribution over images of registers / (registers + patches)."""
    if not any(SplitProbe.result_name("patch", "mean") in c.run.results for c in compared):
        return None
    with_histograms = [
        c for c in compared if SplitProbe.BIN_EDGES in c.run.arrays and c.run.num_registers > 0
    ]
    figure, axes = plt.subplots(
        1, 2 if with_histograms else 1, figsize=(1.6 * len(compared) + (9 if with_histograms else 3), 4.0),
        squeeze=False,
    )  # fmt: skip
    axis = axes[0, 0]
    groups = SplitProbe.columns_for(max(c.run.num_distillation for c in compared))
    width = 0.8 / len(groups)
    for g, group in enumerate(groups):
        means = [c.run.results.get(SplitProbe.result_name(group, "mean"), np.nan) for c in compared]
        stds = [c.run.results.get(SplitProbe.result_name(group, "std"), np.nan) for c in compared]
        positions = np.arange(len(compared)) + (g - (len(groups) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=error_bars(stds), capsize=2, color=GROUP_COLOURS[group],
                 label=GROUP_LABELS[group], hatch="//" if group == TWO_WAY else None)  # fmt: skip
    _models_axis(axis, compared)
    axis.set_ylim(0, 1.3)  # room for the legend above the bars
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.set_ylabel("share of [CLS] attention (mean ± std)")
    axis.legend(fontsize=7, loc="upper center", ncol=2)
    axis.set_title("mean over images", fontsize=9)
    if with_histograms:
        rows = [
            (c.label, c.run.arrays[SplitProbe.histogram_name(TWO_WAY)].numpy(), GROUP_COLOURS[TWO_WAY])
            for c in with_histograms
        ]
        histogram_rows(axes[0, 1], rows, with_histograms[0].run.arrays[SplitProbe.BIN_EDGES].numpy())
        axes[0, 1].set_xlabel("registers / (registers + patches) in one image")
        axes[0, 1].set_title("distribution over images (models with registers)", fontsize=9)
    figure.suptitle("Last-layer [CLS] attention split per model (Fig 2a)", fontsize=10)
    figure.tight_layout()
    return figure


def registers_comparison(compared: Sequence[Compared]) -> Figure | None:
    """Fig 2b across models: the highest-norm penultimate token: how often a register, how alike
    across images, how large; its top dimensions before and after norm1."""
    present = [c for c in compared if RegistersProbe.result_name("top_norm") in c.run.results]
    if not present:
        return None
    figure, (shares, ratio, dims) = plt.subplots(1, 3, figsize=(2.4 * len(compared) + 9, 4.0))
    x = np.arange(len(compared))

    def values(name: str) -> list[float]:
        return [c.run.results.get(RegistersProbe.result_name(name), np.nan) for c in compared]

    shares.plot(x, values("top_in_registers"), marker="o", color=GROUP_COLOURS["register"],
                label="share of images where it is a register")  # fmt: skip
    shares.plot(
        x, values("pairwise_cosine"), marker="s", color="black", label="mean pairwise cosine across images"
    )
    shares.set_ylim(-1.05, 1.3)
    shares.set_yticks(np.linspace(-1, 1, 5))
    shares.legend(fontsize=7, loc="upper center")
    shares.set_title("which token, and how alike across images", fontsize=9)
    ratios = values("norm_ratio")
    ratio.plot(x, ratios, marker="o", color="#8c564b")
    if np.isfinite(np.nanmax(ratios)):
        ratio.set_ylim(0, 1.15 * np.nanmax(ratios))
    ratio.set_ylabel("its norm / mean norm of the other tokens")
    ratio.set_title("how much larger than the others", fontsize=9)
    dims.plot(x, values("top_dims_before"), marker="o", color=GROUP_COLOURS["register"], label="before norm1")
    dims.plot(x, values("top_dims_after"), marker="o", color="#ff9896", label="after norm1")
    dims.set_yscale("log")
    dims.set_ylabel("mean |activation| of its top dims")
    dims.legend(fontsize=7)
    dims.set_title("its largest dimensions", fontsize=9)
    for axis in (shares, ratio, dims):
        _models_axis(axis, compared)
    figure.suptitle("Highest-norm token of the penultimate layer per model (Fig 2b)", fontsize=10)
    figure.tight_layout()
    return figure


def _variant_sweep(
    compared: Sequence[Compared],
    names: tuple[NameOf, NameOf | None],
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None,
    readout: str | None = None,
) -> Figure | None:
    """One line per variant across models (± std where the probe gives one), a panel per readout (or
    only `readout`); `names` gives a variant's result name and that of its std."""
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
    figure, axes = plt.subplots(
        1, len(readouts), figsize=(max(4.5, 1.3 * len(compared) + 3) * len(readouts), 4.0), squeeze=False
    )
    for axis, panel in zip(axes[0], readouts, strict=True):
        variants = list(dict.fromkeys(v for values in found for v in values.get(panel, {})))
        for v, variant in enumerate(variants):
            pairs = [values.get(panel, {}).get(variant, (np.nan, np.nan)) for values in found]
            means, stds = np.array(pairs).T
            dodge = (v - (len(variants) - 1) / 2) * 0.25 / len(variants)  # error bars side by side
            style = dict(linestyle="--" if "renorm" in variant else "-", color=variant_colour(variant))
            axis.errorbar(np.arange(len(compared)) + dodge, means, yerr=error_bars(stds), marker="o",
                          markersize=4, capsize=2, label=variant, **style)  # fmt: skip
        _models_axis(axis, compared)
        if ylim is not None:
            axis.set_ylim(*ylim)
        axis.set_ylabel(ylabel)
        axis.set_title(f"{panel} readout", fontsize=9)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def cka_comparison(compared: Sequence[Compared], estimator: str = "cka") -> Figure | None:
    """Fig 3a / 6 across models: linear CKA of the full output with each variant."""
    return _variant_sweep(
        compared, (lambda variant: CKAProbe.result_name(estimator, variant), None),
        f"{CKA_TITLES[estimator]} with the full [CLS] output per model (Fig 3a, 6)", "CKA", (0, 1.05),
    )  # fmt: skip


def _accuracy_sweep(
    compared: Sequence[Compared], probe: type[OneShotProbe | LinearProbe], classes: list[int], title: str
) -> Figure | None:
    """Top-k accuracy per variant across models; top-1 when any run has 5 classes or fewer."""
    k = min((top_k(n) for n in classes if n), default=5)
    return _variant_sweep(
        compared, accuracy_names(probe, k), title.format(k=k), f"top-{k} accuracy", (0, 1.05)
    )


def oneshot_comparison(compared: Sequence[Compared]) -> Figure | None:
    """Fig 3b across models (top-5, or top-1 when a run has 5 classes or fewer)."""
    classes = [int(c.run.results.get(OneShotProbe.CLASSES, 0)) for c in compared]
    title = "One-shot top-{k} accuracy per model (mean ± std over episodes) (Fig 3b)"
    return _accuracy_sweep(compared, OneShotProbe, classes, title)


def linear_comparison(compared: Sequence[Compared]) -> Figure | None:
    """The paper's card across models: a linear classifier fit on the full output, tested on variants."""
    classes = [int(c.run.summary["data"].get("num_classes", 0)) for c in compared]
    title = "Linear classifier fit on output/full: top-{k} accuracy of each variant per model"
    return _accuracy_sweep(compared, LinearProbe, classes, title)


def norms_comparison(compared: Sequence[Compared]) -> Figure | None:
    """Fig 5a across models: L2 norm of each contribution at the attention readout."""
    return _variant_sweep(
        compared, (NormsProbe.result_name, NormsProbe.std_name),
        "L2 norm of each contribution to the [CLS] residual stream per model (Fig 5a)",
        "L2 norm (mean ± std over images)", None, readout="attention",
    )  # fmt: skip


def faithfulness_comparison(compared: Sequence[Compared]) -> Figure | None:
    """Fig 4 across models: the per-image cosine of the patch-only to the full output (mean ± std),
    one line per readout."""
    if not any(MapsProbe.result_name("attention", "mean") in c.run.results for c in compared):
        return None
    figure, axis = plt.subplots(figsize=(max(5.5, 1.3 * len(compared) + 3), 4.0))
    for readout, colour in (("attention", "#1f77b4"), ("output", "#ff7f0e")):
        means = [c.run.results.get(MapsProbe.result_name(readout, "mean"), np.nan) for c in compared]
        stds = [c.run.results.get(MapsProbe.result_name(readout, "std"), np.nan) for c in compared]
        axis.errorbar(range(len(compared)), means, yerr=error_bars(stds), marker="o", markersize=4, capsize=2,
                      color=colour, label=f"{readout} readout")  # fmt: skip
    axis.axhline(0, color="black", linewidth=0.6)
    _models_axis(axis, compared)
    axis.set_ylim(-1.05, 1.05)
    axis.set_ylabel("cosine of patch-only to full output\n(mean ± std over images)")
    axis.legend(fontsize=8)
    axis.set_title("How faithful are the attention maps, per model? (Fig 4)", fontsize=10)
    figure.tight_layout()
    return figure


def layerwise_comparison(compared: Sequence[Compared]) -> Figure | None:
    """Fig 5b across models: one curve per model over relative depth (models differ in depth)."""
    curves = [(c, layerwise_layers(c.run)) for c in compared]
    if not any(layers for _, layers in curves):
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    for c, layers in curves:
        if layers:
            depth = np.array(layers) / max(layers)
            means = [c.run.results[LayerwiseProbe.result_name(layer)] for layer in layers]
            axis.plot(depth, means, marker="o", markersize=3, label=f"{c.label} ({max(layers)} layers)")
    axis.set_xlabel("relative depth (layer / number of layers; 0 = embeddings)")
    axis.set_ylabel("cosine to last-layer [CLS] (mean)")
    axis.set_ylim(-1.05, 1.05)
    axis.legend(fontsize=7)
    axis.set_title("[CLS] across layers per model (Fig 5b)", fontsize=10)
    figure.tight_layout()
    return figure


def depth_comparison(compared: Sequence[Compared]) -> Figure | None:
    """The depth probe across models over relative depth: the patch share of the [CLS] attention,
    the patch contribution's norm against the skip's, and the cosine of the patch-only readout to
    each block's output; one curve per model."""
    curves = [(c, depth_layers(c.run)) for c in compared]
    if not any(layers for _, layers in curves):
        return None
    panels = (
        ("split/patch", "[CLS] attention mass on patches"),
        ("norm/patch", "||patch contribution|| / ||skip||"),
        ("cosine/patch", "cosine of patch readout to block output"),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(14, 4))
    for c, layers in curves:
        if not layers:
            continue
        depth = np.array(layers) / c.run.num_layers

        def means(quantity: str, run: Run = c.run, layers: list[int] = layers) -> np.ndarray:
            return np.array([run.results[DepthProbe.result_name(layer, quantity)] for layer in layers])

        values = (means("split/patch"), means("norm/patch") / means("norm/skip"), means("cosine/patch"))
        for axis, curve in zip(axes, values, strict=True):
            axis.plot(depth, curve, marker="o", markersize=3, label=f"{c.label} ({c.run.num_layers} blocks)")
    for axis, (_, label) in zip(axes, panels, strict=True):
        axis.set_xlabel("relative depth (block / number of blocks)")
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
    figure.suptitle("Where in depth is [CLS] built from the patches? (per model)", fontsize=10)
    figure.tight_layout()
    return figure


def deletion_comparison(compared: Sequence[Compared]) -> Figure | None:
    """The deletion test per model: the top-of-map curve (solid) and the random control (dashed)."""
    curves = [(c, deletion_curves(c.run)) for c in compared]
    if not any(found for _, found in curves):
        return None
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for index, (c, found) in enumerate(curves):
        if not found:
            continue
        colour = f"C{index % 10}"
        area = c.run.results[DeletionProbe.area_name("random")]
        x, top, _ = found["top"]
        axis.plot(x, top, marker="o", markersize=3, color=colour, label=f"{c.label}: top (area {area:+.3f})")
        x, random, _ = found["random"]
        axis.plot(x, random, linestyle="--", color=colour, linewidth=1)
    axis.set_xlabel("share of patches deleted")
    axis.set_ylabel("cosine to the full [CLS] output")
    axis.legend(fontsize=7)
    axis.set_title("Deleting the map's top patches (solid) vs random ones (dashed)", fontsize=10)
    figure.tight_layout()
    return figure


def model_cka(compared: Sequence[Compared]) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """Model x model linear and debiased CKA of `output/full` over the same images (matched by dataset
    index), from the runs' saved features; None (with one line in the log) when fewer than two runs
    saved features or their image sets differ."""
    found = [(c.label, c.run.saved_features(("index", FULL_OUTPUT))) for c in compared]
    saved = [(label, features) for label, features in found if features and FULL_OUTPUT in features]
    if len(saved) < 2:
        return None
    indices = saved[0][1]["index"]
    if differing := [label for label, features in saved if not torch.equal(features["index"], indices)]:
        log.warning("model x model CKA left out: %s evaluated other images than %s", ", ".join(differing),
                    saved[0][0])  # fmt: skip
        return None
    labels = [label for label, _ in saved]
    matrices = {}
    for estimator in ("cka", "cka_debiased"):
        matrix = np.eye(len(saved))
        for i, j in itertools.combinations(range(len(saved)), 2):
            value = linear_cka(
                saved[i][1][FULL_OUTPUT], saved[j][1][FULL_OUTPUT], estimator == "cka_debiased"
            )
            matrix[i, j] = matrix[j, i] = float(value)
        matrices[estimator] = matrix
    return labels, matrices


def model_cka_comparison(compared: Sequence[Compared]) -> Figure | None:
    """Model x model CKA of `output/full` on the same images (runs with --save-features)."""
    found = model_cka(compared)
    if found is None:
        return None
    labels, matrices = found
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for axis, (estimator, matrix) in zip(axes, matrices.items(), strict=True):
        cka_heatmap(axis, labels, matrix, f"{estimator.replace('_', ' ')} of output/full")
    figure.suptitle("How alike are the models' [CLS] outputs? (same images)", fontsize=10)
    figure.tight_layout()
    return figure


COMPARISON_FIGURES: dict[str, Callable[[Sequence[Compared]], Figure | None]] = {
    "compare_split.png": split_comparison,
    "compare_registers.png": registers_comparison,
    "compare_cka.png": cka_comparison,
    "compare_cka_debiased.png": lambda compared: cka_comparison(compared, "cka_debiased"),
    "compare_oneshot.png": oneshot_comparison,
    "compare_linear.png": linear_comparison,
    "compare_faithfulness.png": faithfulness_comparison,
    "compare_norms.png": norms_comparison,
    "compare_layerwise.png": layerwise_comparison,
    "compare_depth.png": depth_comparison,
    "compare_deletion.png": deletion_comparison,
    "compare_cka_models.png": model_cka_comparison,
}


def comparison_figures(compared: Sequence[Compared]) -> dict[str, Figure]:
    """Every cross-model figure the runs' results allow, by file name."""
    figures = {name: draw(compared) for name, draw in COMPARISON_FIGURES.items()}
    return {name: figure for name, figure in figures.items() if figure is not None}


def scalar_names(compared: Sequence[Compared]) -> list[str]:
    """Every result name of any run, in first-seen order."""
    return list(dict.fromkeys(name for c in compared for name in c.run.results))


def comparison_csv(compared: Sequence[Compared]) -> str:
    """One row per backbone: its label, name, number of images, then every scalar (empty where absent)."""
    names = scalar_names(compared)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "backbone", "num_images", *names])
    for c in compared:
        values = [repr(c.run.results[n]) if n in c.run.results else "" for n in names]
        writer.writerow([c.label, c.run.backbone, c.run.num_images, *values])
    return buffer.getvalue()


def comparison_markdown(compared: Sequence[Compared], figures: Sequence[str]) -> str:
    """The runs, the figures (paths relative to the file), then one table per probe with one row per
    backbone."""
    lines = ["# Backbones compared", ""]
    lines += markdown_table(
        ("run", "backbone", "family", "images", "data"),
        (
            (c.label, c.run.backbone, c.run.family, c.run.num_images, c.run.summary["data"]["source"])
            for c in compared
        ),
    )
    if figures:
        lines += ["", "## Figures"]
        lines += [line for path in figures for line in ("", f"![{path}]({path})")]
    for probe, names in results_by_probe(dict.fromkeys(scalar_names(compared), 0.0)).items():
        rows = [[c.label, *(format_value(c.run.results[n]) if n in c.run.results else "" for n in names)]
                for c in compared]  # fmt: skip
        lines += ["", f"## {probe}", "", *markdown_table(("run", *names), rows)]
    return "\n".join(lines) + "\n"
