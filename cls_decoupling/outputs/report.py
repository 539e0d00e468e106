"""DIR/report.md: a run's configuration, numbers and figures, readable without TensorBoard."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cls_decoupling.outputs.runs import FAITHFULNESS_FILE, FIGURES_DIR, Run
from probes import PROBE_CLASSES, MapsProbe
from probes.base import Headline


def headlines(run: Run | None = None) -> tuple[Headline, ...]:
    """The key numbers every probe declares (`Probe.headlines`; of `run`: `Probe.run_headlines`), in
    the registry's order: shown first in report.md when the run has them."""
    if run is None:
        return tuple(headline for probe in PROBE_CLASSES for headline in probe.headlines())
    return tuple(headline for probe in PROBE_CLASSES for headline in probe.run_headlines(run))


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
    if run.info.random_weights:
        lines += [
            "",
            "**Random weights: these numbers test the code and say nothing about any trained model.**",
        ]
    key = [(name, text, run.results[name]) for name, text in headlines(run) if name in run.results]
    if key:
        lines += ["", "## Key numbers", "", *markdown_table(("result", "what", "value"), key)]
    for probe_class in PROBE_CLASSES:
        for title, (header, rows) in probe_class.report_tables(run).items():
            lines += ["", f"## {title}", "", *markdown_table(header, rows)]
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
