"""Norms probe (paper Fig 5a): L2 norm of each contribution to the [CLS] output, over images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from probes.base import ColumnStatsProbe, Headline, ProbeContext
from probes.plotting import named, reader_of, variant_bars, variant_sweep
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class NormsProbe(ColumnStatsProbe):
    """Mean and std over images of ||v|| for every variant v (patch, register, cls, skip, full...).

    Results: `norm/{readout}/{variant}` (mean) and `norm/{readout}/{variant}/std`; the paper's
    panel compares `norm/attention/patch` with `norm/attention/skip`.

    Args:
        variants: the `{readout}/{variant}` names the backbone produces.
    """

    name = "norms"
    position = 50
    under_interventions = "decomposition"

    @staticmethod
    def result_name(variant: str) -> str:
        """`norm/{readout}/{variant}`: the mean norm over images."""
        return f"norm/{variant}"

    @staticmethod
    def std_name(variant: str) -> str:
        return f"norm/{variant}/std"

    @classmethod
    def from_context(cls, context: ProbeContext) -> NormsProbe:
        return cls(context.variants)

    def __init__(self, variants: Sequence[str]) -> None:
        super().__init__([(self.result_name(v), self.std_name(v)) for v in variants])
        self.variants = tuple(variants)

    def columns(self, decomposition: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([decomposition[v].double().norm(dim=-1) for v in self.variants], dim=1)

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (cls.result_name("attention/patch"), "L2 norm of the patch contribution"),
            (cls.result_name("attention/skip"), "L2 norm of the skip (residual) contribution"),
        )

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Fig 5a: L2 norm of each contribution at the attention readout (patch, register, cls against
        skip)."""
        figure = variant_bars(
            run, cls.result_name, cls.std_name,
            f"L2 norm of each contribution to {_stream([run])} (Fig 5a)",
            "L2 norm (mean ± std over images)", readout="attention",
        )  # fmt: skip
        return named("norms.png", figure)

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Fig 5a across models: L2 norm of each contribution at the attention readout."""
        figure = variant_sweep(
            compared, (cls.result_name, cls.std_name),
            f"L2 norm of each contribution to {_stream([c.run for c in compared])} per model (Fig 5a)",
            "L2 norm (mean ± std over images)", None, readout="attention",
        )  # fmt: skip
        return named("compare_norms.png", figure)


def _stream(runs: Sequence[RunView]) -> str:
    """What the contributions add up to: the [CLS] residual stream, or a pooling head's output (no
    residual there, so no skip bar)."""
    reader = reader_of(runs)
    if reader == "[CLS]":
        return "the [CLS] residual stream"
    return (
        "the pooling head's output (no residual: no skip)"
        if reader == "pooling-head"
        else "the pooled output"
    )
