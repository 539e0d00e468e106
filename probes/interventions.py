"""What an intervention does to the model's output (issue 21): for every `--intervene`, how far the
output moves from the clean one (cosine, relative change, CKA over images), how the [CLS] attention
split shifts, and, through `Intervened`, the label probes (k-NN, linear, one-shot) read again on the
intervened outputs, whose accuracy drop is the downstream cost.

Results, per intervention (`Intervention.prefix`, e.g. `intervened/model/register@12/mean/`):
`cosine_to_clean` (and `_std`), `relative_change` (and `_std`), `cka_to_clean`,
`split_shift/{group}` (intervened minus clean [CLS] attention share, where the pass reports its
split), and the wrapped probes' results under the same prefix (`.../knn/output/full/k20/top1`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import Tensor, nn

from harness import Decomposition
from harness.extras.interventions import Intervention
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


def pass_under(decomposition: Mapping[str, Tensor], intervention: Intervention) -> Decomposition:
    """The decomposition of the pass under `intervention` (with the batch's images), under the clean
    names (`Decomposition.pass_of`)."""
    if not isinstance(decomposition, Decomposition):
        raise TypeError("a probe of an intervention reads a backbone call's passes: feed it a Decomposition")
    return decomposition.pass_of(intervention.name)


class Intervened(Probe):
    """A probe read on the outputs of a pass under an intervention: it sees that pass's decomposition,
    runs what it needs under the intervention (its `extras`, e.g. the deletion passes), and its results
    and arrays are named under the intervention's prefix. Built by `ProbeSelection.build` for every
    probe that can read such a pass (`Probe.under_interventions`)."""

    def __init__(self, inner: Probe, intervention: Intervention) -> None:
        super().__init__()
        self.inner, self.intervention = inner, intervention

    @classmethod
    def from_context(cls, context: ProbeContext) -> Probe:
        raise TypeError("Intervened wraps a built probe: Intervened(probe, intervention)")

    def extras(self) -> tuple[Intervention, ...]:
        return (self.intervention.running(self.inner.extras()),)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.inner.update(pass_under(decomposition, self.intervention), labels, indices)

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

    def extras(self) -> tuple[Intervention, ...]:
        return self.interventions

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        clean = decomposition[FULL_OUTPUT].float()
        for intervention in self.interventions:
            key = module_key(intervention.name)
            view = pass_under(decomposition, intervention)
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
    def run_headlines(cls, run: RunView) -> tuple[Headline, ...]:
        """Per intervention of the run: the cosine of its output to the clean one, and each label
        probe's full-output accuracy under it."""
        lines: list[Headline] = []
        for intervention in _interventions_of(run):
            prefix, name = intervention.prefix, intervention.name
            lines.append((prefix + COSINE, f"cosine of output/full under {name} to the clean one"))
            lines += [
                (prefix + result, f"{probe} accuracy of output/full under {name} (clean: {result})")
                for probe, result in LABEL_RESULTS
            ]
        return tuple(lines)

    @classmethod
    def report_tables(cls, run: RunView) -> dict[str, tuple[tuple[str, ...], list[tuple[object, ...]]]]:
        """One at a time against all together: for each intervention on a whole group (`register@12:zero`)
        whose members the run also replaced one by one at the same blocks, mode and level
        (`register1@12:zero` ... `register4@12:zero`), the drop under the group beside the sum of the
        single drops, for the cosine to the clean output (1 - cosine) and each label probe's accuracy."""
        done = [i for i in _interventions_of(run) if i.prefix + COSINE in run.results]
        rows: list[tuple[object, ...]] = []
        for joint in done:
            if len(joint.targets) != 1:
                continue
            group = joint.targets[0]
            singles = [
                i for i in done
                if (i.blocks, i.mode, i.level) == (joint.blocks, joint.mode, joint.level)
                and len(i.targets) == 1 and i.targets[0].removeprefix(group).isdigit()
            ]  # fmt: skip
            if not singles:
                continue
            results = run.results
            labels = [
                (probe, result) for probe, result in LABEL_RESULTS
                if result in results and all(i.prefix + result in results for i in (joint, *singles))
            ]  # fmt: skip
            measures = [("1 - cosine to the clean output/full", COSINE, 1.0)]
            measures += [(f"{probe} accuracy drop", result, results[result]) for probe, result in labels]
            for measure, result, clean in measures:  # the drop: clean value minus intervened value
                alone = [clean - results[i.prefix + result] for i in singles]
                together = clean - results[joint.prefix + result]
                rows.append((joint.name, len(singles), measure, together, sum(alone), max(alone)))
        if not rows:
            return {}
        header = (
            "all together",
            "one at a time",
            "measure",
            "drop together",
            "sum of single drops",
            "largest single drop",
        )
        return {"Interventions one at a time against all together": (header, rows)}

    def _stats(self, key: str) -> ColumnStats:
        return cast(ColumnStats, self.stats[key])

    def _cka(self, key: str) -> SharedReferenceCKA:
        return cast(SharedReferenceCKA, self.cka[key])

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Per intervention: the cosine of the intervened output to the clean one, and the drop of each
        label probe's full-output accuracy (clean minus intervened)."""
        interventions = [i for i in _interventions_of(run) if i.prefix + COSINE in run.results]
        if not interventions:
            return {}
        drops = _drops(run.results, interventions)
        columns = 2 if drops else 1
        figure, axes = subplots(
            1, columns, figsize=(6 * columns, 0.5 * len(interventions) + 2), squeeze=False
        )
        positions = np.arange(len(interventions))
        cosine_axis = axes[0, 0]
        cosines = [run.results[i.prefix + COSINE] for i in interventions]
        errors = [run.results.get(i.prefix + COSINE + "_std", 0.0) for i in interventions]
        bars = cosine_axis.barh(positions, cosines, xerr=errors, color="#1f77b4")
        # 0.996 and 1.0 look alike on a 0..1 axis: each bar says its value (inside it, left of the error)
        cosine_axis.bar_label(bars, labels=[f"{value:.4f}" for value in cosines], label_type="center",
                              fontsize=7, color="white")  # fmt: skip
        cosine_axis.set_yticks(positions, [i.name for i in interventions])
        cosine_axis.set_xlabel("cosine to the clean output/full (± std over images)")
        cosine_axis.set_xlim(min(0.0, *cosines) - 0.05, 1.05)
        cosine_axis.invert_yaxis()
        if drops:
            axis = axes[0, 1]
            height = 0.8 / len(drops)
            for offset, (probe, values) in enumerate(drops.items()):
                axis.barh(positions + offset * height - 0.4 + height / 2, values, height=height, label=probe)
            axis.set_yticks(positions, [""] * len(interventions))
            axis.axvline(0, color="black", linewidth=0.8)
            axis.set_xlabel("accuracy drop of output/full (clean - intervened)")
            axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # beside, never over a bar
            axis.invert_yaxis()
        figure.suptitle(f"Interventions: {run_title(run)}")
        figure.tight_layout()
        return named("interventions.png", figure) | named(
            "interventions_blocks.png", cls._over_blocks(run, interventions)
        )

    @classmethod
    def _over_blocks(cls, run: RunView, interventions: Sequence[Intervention]) -> Figure | None:
        """The interventions given at two or more single blocks (e.g. `register@1:mean` ...
        `register@12:mean`): cosine to the clean output, and the first label probe's accuracy drop,
        over the block (None when there are none)."""
        series: dict[str, list[tuple[int, Intervention]]] = {}
        for intervention in interventions:
            if len(intervention.blocks) == 1:
                curve = f"{intervention.level}/{'+'.join(intervention.targets)}/{intervention.mode}"
                series.setdefault(curve, []).append((intervention.blocks[0], intervention))
        series = {
            curve: sorted(points, key=lambda p: p[0]) for curve, points in series.items() if len(points) >= 2
        }
        if not series:
            return None
        label = next((pair for pair in LABEL_RESULTS if pair[1] in run.results), None)
        rows = 2 if label else 1
        figure, axes = subplots(rows, 1, figsize=(7, 3.2 * rows + 0.8), squeeze=False, sharex=True)
        for curve, points in series.items():
            blocks = [block for block, _ in points]
            axes[0, 0].plot(blocks, [run.results[i.prefix + COSINE] for _, i in points], "o-", label=curve)
            if label:
                clean = run.results[label[1]]
                drops = [clean - run.results.get(i.prefix + label[1], np.nan) for _, i in points]
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
        by_name: dict[str, Intervention] = {}  # one per name: `@last` is another block at another depth
        for item in compared:
            for intervention in _interventions_of(item.run):
                if intervention.prefix + COSINE in item.run.results:
                    by_name.setdefault(intervention.name, intervention)
        interventions = list(by_name.values())
        if not interventions:
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
        longest = max(len(item.label) for item in compared)  # the legend sits beside the bars
        figure, axes = subplots(
            rows, 1, figsize=(max(7.0, 1.2 * len(interventions) + 3 + 0.08 * longest), 3.5 * rows + 1.2),
            squeeze=False,
        )  # fmt: skip
        width = 0.8 / len(compared)
        positions = np.arange(len(interventions))
        for offset, item in enumerate(compared):
            results = item.run.results
            shift = positions + offset * width - 0.4 + width / 2
            cosines = [results.get(i.prefix + COSINE, np.nan) for i in interventions]
            bars = axes[0, 0].bar(shift, cosines, width, label=item.label)
            # 0.996 and 1.0 look alike on a 0..1 axis: each bar says its value
            axes[0, 0].bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
            if label:
                result = label[1]
                drops = [results[result] - results.get(i.prefix + result, np.nan) for i in interventions]
                axes[1, 0].bar(shift, drops, width, label=item.label)
        axes[0, 0].set_ylabel("cosine to the clean output/full")
        axes[0, 0].set_ylim(0, 1.25)  # room for the values above the bars
        axes[0, 0].set_yticks(np.linspace(0, 1, 6))
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
        figure.suptitle("What each intervention does to the output, per model", fontsize=10)
        if label:
            axes[1, 0].axhline(0, color="black", linewidth=0.8)
            axes[1, 0].set_ylabel(f"{label[0]} accuracy drop\n(clean - intervened)")
        for row in range(rows):
            shown = [i.name for i in interventions] if row == rows - 1 else [""] * len(interventions)
            axes[row, 0].set_xticks(positions, shown, rotation=30, ha="right")
        figure.tight_layout()
        return named("compare_interventions.png", figure)


def _interventions_of(run: RunView) -> list[Intervention]:
    """The interventions the run recorded (results.json `run.interventions`), in the order given."""
    return [Intervention.from_name(name, run.num_layers) for name in run.interventions]


def _drops(results: Mapping[str, float], interventions: Sequence[Intervention]) -> dict[str, list[float]]:
    """Label probe -> clean minus intervened full-output accuracy per intervention (probes that ran)."""
    drops: dict[str, list[float]] = {}
    for probe, result in LABEL_RESULTS:
        if result in results and all(i.prefix + result in results for i in interventions):
            drops[probe] = [results[result] - results[i.prefix + result] for i in interventions]
    return drops
