"""Split probe (paper Fig 2a): mean, std and histogram of the per-image [CLS] attention split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from harness import split_names
from harness.tokens import split_groups
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.shares import ShareHistogram
from probes.plotting import (
    GROUP_COLOURS,
    GROUP_LABELS,
    error_bars,
    histogram_rows,
    models_axis,
    reader_of,
    run_title,
    subplots,
)
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TWO_WAY = "register_vs_patch"
"""The paper's two-way split: p_register / (p_register + p_patch), per image."""
COLOURS = {**GROUP_COLOURS, TWO_WAY: "#9467bd"}
LABELS = {**GROUP_LABELS, TWO_WAY: "registers / (registers + patches)"}


class SplitProbe(Probe):
    """Head-averaged [CLS] attention mass on [CLS], registers and patches (and a distilled model's
    distillation token), and the paper's two-way split.

    Results: `split/{cls,register,patch,register_vs_patch}/{mean,std}` over images (std ddof 0),
    `split/distillation/{mean,std}` for a distilled model, and `split/artifact/{mean,std}` (the
    artifact patches' share, part of the patches') where the patches are split by norm.
    Arrays: `split/{column}/histogram` (images per bin of 20 equal bins of [0, 1]) and
    `split/bin_edges`.

    Args:
        num_distillation: distillation tokens of the model (its own column when there is one).
    """

    name = "split"
    position = 10
    under_interventions = "decomposition"

    @staticmethod
    def columns_for(num_distillation: int = 0, artifact: bool = False) -> tuple[str, ...]:
        """The columns of a model with `num_distillation` distillation tokens: its `split_groups`, the
        artifact patches where the patches are split by norm (part of `patch`), then the two-way split."""
        return (*split_groups(num_distillation), *(("artifact",) if artifact else ()), TWO_WAY)

    COLUMNS: ClassVar[tuple[str, ...]] = columns_for(0)
    """The columns of every model; a distilled model's probe adds `distillation`."""
    STATS: ClassVar[tuple[str, ...]] = ("mean", "std")
    BIN_EDGES: ClassVar[str] = "split/bin_edges"

    @staticmethod
    def result_name(column: str, stat: str) -> str:
        """`split/{column}/{stat}`, column in `COLUMNS`, stat in `STATS`."""
        return f"split/{column}/{stat}"

    @staticmethod
    def histogram_name(column: str) -> str:
        return f"split/{column}/histogram"

    @classmethod
    def from_context(cls, context: ProbeContext) -> SplitProbe:
        return cls(context.info.num_distillation, context.info.artifact_threshold > 0)

    def __init__(self, num_distillation: int = 0, artifact: bool = False) -> None:
        super().__init__()
        self.names = split_names(num_distillation, artifact)
        self.columns = self.columns_for(num_distillation, artifact)
        self.metric = ShareHistogram(columns=len(self.columns))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        masses = {name: decomposition[name] for name in self.names}  # images, each
        shapes = {tuple(mass.shape) for mass in masses.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"split masses must be equal (images,) vectors, got {sorted(shapes)}")
        register, patch = masses["split/register"], masses["split/patch"]
        outside_cls = register + patch
        two_way = torch.where(outside_cls > 0, register / outside_cls.clamp_min(1e-30), 0.0)
        self.metric.update(torch.stack([*masses.values(), two_way], dim=1))

    def compute(self) -> dict[str, float]:
        stats = self.metric.compute()
        return {
            self.result_name(column, stat): stats[stat][position].item()
            for position, column in enumerate(self.columns)
            for stat in self.STATS
        }

    def arrays(self) -> dict[str, Tensor]:
        counts = self.metric.compute()["counts"]
        arrays = {self.histogram_name(column): counts[i] for i, column in enumerate(self.columns)}
        return {**arrays, self.BIN_EDGES: self.metric.bin_edges}

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (
                cls.result_name(TWO_WAY, "mean"),
                "[CLS] attention on registers / (registers + patches), mean over images",
            ),
        )

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Fig 2a: the last-layer [CLS] attention split: mean share per group, distribution over images."""
        results = run.results
        if cls.result_name("patch", "mean") not in results:
            return {}
        registers = run.num_registers > 0
        groups = [g for g in split_groups(run.num_distillation) if registers or g != "register"]
        groups += ["artifact"] if cls.result_name("artifact", "mean") in results else []
        histograms = cls.BIN_EDGES in run.arrays
        figure, axes = subplots(
            1, 2 if histograms else 1, figsize=(10 if histograms else 4.5, 3.8), squeeze=False
        )
        axis = axes[0, 0]
        means = [results[cls.result_name(g, "mean")] for g in groups]
        stds = [results[cls.result_name(g, "std")] for g in groups]
        axis.bar([LABELS[g] for g in groups], means, yerr=stds, capsize=4, color=[COLOURS[g] for g in groups])
        axis.set_ylim(0, 1)
        axis.set_ylabel(f"share of {reader_of([run])} attention (mean ± std)")
        two_way = results[cls.result_name(TWO_WAY, "mean")]
        axis.set_title(
            f"mean over images; registers / (registers + patches) = {two_way:.3f}" if registers
            else "mean over images (no registers in this model)", fontsize=9,
        )  # fmt: skip
        if histograms:
            cls._histograms(axes[0, 1], run, registers)
        figure.suptitle(
            f"Last-layer {reader_of([run])} attention split (Fig 2a)\n{run_title(run)}", fontsize=10
        )
        figure.tight_layout()
        return {"split.png": figure}

    @classmethod
    def _histograms(cls, axis: Axes, run: RunView, registers: bool) -> None:
        """The distribution of each group's share over images (registers only when the model has them)."""
        edges = run.arrays[cls.BIN_EDGES].numpy()
        # the parts of the whole first ([CLS], distillation, patches), then registers and the two-way split
        artifact = cls.histogram_name("artifact") in run.arrays
        present = set(cls.columns_for(run.num_distillation, artifact)) - (
            set() if registers else {"register", TWO_WAY}
        )
        columns = [
            c for c in ("cls", "distillation", "patch", "artifact", "register", TWO_WAY) if c in present
        ]
        rows = [(LABELS[c], run.arrays[cls.histogram_name(c)].numpy(), COLOURS[c]) for c in columns]
        histogram_rows(axis, rows, edges)
        axis.set_xlabel(f"share of {reader_of([run])} attention in one image")
        axis.set_title("distribution over images (bar height: share of images)", fontsize=9)

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Fig 2a across models: mean share of [CLS] attention on each group (± std over images) and, for
        models with registers, the distribution over images of registers / (registers + patches)."""
        if not any(cls.result_name("patch", "mean") in c.run.results for c in compared):
            return {}
        with_histograms = [c for c in compared if cls.BIN_EDGES in c.run.arrays and c.run.num_registers > 0]
        figure_width = 1.6 * len(compared) + (9 if with_histograms else 3)
        figure, axes = subplots(
            1, 2 if with_histograms else 1, figsize=(figure_width, 4.0), squeeze=False,
        )  # fmt: skip
        axis = axes[0, 0]
        artifact = any(cls.result_name("artifact", "mean") in c.run.results for c in compared)
        columns = cls.columns_for(max(c.run.num_distillation for c in compared), artifact)
        width = 0.8 / len(columns)
        for g, column in enumerate(columns):
            means = [c.run.results.get(cls.result_name(column, "mean"), np.nan) for c in compared]
            stds = [c.run.results.get(cls.result_name(column, "std"), np.nan) for c in compared]
            positions = np.arange(len(compared)) + (g - (len(columns) - 1) / 2) * width
            axis.bar(positions, means, width, yerr=error_bars(stds), capsize=2, color=COLOURS[column],
                     label=LABELS[column], hatch="//" if column == TWO_WAY else None)  # fmt: skip
        models_axis(axis, compared, [cls.result_name("patch", "mean") in c.run.results for c in compared])
        axis.set_ylim(0, 1.3)  # room for the legend above the bars
        axis.set_yticks(np.linspace(0, 1, 6))
        axis.set_ylabel(f"share of {reader_of([c.run for c in compared])} attention (mean ± std)")
        axis.legend(fontsize=7, loc="upper center", ncol=2)
        axis.set_title("mean over images", fontsize=9)
        if with_histograms:
            rows = [
                (c.label, c.run.arrays[cls.histogram_name(TWO_WAY)].numpy(), COLOURS[TWO_WAY])
                for c in with_histograms
            ]
            histogram_rows(axes[0, 1], rows, with_histograms[0].run.arrays[cls.BIN_EDGES].numpy())
            axes[0, 1].set_xlabel("registers / (registers + patches) in one image")
            axes[0, 1].set_title("distribution over images (models with registers)", fontsize=9)
        reader = reader_of([c.run for c in compared])
        figure.suptitle(f"Last-layer {reader} attention split per model (Fig 2a)", fontsize=10)
        figure.tight_layout()
        return {"compare_split.png": figure}
