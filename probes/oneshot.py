"""One-shot probe (paper Fig 3b): centroids of the full output, queries of each variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from probes.base import FULL_OUTPUT, Headline, Probe, ProbeContext
from probes.metrics.oneshot import OneShotAccuracy
from probes.plotting import NameOf, accuracy_bars, accuracy_sweep, named, top_k
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_K = (1, 5)


class OneShotProbe(Probe):
    """Cosine nearest-centroid accuracy: centroids from `output/full` of `shots` images per class, one
    query per class from each variant, over seeded episodes.

    Results: `oneshot/{readout}/{variant}/top{k}` and `.../top{k}_std` over episodes,
    `oneshot/classes`, `oneshot/skipped_classes` (too few images), `oneshot/episodes`.
    """

    name = "oneshot"
    position = 80
    needs_labels = True
    under_interventions = "outputs"
    TOP_K: ClassVar[tuple[int, ...]] = TOP_K
    CLASSES: ClassVar[str] = "oneshot/classes"
    SKIPPED_CLASSES: ClassVar[str] = "oneshot/skipped_classes"
    EPISODES: ClassVar[str] = "oneshot/episodes"

    @staticmethod
    def result_name(variant: str, k: int) -> str:
        """`oneshot/{readout}/{variant}/top{k}`: the mean over episodes."""
        return f"oneshot/{variant}/top{k}"

    @staticmethod
    def std_name(variant: str, k: int) -> str:
        return f"oneshot/{variant}/top{k}_std"

    @classmethod
    def from_context(cls, context: ProbeContext) -> OneShotProbe:
        return cls(context.output_variants, context.episodes, context.shots, context.seed)

    def __init__(self, variants: Sequence[str], episodes: int = 10, shots: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.variants = tuple(variants)
        self.metric = OneShotAccuracy(self.variants, episodes=episodes, shots=shots, seed=seed, top_k=TOP_K)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(decomposition[FULL_OUTPUT], decomposition, labels, indices)

    def compute(self) -> dict[str, float]:
        computed = self.metric.compute()
        results = {
            self.CLASSES: float(computed["classes"]),
            self.SKIPPED_CLASSES: float(computed["skipped_classes"]),
            self.EPISODES: float(self.metric.episodes),
        }
        for variant in self.variants:
            for k in TOP_K:
                results[self.result_name(variant, k)] = computed[f"{variant}/top{k}"].item()
                results[self.std_name(variant, k)] = computed[f"{variant}/top{k}_std"].item()
        return results

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return ((cls.result_name("output/patch", 5), "one-shot top-5 accuracy of the patch-only output"),)

    @classmethod
    def run_headlines(cls, run: RunView) -> tuple[Headline, ...]:
        """Top-5 as the paper reports it, or top-1 where 5 classes or fewer make top-5 always 1."""
        k = top_k(int(run.results.get(cls.CLASSES, 0)))
        return ((cls.result_name("output/patch", k), f"one-shot top-{k} accuracy of the patch-only output"),)

    @classmethod
    def names_at(cls, k: int) -> tuple[NameOf, NameOf]:
        """A variant's top-k result name and that of its std over episodes."""
        return (lambda variant: cls.result_name(variant, k)), (lambda variant: cls.std_name(variant, k))

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Fig 3b: one-shot accuracy of each variant against centroids of the full output."""
        classes = int(run.results.get(cls.CLASSES, 0))
        k = top_k(classes)
        title = f"One-shot top-{k} accuracy, {classes} classes (mean ± std over episodes) (Fig 3b)"
        return named("oneshot.png", accuracy_bars(run, cls.names_at(k), k, classes, title))

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Fig 3b across models (top-5, or top-1 when a run has 5 classes or fewer)."""
        classes = [int(c.run.results.get(cls.CLASSES, 0)) for c in compared]
        title = "One-shot top-{k} accuracy per model (mean ± std over episodes) (Fig 3b)"
        return named("compare_oneshot.png", accuracy_sweep(compared, cls.names_at, classes, title))
