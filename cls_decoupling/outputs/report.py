"""DIR/report.md: a run's configuration, numbers and figures, readable without TensorBoard."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cls_decoupling.outputs.runs import FAITHFULNESS_FILE, FIGURES_DIR, Run
from probes import CKAProbe, MapsProbe, NormsProbe, OneShotProbe, RegistersProbe
from probes.split import TWO_WAY, SplitProbe

HEADLINES = (
    (
        SplitProbe.result_name(TWO_WAY, "mean"),
        "[CLS] attention on registers / (registers + patches), mean over images",
    ),
    (CKAProbe.result_name("cka", "output/patch"), "CKA of the patch-only output with the full output"),
    (CKAProbe.result_name("cka", "output/register"), "CKA of the register-only output with the full output"),
    (
        CKAProbe.result_name("cka", "output/skip"),
        "CKA of the skip-only (residual) output with the full output",
    ),
    (OneShotProbe.result_name("output/patch", 5), "one-shot top-5 accuracy of the patch-only output"),
    (
        MapsProbe.result_name("attention", "mean"),
        "cosine of patch-only to full contribution, mean over images",
    ),
    (NormsProbe.result_name("attention/patch"), "L2 norm of the patch contribution"),
    (NormsProbe.result_name("attention/skip"), "L2 norm of the skip (residual) contribution"),
    (
        RegistersProbe.result_name("top_in_registers"),
        "share of images whose highest-norm penultimate token is a register",
    ),
    (RegistersProbe.result_name("pairwise_cosine"), "mean pairwise cosine of that token across images"),
)
"""The paper's key numbers, shown first when the run has them."""


def format_value(value: Any) -> str:
    """A value as a report shows it: integers plain, floats to 6 significant digits, lists joined.

    >>> [format_value(v) for v in (3, 2.0, 0.1234567, float("nan"), ["cka", "split"])]
    ['3', '2', '0.123457', 'nan', 'cka, split']
    """
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.6g}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Lines of a Markdown table ('|' in cells escaped)."""

    def cells(row: Sequence[Any]) -> str:
        return "| " + " | ".join(format_value(cell).replace("|", "\\|") for cell in row) + " |"

    return [cells(header), "|" + "---|" * len(header), *(cells(row) for row in rows)]


def results_by_probe(results: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Results grouped by their first name component (`cka/output/patch` -> `cka`), in run order."""
    groups: dict[str, dict[str, float]] = {}
    for name, value in results.items():
        groups.setdefault(name.split("/", 1)[0], {})[name] = value
    return groups


def run_report(run: Run, figures: Sequence[str]) -> str:
    """The Markdown of report.md for `run`, linking `figures` (file names under figures/)."""
    summary = run.summary
    data = summary["data"]
    lines = [
        f"# {run.backbone} on {data['source']} ({run.num_images} images)",
        "",
        "Written by evaluate.py. Result names are those of results.json and TensorBoard "
        '(README.md, "What it computes").',
    ]
    if summary["backbone"].get("random_weights"):
        lines += [
            "",
            "**Random weights: these numbers test the code and say nothing about any trained model.**",
        ]
    headlines = [(name, text, run.results[name]) for name, text in HEADLINES if name in run.results]
    if headlines:
        lines += ["", "## Key numbers", "", *markdown_table(("result", "what", "value"), headlines)]
    if figures:
        lines += ["", "## Figures"]
        for name in figures:
            lines += ["", f"![{name}]({FIGURES_DIR}/{name})"]
    for section in ("backbone", "data", "run"):
        settings = {k: v for k, v in summary[section].items() if k not in ("skipped", "class_names")}
        lines += [
            "",
            f"## {section.capitalize()}",
            "",
            *markdown_table(("setting", "value"), settings.items()),
        ]
    for probe, values in results_by_probe(run.results).items():
        lines += ["", f"## Results: {probe}", "", *markdown_table(("name", "value"), values.items())]
    if MapsProbe.INDEX in run.arrays:
        lines += ["", f"Per-image cosines of the maps probe: [{FAITHFULNESS_FILE}]({FAITHFULNESS_FILE})."]
    if data.get("skipped"):
        lines += ["", "## Skipped files", "", *markdown_table(
            ("index", "reason"), ((item["index"], item["reason"]) for item in data["skipped"])
        )]  # fmt: skip
    return "\n".join(lines) + "\n"
