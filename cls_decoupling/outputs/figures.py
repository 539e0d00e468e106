"""One figure per probe, drawn from a finished run, reading like the paper's panels.

Each function takes a `Run` (results, arrays, backbone) and returns a matplotlib Figure, or
None when the run has no results for that probe. `run_figures` gives all of them by file name.
Result names come from the probe classes' name functions, never from parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import matplotlib

matplotlib.use("Agg")  # files only: no display is ever needed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cls_decoupling.outputs.runs import Run
from harness import GROUPS
from harness.decomposition import DELETION_ORDERS
from harness.tokens import present_groups
from probes import (
    CKAProbe,
    DeletionProbe,
    DepthProbe,
    LayerCKAProbe,
    LayerwiseProbe,
    LinearProbe,
    MapsProbe,
    NormsProbe,
    OneShotProbe,
    RegistersProbe,
)
from probes.split import TWO_WAY, SplitProbe

Results = Mapping[str, float]
NameOf = Callable[[str], str]
"""A probe's result name of a `{readout}/{variant}` (e.g. `lambda v: CKAProbe.result_name("cka", v)`)."""
GROUP_COLOURS = {
    "cls": "#7f7f7f", "distillation": "#8c564b", "register": "#d62728", "patch": "#1f77b4",
    TWO_WAY: "#9467bd",
}  # fmt: skip
VARIANT_COLOURS = {**GROUP_COLOURS, "full": "#2ca02c", "skip": "#ff7f0e"}
GROUP_LABELS = {
    "cls": "[CLS]", "distillation": "distillation", "register": "registers", "patch": "patches",
    TWO_WAY: "registers / (registers + patches)",
}  # fmt: skip


def run_title(run: Run) -> str:
    """The backbone and the number of images, for every figure's title."""
    return f"{run.backbone}, {run.num_images} images"


def split_figure(run: Run) -> Figure | None:
    """Fig 2a: the last-layer [CLS] attention split: mean share per group, distribution over images."""
    results = run.results
    if SplitProbe.result_name("patch", "mean") not in results:
        return None
    registers = run.num_registers > 0
    groups = present_groups(run.num_registers, run.num_distillation)
    histograms = SplitProbe.BIN_EDGES in run.arrays
    figure, axes = plt.subplots(
        1, 2 if histograms else 1, figsize=(10 if histograms else 4.5, 3.8), squeeze=False
    )
    axis = axes[0, 0]
    means = [results[SplitProbe.result_name(g, "mean")] for g in groups]
    stds = [results[SplitProbe.result_name(g, "std")] for g in groups]
    axis.bar(
        [GROUP_LABELS[g] for g in groups],
        means,
        yerr=stds,
        capsize=4,
        color=[GROUP_COLOURS[g] for g in groups],
    )
    axis.set_ylim(0, 1)
    axis.set_ylabel("share of [CLS] attention (mean ± std)")
    two_way = results[SplitProbe.result_name(TWO_WAY, "mean")]
    axis.set_title(
        f"mean over images; registers / (registers + patches) = {two_way:.3f}" if registers
        else "mean over images (no registers in this model)", fontsize=9,
    )  # fmt: skip
    if histograms:
        _split_histograms(axes[0, 1], run, registers)
    figure.suptitle(f"Last-layer [CLS] attention split (Fig 2a)\n{run_title(run)}", fontsize=10)
    figure.tight_layout()
    return figure


def _split_histograms(axis: Axes, run: Run, registers: bool) -> None:
    """The distribution of each group's share over images (registers only when the model has them)."""
    edges = run.arrays[SplitProbe.BIN_EDGES].numpy()
    groups = ["cls", "patch", *(["register", TWO_WAY] if registers else [])]
    if run.num_distillation:
        groups.insert(1, "distillation")
    rows = [
        (GROUP_LABELS[g], run.arrays[SplitProbe.histogram_name(g)].numpy(), GROUP_COLOURS[g]) for g in groups
    ]
    histogram_rows(axis, rows, edges)
    axis.set_xlabel("share of [CLS] attention in one image")
    axis.set_title("distribution over images (bar height: share of images)", fontsize=9)


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


