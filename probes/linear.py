"""Linear probe (the paper's card): a classifier on the full output, tested on every variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from harness.heads import HeadMismatchError, LinearHead
from probes.base import FULL_OUTPUT, Probe, ProbeContext
from probes.metrics.ridge import RidgeAccuracy
from probes.metrics.topk import TopKAccuracy
from probes.plotting import NameOf, accuracy_bars, accuracy_sweep, named, top_k
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_K = (1, 5)


class LinearProbe(Probe):
    """The `linear` probe: a head from train_probe.py when the run has one (`LinearHeadProbe`), else a
    ridge classifier fit in the same pass (`RidgeProbe`).

    Results: `linear/{readout}/{variant}/top{k}`; the ridge classifier adds `linear/train_images`,
    `linear/test_images` and `linear/alpha`.
    """

    name = "linear"
    position = 90
    needs_labels = True
    under_interventions = "outputs"
    reads_head = True
    TOP_K: ClassVar[tuple[int, ...]] = TOP_K
    TRAIN_IMAGES: ClassVar[str] = "linear/train_images"
    TEST_IMAGES: ClassVar[str] = "linear/test_images"
    ALPHA: ClassVar[str] = "linear/alpha"

    @staticmethod
    def result_name(variant: str, k: int) -> str:
        """`linear/{readout}/{variant}/top{k}`."""
        return f"linear/{variant}/top{k}"

    @classmethod
    def from_context(cls, context: ProbeContext) -> LinearProbe:
        head = context.linear_head()
        if head is None:
            return RidgeProbe(
                context.output_variants, context.info.hidden_size, len(context.class_names), context.seed
            )
        if not context.labels_index(head):
            raise HeadMismatchError(
                f"the model's own classifier has {head.weight.shape[0]} classes, the data "
                f"{len(context.class_names)}: its accuracy needs the data's labels in its classes "
                "(ImageNet-1k's 1000 as --data imagenet numbers them)"
            )
        return LinearHeadProbe(head, context.output_variants)

    @classmethod
    def names_at(cls, k: int) -> tuple[NameOf, None]:
        """A variant's top-k result name (no std: one classifier)."""
        return (lambda variant: cls.result_name(variant, k)), None

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """The paper's card: a linear classifier fit on the full output, tested on each variant."""
        classes, k = run.num_classes, top_k(run.num_classes)
        title = f"Linear classifier fit on output/full, top-{k} accuracy of each variant, {classes} classes"
        return named("linear.png", accuracy_bars(run, cls.names_at(k), k, classes, title))

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """The paper's card across models: a linear classifier fit on the full output, tested on variants."""
        classes = [c.run.num_classes for c in compared]
        title = "Linear classifier fit on output/full: top-{k} accuracy of each variant per model"
        return named("compare_linear.png", accuracy_sweep(compared, cls.names_at, classes, title))


class RidgeProbe(LinearProbe):
    """A ridge classifier fit on `output/full` of a seeded half of the images, scored on the rest."""

    def __init__(self, variants: Sequence[str], dims: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        self.variants = tuple(variants)
        self.metric = RidgeAccuracy(self.variants, dims, num_classes, seed=seed, top_k=TOP_K)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(decomposition[FULL_OUTPUT], decomposition, labels, indices)

    def compute(self) -> dict[str, float]:
        computed = self.metric.compute()
        results = {
            self.TRAIN_IMAGES: float(computed["train_images"]),
            self.TEST_IMAGES: float(computed["test_images"]),
            self.ALPHA: float(computed["alpha"]),
        }
        for variant in self.variants:
            for k in TOP_K:
                results[self.result_name(variant, k)] = computed[f"{variant}/top{k}"].item()
        return results


class LinearHeadProbe(LinearProbe):
    """A head trained by train_probe.py applied to every variant (all variants in one product)."""

    def __init__(self, head: LinearHead, variants: Sequence[str]) -> None:
        super().__init__()
        self.variants = tuple(variants)
        self.classifier = head.classifier()
        num_classes = head.weight.shape[0]
        self.metric = TopKAccuracy(self.variants, tuple(min(k, num_classes) for k in TOP_K))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        dtype = self.classifier.weight.dtype
        features = torch.stack([decomposition[variant] for variant in self.variants]).to(dtype)
        self.metric.update(self.classifier(features), labels)

    def compute(self) -> dict[str, float]:
        computed = list(self.metric.compute().values())  # variants x ks, in that order
        names = [self.result_name(variant, k) for variant in self.variants for k in TOP_K]
        return {name: value.item() for name, value in zip(names, computed, strict=True)}
