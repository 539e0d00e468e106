"""A finished run's figures: every probe draws its own (`Probe.figures`), from the saved run.

`run_figures` asks every registered probe, in the registry's order, for the figures its results in
the run allow; a probe that did not run draws none.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from cls_decoupling.outputs.runs import Run
from probes import PROBE_CLASSES


def run_figures(run: Run) -> dict[str, Figure]:
    """Every figure the run's results allow, by file name."""
    figures: dict[str, Figure] = {}
    for probe in PROBE_CLASSES:
        drawn = probe.figures(run)
        if clash := set(drawn) & set(figures):
            raise ValueError(f"probe {probe.name} draws {sorted(clash)}, which another probe drew")
        figures |= drawn
    return figures