def registers_figure(run: Run) -> Figure | None:
    """Fig 2b: where the highest-norm token of the penultimate layer sits, and its top dimensions before
    and after norm1."""
    if RegistersProbe.result_name("top_norm") not in run.results:
        return None
    results = {key: run.results[RegistersProbe.result_name(key)] for key in RegistersProbe.RESULTS}
    figure, (where, dims) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    counts = run.arrays.get(RegistersProbe.TOP_TOKEN_COUNTS)
    if counts is not None:
        labels, shares = _top_positions(run, counts.numpy())
        colours = [GROUP_COLOURS[_position_group(label)] for label in labels]
        if labels[-1].endswith("other tokens"):
            colours[-1] = "#c7c7c7"
        where.bar(range(len(labels)), shares, color=colours)
        where.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
    where.set_ylim(0, 1)
    where.set_ylabel("share of images")
    where.set_title(
        f"which token has the highest norm (in registers: {results['top_in_registers']:.2f});\n"
        f"its norm / mean norm of the others = {results['norm_ratio']:.2f}",
        fontsize=9,
    )
    before, after = results["top_dims_before"], results["top_dims_after"]
    dims.bar(["before norm1", "after norm1"], [before, after], color=["#d62728", "#ff9896"])
    if min(before, after) > 0 and max(before, after) / min(before, after) > 20:
        dims.set_yscale("log")
    top_dims = min(RegistersProbe.TOP_DIMS, run.summary["backbone"]["hidden_size"])
    dims.set_ylabel(f"mean |activation| of its top-{top_dims} dims")
    dims.set_title(
        f"mean pairwise cosine of the token\nacross images = {results['pairwise_cosine']:.4f}",
        fontsize=9,
    )
    figure.suptitle(f"Highest-norm token of the penultimate layer (Fig 2b)\n{run_title(run)}", fontsize=10)
    figure.tight_layout()
    return figure


def _position_group(label: str) -> str:
    """The group of a `_top_positions` label."""
    return "register" if label.startswith("reg") else "distillation" if label == "distillation" else "patch"


def _top_positions(run: Run, counts: np.ndarray, shown: int = 8) -> tuple[list[str], list[float]]:
    """Labels and image shares of the most frequent positions (registers by number, patches by row and
    column), the rest summed as "other"."""
    registers, distillation = run.num_registers, run.num_distillation
    columns = run.summary["data"]["resolution"] // run.summary["backbone"]["patch_size"]
    order = [int(p) for p in np.argsort(-counts, kind="stable") if counts[p] > 0]
    total = max(counts.sum(), 1)
    labels, shares = [], []
    for position in order[:shown]:
        row, column = divmod(position - 1 - distillation - registers, columns)
        if position <= distillation:
            labels.append("distillation")
        elif position <= distillation + registers:
            labels.append(f"reg {position - distillation}")
        else:
            labels.append(f"patch r{row} c{column}")
        shares.append(counts[position] / total)
    if len(order) > shown:
        labels.append(f"{len(order) - shown} other tokens")
        shares.append(counts[order[shown:]].sum() / total)
    return labels, shares


