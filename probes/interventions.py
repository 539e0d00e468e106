"""What an intervention does to the model's output (issue 21): for every `--intervene`, how far the
output moves from the clean one (cosine, relative change, CKA over images), how the [CLS] attention
split shifts, and, through `Intervened`, the label probes (k-NN, linear, one-shot) read again on the
intervened outputs, whose accuracy drop is the downstream cost.

Results, per intervention (`harness.Intervention.prefix`, e.g. `intervened/model/register@12/mean/`):
`cosine_to_clean` (and `_std`), `relative_change` (and `_std`), `cka_to_clean`,
`split_shift/{group}` (intervened minus clean [CLS] attention share, where the pass reports its
split), and the wrapped probes' results under the same prefix (`.../knn/output/full/k20/top1`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import Tensor, nn

from harness import INTERVENTION_PREFIX, PIXELS, Intervention
from probes.base import FULL_OUTPUT, Headline, Probe, ProbeContext, module_key
from probes.knn import SHOWN_K, KnnProbe
from probes.linear import LinearProbe
from probes.metrics.cka import SharedReferenceCKA
from probes.metrics.stats import ColumnStats
from probes.oneshot import OneShotProbe
from probes.plotting import named, run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COSINE, CHANGE, CKA, SHIFT = "cosine_to_clean", "relative_change", "cka_to_clean", "split_shift"
LABEL_RESULTS: tuple[tuple[str, str], ...] = (
    (KnnProbe.name, KnnProbe.result_name(FULL_OUTPUT, SHOWN_K, 1)),
    (LinearProbe.name, LinearProbe.result_name(FULL_OUTPUT, 1)),
    (OneShotProbe.name, OneShotProbe.result_name(FULL_OUTPUT, 1)),
)
"""The label probes' headline accuracy of the full output, whose drop under an intervention is drawn."""


def intervened_view(decomposition: Mapping[str, Tensor], intervention: Intervention) -> dict[str, Tensor]:
    """The entries of the pass under `intervention`, under their clean names (and the batch's images)."""
    prefix = intervention.prefix
    view = {name[len(prefix) :]: tensor for name, tensor in decomposition.items() if name.startswith(prefix)}
    if PIXELS in decomposition:
        view[PIXELS] = decomposition[PIXELS]
    return view


class Intervened(Probe):
    """A probe read on the outputs of a pass under an intervention: it sees that pass's entries under
    their clean names, and its results and arrays are named under the intervention's prefix. Built by
    `ProbeSelection.build` for every probe that can read such a pass (`Probe.under_interventions`)."""

    def __init__(self, inner: Probe, intervention: Intervention) -> None:
        super().__init__()
        self.inner, self.intervention = inner, intervention

    @classmethod
    def from_context(cls, context: ProbeContext) -> Probe:
        raise TypeError("Intervened wraps a built probe: Intervened(probe, intervention)")

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.inner.update(intervened_view(decomposition, self.intervention), labels, indices)

    def compute(self) -> dict[str, float]:
        return {self.intervention.prefix + name: value for name, value in self.inner.compute().items()}

    def arrays(self) -> dict[str, Tensor]:
        return {self.intervention.prefix + name: value for name, value in self.inner.arrays().items()}


