"""A finished run's figures: every probe draws its own (`Probe.figures`), from the saved run.

`run_figures` asks every registered probe, in the registry's order, for the figures its results in
the run allow; a probe that did not run draws none.
"""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.figure import Figure

from cls_decoupling.outputs.runs import Run
from probes import PROBE_CLASSES, Probe


def probes_figures(draw: Callable[[type[Probe]], dict[str, Figure]]) -> dict[str, Figure]:
    """What `draw` gives for every registered probe, in the registry's order, by file name (two probes
    drawing the same file name is a bug, refused)."""
    figures: dict[str, Figure] = {}
    for probe in PROBE_CLASSES:
        drawn = draw(probe)
        if clash := set(drawn) & set(figures):
            raise ValueError(f"probe {probe.name} draws {sorted(clash)}, which another probe drew")
        figures |= drawn
    return figures


def run_figures(run: Run) -> dict[str, Figure]:
    """Every figure the run's results allow, by file name."""
    return probes_figures(lambda probe: probe.figures(run))