def maps_figure(run: Run) -> Figure | None:
    """Fig 4: attention maps of the least and most faithful images, with each image's cosine."""
    if MapsProbe.gallery_name("image") not in run.arrays:
        return None
    gallery = {part: run.arrays[MapsProbe.gallery_name(part)] for part in MapsProbe.GALLERY}
    images, maps = gallery["image"].numpy(), gallery["map"].numpy()
    indices, cosines = gallery["index"].tolist(), gallery["cosine"].tolist()
    least = int(gallery["least"])
    rows = [("least faithful", range(least)), ("most faithful", range(least, len(indices)))]
    columns = max(least, len(indices) - least)
    figure, axes = plt.subplots(2, columns, figsize=(2.2 * columns, 5.8), squeeze=False)
    for row, (label, members) in enumerate(rows):
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(members):
                axis.axis("off")
                continue
            i = members[column]
            height, width = images[i].shape[1:]
            attention = maps[i] - maps[i].min()
            axis.imshow(images[i].transpose(1, 2, 0))
            axis.imshow(attention / max(attention.max(), 1e-12), cmap="inferno", alpha=0.55,
                        extent=(0, width, height, 0), interpolation="bilinear")  # fmt: skip
            axis.set_title(f"image {indices[i]}\ncos = {cosines[i]:+.4f}", fontsize=8)
            if column == 0:
                axis.set_ylabel(label, fontsize=9)
    figure.suptitle(
        "Last-layer [CLS] attention over patches (mean over heads, per-image colour scale) (Fig 4)\n"
        f"cos = cosine of attention/patch to attention/full; {run_title(run)}",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def faithfulness_figure(run: Run) -> Figure | None:
    """Fig 4 over the whole run: distribution of the per-image cosine between patch-only and full output."""
    if MapsProbe.cosine_name("attention") not in run.arrays:
        return None
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    bins = np.linspace(-1, 1, 41).tolist()
    for readout, colour in (("attention", "#1f77b4"), ("output", "#ff7f0e")):
        cosine = run.arrays[MapsProbe.cosine_name(readout)].numpy()
        mean = run.results[MapsProbe.result_name(readout, "mean")]
        axis.hist(cosine, bins=bins, weights=np.full(len(cosine), 1 / len(cosine)), histtype="step",
                  linewidth=1.5, color=colour, label=f"{readout} readout (mean {mean:+.3f})")  # fmt: skip
    axis.axvline(0, color="black", linewidth=0.6)
    axis.set_xlim(-1, 1)
    axis.set_xlabel("cosine of patch-only to full [CLS] output, per image")
    axis.set_ylabel("share of images")
    axis.legend(fontsize=8)
    axis.set_title(f"How faithful are the attention maps? (Fig 4)\n{run_title(run)}", fontsize=10)
    figure.tight_layout()
    return figure


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


def _variant_bars(
    run: Run, name_of: NameOf, std_of: NameOf | None, title: str, ylabel: str, readout: str | None = None
) -> Figure | None:
    """Bars of a probe's per-variant results (± std where there is one), a panel per readout (or only
    `readout`)."""
    variants = [v for v in run.variants if readout is None or v.startswith(f"{readout}/")]
    found = variant_values(run.results, variants, name_of, std_of)
    if not found:
        return None
    readouts = sorted(found)
    figure, axes = plt.subplots(1, len(readouts), figsize=(max(5.0 * len(readouts), 6.5), 4.0), squeeze=False)
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


CKA_TITLES = {"cka": "Linear CKA", "cka_debiased": "Linear CKA (debiased estimator)"}


def cka_figure(run: Run, estimator: str = "cka") -> Figure | None:
    """Fig 3a / 6: linear CKA of the full output with each variant (`estimator`: cka or cka_debiased)."""
    figure = _variant_bars(
        run,
        lambda variant: CKAProbe.result_name(estimator, variant),
        None,
        f"{CKA_TITLES[estimator]} with the full [CLS] output (Fig 3a, 6)",
        "CKA",
    )
    if figure is not None:
        for axis in figure.axes:
            axis.set_ylim(0, 1.05)
    return figure


def top_k(classes: int) -> int:
    """5 (the paper's top-5), or 1 when there are 5 classes or fewer and top-5 is always 1."""
    return 5 if classes > 5 else 1


def _accuracy_bars(
    run: Run, probe: type[OneShotProbe | LinearProbe], classes: int, title: str
) -> Figure | None:
    """Top-k accuracy of each variant, with chance level (k / classes)."""
    k = top_k(classes)
    figure = _variant_bars(run, *accuracy_names(probe, k), title.format(k=k), f"top-{k} accuracy")
    if figure is not None:
        for axis in figure.axes:
            axis.set_ylim(0, 1.05)
            chance = min(k / max(classes, 1), 1.0)
            axis.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
            axis.legend(fontsize=7, loc="upper right")
    return figure


def accuracy_names(probe: type[OneShotProbe | LinearProbe], k: int) -> tuple[NameOf, NameOf | None]:
    """The top-k result name of a variant, and of its std over episodes (one-shot only)."""
    if issubclass(probe, OneShotProbe):
        return (lambda v: OneShotProbe.result_name(v, k)), (lambda v: OneShotProbe.std_name(v, k))
    return (lambda v: LinearProbe.result_name(v, k)), None


def oneshot_figure(run: Run) -> Figure | None:
    """Fig 3b: one-shot accuracy of each variant against centroids of the full output."""
    classes = int(run.results.get(OneShotProbe.CLASSES, 0))
    title = f"One-shot top-{{k}} accuracy, {classes} classes (mean ± std over episodes) (Fig 3b)"
    return _accuracy_bars(run, OneShotProbe, classes, title)


def linear_figure(run: Run) -> Figure | None:
    """The paper's card: a linear classifier fit on the full output, tested on each variant."""
    classes = int(run.summary["data"].get("num_classes", 0))
    title = f"Linear classifier fit on output/full, top-{{k}} accuracy of each variant, {classes} classes"
    return _accuracy_bars(run, LinearProbe, classes, title)


def norms_figure(run: Run) -> Figure | None:
    """Fig 5a: L2 norm of each contribution at the attention readout: patch, register, cls against skip."""
    return _variant_bars(
        run, NormsProbe.result_name, NormsProbe.std_name,
        "L2 norm of each contribution to the [CLS] residual stream (Fig 5a)",
        "L2 norm (mean ± std over images)", readout="attention",
    )  # fmt: skip


def layerwise_figure(run: Run) -> Figure | None:
    """Fig 5b: cosine of the [CLS] state after each layer to the last layer's [CLS]."""
    layers = layerwise_layers(run)
    if not layers:
        return None
    means = [run.results[LayerwiseProbe.result_name(layer)] for layer in layers]
    stds = [run.results[LayerwiseProbe.std_name(layer)] for layer in layers]
    figure, axis = plt.subplots(figsize=(5, 3.6))
    axis.errorbar(layers, means, yerr=stds, marker="o", markersize=3, capsize=2)
    axis.set_xlabel("layer (0 = embeddings)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("cosine to last-layer [CLS] (mean ± std)")
    axis.set_ylim(-1.05, 1.05)
    axis.set_title(f"[CLS] across layers (Fig 5b)\n{run_title(run)}", fontsize=10)
    figure.tight_layout()
    return figure


def layerwise_layers(run: Run) -> list[int]:
    """The layers (0 = embeddings) with a layerwise result, in order."""
    return [layer for layer in range(run.num_layers + 1) if LayerwiseProbe.result_name(layer) in run.results]


def depth_layers(run: Run) -> list[int]:
    """The blocks (1-based) with depth results, in order."""
    return [
        layer for layer in range(1, run.num_layers + 1)
        if DepthProbe.result_name(layer, "split/patch") in run.results
    ]  # fmt: skip


def depth_figure(run: Run) -> Figure | None:
    """Per block: the [CLS] attention split, each contribution's norm against the skip's, and the
    cosine of each variant's readout to the block's [CLS] output (one line per group)."""
    layers = depth_layers(run)
    if not layers:
        return None
    groups = [g for g in GROUPS if DepthProbe.result_name(layers[0], f"split/{g}") in run.results]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))

    def over_depth(quantity: str) -> list[float]:
        return [run.results[DepthProbe.result_name(layer, quantity)] for layer in layers]

    for group in groups:
        colour = variant_colour(group)
        axes[0].plot(layers, over_depth(f"split/{group}"), marker="o", markersize=3,
                     color=colour, label=group)  # fmt: skip
        axes[1].plot(layers, list(np.divide(over_depth(f"norm/{group}"), over_depth("norm/skip"))),
                     marker="o", markersize=3, color=colour, label=group)  # fmt: skip
    for variant in (*groups, "skip"):
        axes[2].plot(layers, over_depth(f"cosine/{variant}"), marker="o", markersize=3,
                     color=variant_colour(variant), label=variant)  # fmt: skip
    labels = ("[CLS] attention mass (mean)", "||contribution|| / ||skip|| (means)", "cosine to block output")
    for axis, label in zip(axes, labels, strict=True):
        axis.set_xlabel("block")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
    axes[0].set_ylim(-0.02, 1.02)
    axes[2].set_ylim(-1.05, 1.05)
    figure.suptitle(f"Where in depth is [CLS] built from the patches?\n{run_title(run)}", fontsize=10)
    figure.tight_layout()
    return figure