class InterventionsProbe(Probe):
    """How each intervention moves the output: per image the cosine of the intervened `output/full`
    to the clean one and their relative distance ||f' - f|| / ||f|| (mean and std over images), the
    linear CKA of the intervened to the clean outputs over images, and the shift of the [CLS]
    attention split where the intervened pass reports one."""

    name = "interventions"
    position = 140
    needs_pixels = True  # the intervened passes run with the backbone; saved features hold none
    needs_interventions = True

    def __init__(
        self, interventions: Sequence[Intervention], width: int, split_groups: Sequence[str]
    ) -> None:
        super().__init__()
        self.interventions = tuple(interventions)
        self.split_groups = tuple(split_groups)
        self.stats = nn.ModuleDict(
            {module_key(i.name): ColumnStats(2 + len(self.split_groups)) for i in self.interventions}
        )
        self.cka = nn.ModuleDict(
            {module_key(i.name): SharedReferenceCKA(width, 1) for i in self.interventions}
        )

    @classmethod
    def from_context(cls, context: ProbeContext) -> InterventionsProbe:
        groups = tuple(name.removeprefix("split/") for name in context.split_names)
        return cls(context.interventions, context.info.hidden_size, groups)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        clean = decomposition[FULL_OUTPUT].float()
        for intervention in self.interventions:
            key = module_key(intervention.name)
            view = intervened_view(decomposition, intervention)
            moved = view[FULL_OUTPUT].float()
            cosine = nn.functional.cosine_similarity(moved.double(), clean.double(), dim=-1).float()
            change = (moved - clean).norm(dim=-1) / clean.norm(dim=-1).clamp_min(
                torch.finfo(clean.dtype).tiny
            )
            shifts = [
                view[f"split/{group}"] - decomposition[f"split/{group}"]
                if f"split/{group}" in view
                else torch.full_like(cosine, float("nan"))
                for group in self.split_groups
            ]
            self._stats(key).update(torch.stack([cosine, change, *shifts], dim=1))
            self._cka(key).update(clean, moved.unsqueeze(0))

    def compute(self) -> dict[str, float]:
        results: dict[str, float] = {}
        for intervention in self.interventions:
            key, prefix = module_key(intervention.name), intervention.prefix
            stats = self._stats(key).compute()
            means, stds = torch.atleast_1d(stats["mean"]).tolist(), torch.atleast_1d(stats["std"]).tolist()
            results |= {prefix + COSINE: means[0], prefix + COSINE + "_std": stds[0]}
            results |= {prefix + CHANGE: means[1], prefix + CHANGE + "_std": stds[1]}
            results[prefix + CKA] = float(torch.atleast_1d(self._cka(key).compute())[0])
            for group, mean in zip(self.split_groups, means[2:], strict=True):
                if not np.isnan(mean):
                    results[f"{prefix}{SHIFT}/{group}"] = mean
        return results

    @classmethod
    def run_headlines(cls, results: Mapping[str, float]) -> tuple[Headline, ...]:
        """Per intervention of the run: the cosine of its output to the clean one, and each label
        probe's full-output accuracy under it."""
        lines: list[Headline] = []
        for name in _interventions_in(results):
            lines.append(
                (
                    f"{INTERVENTION_PREFIX}{name}/{COSINE}",
                    f"cosine of output/full under {name} to the clean one",
                )
            )
            lines += [
                (
                    f"{INTERVENTION_PREFIX}{name}/{result}",
                    f"{probe} accuracy of output/full under {name} (clean: {result})",
                )
                for probe, result in LABEL_RESULTS
            ]
        return tuple(lines)

    def _stats(self, key: str) -> ColumnStats:
        return cast(ColumnStats, self.stats[key])

    def _cka(self, key: str) -> SharedReferenceCKA:
        return cast(SharedReferenceCKA, self.cka[key])

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Per intervention: the cosine of the intervened output to the clean one, and the drop of each
        label probe's full-output accuracy (clean minus intervened)."""
        names = _interventions_in(run.results)
        if not names:
            return {}
        drops = _drops(run.results, names)
        columns = 2 if drops else 1
        figure, axes = subplots(1, columns, figsize=(6 * columns, 0.5 * len(names) + 2), squeeze=False)
        positions = np.arange(len(names))
        cosine_axis = axes[0, 0]
        cosines = [run.results[f"{INTERVENTION_PREFIX}{name}/{COSINE}"] for name in names]
        errors = [run.results.get(f"{INTERVENTION_PREFIX}{name}/{COSINE}_std", 0.0) for name in names]
        cosine_axis.barh(positions, cosines, xerr=errors, color="#1f77b4")
        cosine_axis.set_yticks(positions, names)
        cosine_axis.set_xlabel("cosine of the intervened output/full to the clean one")
        cosine_axis.set_xlim(min(0.0, *cosines) - 0.05, 1.05)
        cosine_axis.invert_yaxis()
        if drops:
            axis = axes[0, 1]
            height = 0.8 / len(drops)
            for offset, (probe, values) in enumerate(drops.items()):
                axis.barh(positions + offset * height - 0.4 + height / 2, values, height=height, label=probe)
            axis.set_yticks(positions, [""] * len(names))
            axis.axvline(0, color="black", linewidth=0.8)
            axis.set_xlabel("accuracy drop of output/full (clean - intervened)")
            axis.legend(loc="lower right")
            axis.invert_yaxis()
        figure.suptitle(f"Interventions: {run_title(run)}")
        figure.tight_layout()
        return named("interventions.png", figure) | named(
            "interventions_blocks.png", cls._over_blocks(run, names)
        )

    @classmethod
    def _over_blocks(cls, run: RunView, names: Sequence[str]) -> Figure | None:
        """The interventions given at two or more single blocks (e.g. `register@1:mean` ...
        `register@12:mean`): cosine to the clean output, and the first label probe's accuracy drop,
        over the block (None when there are none)."""
        series: dict[str, list[tuple[int, str]]] = {}
        for name in names:
            if match := _SINGLE_BLOCK.match(name):
                series.setdefault(f"{match['level']}/{match['targets']}/{match['mode']}", []).append(
                    (int(match["block"]), name)
                )
        series = {label: sorted(points) for label, points in series.items() if len(points) >= 2}
        if not series:
            return None
        label = next((pair for pair in LABEL_RESULTS if pair[1] in run.results), None)
        rows = 2 if label else 1
        figure, axes = subplots(rows, 1, figsize=(7, 3.2 * rows + 0.8), squeeze=False, sharex=True)
        for curve, points in series.items():
            blocks = [block for block, _ in points]
            axes[0, 0].plot(
                blocks,
                [run.results[f"{INTERVENTION_PREFIX}{n}/{COSINE}"] for _, n in points],
                "o-",
                label=curve,
            )
            if label:
                clean = run.results[label[1]]
                drops = [
                    clean - run.results.get(f"{INTERVENTION_PREFIX}{n}/{label[1]}", np.nan) for _, n in points
                ]
                axes[1, 0].plot(blocks, drops, "o-", label=curve)
        axes[0, 0].set_ylabel("cosine to the clean output/full")
        axes[0, 0].legend()
        if label:
            axes[1, 0].axhline(0, color="black", linewidth=0.8)
            axes[1, 0].set_ylabel(f"{label[0]} accuracy drop")
        axes[-1, 0].set_xlabel("block of the intervention")
        axes[-1, 0].set_xticks(sorted({block for points in series.values() for block, _ in points}))
        figure.suptitle(f"Interventions over blocks: {run_title(run)}")
        figure.tight_layout()
        return figure

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Per intervention and model: the cosine of the output to the clean one and, where every run
        has a label probe, the drop of its full-output accuracy (a cosine near 1 can hide a large drop:
        what the class needs may be a small part of the output)."""
        names = list(dict.fromkeys(name for item in compared for name in _interventions_in(item.run.results)))
        if not names:
            return {}
        label = next(
            (
                (probe, result)
                for probe, result in LABEL_RESULTS
                if all(result in item.run.results for item in compared)
            ),
            None,
        )
        rows = 2 if label else 1
        figure, axes = subplots(
            rows, 1, figsize=(max(6.0, 1.2 * len(names) + 3), 3.5 * rows + 1), squeeze=False
        )
        width = 0.8 / len(compared)
        positions = np.arange(len(names))
        for offset, item in enumerate(compared):
            results = item.run.results
            shift = positions + offset * width - 0.4 + width / 2
            cosines = [results.get(f"{INTERVENTION_PREFIX}{name}/{COSINE}", np.nan) for name in names]
            axes[0, 0].bar(shift, cosines, width, label=item.label)
            if label:
                result = label[1]
                drops = [
                    results[result] - results.get(f"{INTERVENTION_PREFIX}{name}/{result}", np.nan)
                    for name in names
                ]
                axes[1, 0].bar(shift, drops, width, label=item.label)
        axes[0, 0].set_ylabel("cosine to the clean output/full")
        axes[0, 0].set_ylim(0, 1.05)
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
        axes[0, 0].set_title("What each intervention does to the output, per model")
        if label:
            axes[1, 0].axhline(0, color="black", linewidth=0.8)
            axes[1, 0].set_ylabel(f"{label[0]} accuracy drop\n(clean - intervened)")
        for row in range(rows):
            shown = names if row == rows - 1 else [""] * len(names)
            axes[row, 0].set_xticks(positions, shown, rotation=30, ha="right")
        figure.tight_layout()
        return named("compare_interventions.png", figure)


_SINGLE_BLOCK = re.compile(
    r"^(?P<level>model|readout)/(?P<targets>[a-z_+]+)@(?P<block>\d+)/(?P<mode>[a-z]+)$"
)
"""An intervention's name at one block."""


def _interventions_in(results: Mapping[str, float]) -> list[str]:
    """The interventions of a run's results, in the order they were given."""
    suffix = f"/{COSINE}"
    names = [
        key.removeprefix(INTERVENTION_PREFIX).removesuffix(suffix) for key in results if key.endswith(suffix)
    ]
    return [name for name in names if name.startswith(("model/", "readout/"))]


def _drops(results: Mapping[str, float], names: Sequence[str]) -> dict[str, list[float]]:
    """Label probe -> clean minus intervened full-output accuracy per intervention (probes that ran)."""
    drops: dict[str, list[float]] = {}
    for probe, result in LABEL_RESULTS:
        if result in results and all(f"{INTERVENTION_PREFIX}{name}/{result}" in results for name in names):
            drops[probe] = [
                results[result] - results[f"{INTERVENTION_PREFIX}{name}/{result}"] for name in names
            ]
    return drops
