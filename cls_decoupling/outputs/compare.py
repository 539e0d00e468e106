"""Backbones side by side: the paper's cross-model figures and a table of every scalar per backbone.

Runs are compared in the order given (e.g. S, B, L, g): each figure has the backbones along its
x axis, as the paper's sweeps over model size do.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from cls_decoupling.outputs.figures import probes_figures
from cls_decoupling.outputs.report import format_value, markdown_table, results_by_probe
from cls_decoupling.outputs.runs import Run
from common.run_folders import COMPARISON_TABLES
from probes import FULL_OUTPUT
from probes.metrics import linear_cka
from probes.plotting import cka_heatmap, subplots

log = logging.getLogger(__name__)

COMPARISON_MARKDOWN, COMPARISON_CSV = COMPARISON_TABLES


@dataclass(frozen=True)
class Compared:
    """One run of a comparison and the label it has in figures and tables (its folder's name, or its
    path where names repeat)."""

    label: str
    run: Run


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
    figure, axes = subplots(1, 2, figsize=(11, 4.8))
    for axis, (estimator, matrix) in zip(axes, matrices.items(), strict=True):
        cka_heatmap(axis, labels, matrix, f"{estimator.replace('_', ' ')} of output/full")
    figure.suptitle("How alike are the models' [CLS] outputs? (same images)", fontsize=10)
    figure.tight_layout()
    return figure


def comparison_figures(compared: Sequence[Compared]) -> dict[str, Figure]:
    """Every cross-model figure the runs' results allow, by file name: each probe's
    (`Probe.comparison_figures`, in the registry's order), then the model x model CKA of the saved
    features."""
    figures = probes_figures(lambda probe: probe.comparison_figures(compared))
    if (cka := model_cka_comparison(compared)) is not None:
        figures["compare_cka_models.png"] = cka
    return figures


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
            (c.label, c.run.backbone, c.run.family, c.run.num_images, c.run.record.data.source)
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