def layer_cka_matrix(run: Run, estimator: str) -> tuple[list[int], np.ndarray] | None:
    """The blocks and the symmetric block x block CKA matrix of `estimator` (1 on the diagonal)."""
    prefix = f"{estimator}/"
    pairs = [name.removeprefix(prefix).split("/") for name in run.results if name.startswith(prefix)]
    layers = sorted({int(block) for pair in pairs for block in pair})
    if len(layers) < 2:
        return None
    matrix = np.eye(len(layers))
    for i, first in enumerate(layers):
        for j, second in enumerate(layers[i + 1 :], start=i + 1):
            matrix[i, j] = matrix[j, i] = run.results[LayerCKAProbe.result_name(estimator, first, second)]
    return layers, matrix


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


def layer_cka_figure(run: Run) -> Figure | None:
    """CKA between the [CLS] states after the chosen blocks (linear and debiased)."""
    matrices = {e: layer_cka_matrix(run, e) for e in LayerCKAProbe.ESTIMATORS}
    if any(found is None for found in matrices.values()):
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for axis, (estimator, found) in zip(axes, matrices.items(), strict=True):
        layers, matrix = cast(tuple[list[int], np.ndarray], found)
        cka_heatmap(axis, [str(layer) for layer in layers], matrix, estimator.replace("_", " "))
        axis.set_xlabel("block")
        axis.set_ylabel("block")
    figure.suptitle(f"[CLS] states across blocks (CKA)\n{run_title(run)}", fontsize=10)
    figure.tight_layout()
    return figure


DELETION_COLOURS = {"top": "#d62728", "random": "#7f7f7f", "bottom": "#1f77b4"}


def deletion_curves(run: Run) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """order -> (deleted fractions from 0, mean cosines from 1, stds from 0) of the run's deletion
    results; empty without them."""
    fractions = [f for f in DeletionProbe.FRACTIONS if DeletionProbe.result_name("top", f) in run.results]
    if not fractions:
        return {}
    return {
        order: (
            [0.0, *fractions],
            [1.0, *(run.results[DeletionProbe.result_name(order, f)] for f in fractions)],
            [0.0, *(run.results[DeletionProbe.std_name(order, f)] for f in fractions)],
        )
        for order in DELETION_ORDERS
    }


def deletion_figure(run: Run) -> Figure | None:
    """The deletion test: cosine of the output without the deleted patches to the full one, over the
    share deleted, for the map's top patches, random ones and its bottom ones."""
    curves = deletion_curves(run)
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for order, (x, mean, std) in curves.items():
        label = "random (seeded)" if order == "random" else f"{order} of the attention map"
        axis.errorbar(x, mean, yerr=std, marker="o", markersize=3, capsize=2, color=DELETION_COLOURS[order],
                      label=label)  # fmt: skip
    area = run.results[DeletionProbe.area_name("random")]
    axis.set_xlabel("share of patches deleted (keys masked in every layer)")
    axis.set_ylabel("cosine to the full [CLS] output")
    axis.legend(fontsize=8)
    axis.set_title(f"Does the map show what the model used? area random - top {area:+.3f}\n{run_title(run)}",
                   fontsize=10)  # fmt: skip
    figure.tight_layout()
    return figure


FIGURES: dict[str, Callable[[Run], Figure | None]] = {
    "split.png": split_figure,
    "registers.png": registers_figure,
    "cka.png": cka_figure,
    "cka_debiased.png": lambda run: cka_figure(run, "cka_debiased"),
    "oneshot.png": oneshot_figure,
    "linear.png": linear_figure,
    "maps.png": maps_figure,
    "faithfulness.png": faithfulness_figure,
    "norms.png": norms_figure,
    "layerwise.png": layerwise_figure,
    "depth.png": depth_figure,
    "deletion.png": deletion_figure,
    "cka_layers.png": layer_cka_figure,
}


def run_figures(run: Run) -> dict[str, Figure]:
    """Every figure the run's results allow, by file name."""
    figures = {name: draw(run) for name, draw in FIGURES.items()}
    return {name: figure for name, figure in figures.items() if figure is not None}
