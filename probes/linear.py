"""Linear probe (the paper's card): a classifier on the full output, tested on every variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from harness.heads import HeadMismatchError, LinearHead, joined_input
from probes.base import FULL_OUTPUT, Probe, ProbeContext
from probes.metrics.held_input import HeldInputAccuracy
from probes.metrics.ridge import RidgeAccuracy
from probes.metrics.topk import TopKAccuracy
from probes.plotting import NameOf, accuracy_bars, accuracy_sweep, named, top_k
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_K = (1, 5)
CLS_ONLY = "_clsonly"
"""The reading of `output/full` by a released DINOv2 head with the patch mean held at its mean over
the data (`linear/output/full_clsonly/top{k}`)."""


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
            whose = "the DINOv2 head" if head.released else "the model's own classifier"
            raise HeadMismatchError(
                f"{whose} has {head.weight.shape[0]} classes, the data {len(context.class_names)}: its "
                "accuracy needs the data's labels in its classes (ImageNet-1k's 1000 as --data imagenet "
                "numbers them)"
            )
        return LinearHeadProbe(head, context.output_variants, context.info.hidden_size)

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
    """A head applied to every variant (all variants in one product): one trained by train_probe.py
    or the model's own reads the variant; one released with DINOv2 reads DINOv2's linear input
    (`_LinearClassifierWrapper`), the final-normed [CLS] rows of its last blocks (the last one the
    variant, the earlier ones the image's) joined with the image's final-normed patch mean. With such
    a head, `output/full_clsonly` reads `output/full` with the patch mean held at its mean over the
    data: how much of the head's accuracy comes through [CLS].

    Args:
        head: the head.
        variants: the `output/...` variants it reads.
        hidden_size: the backbone's width (where the head is a released DINOv2 head).
    """

    def __init__(self, head: LinearHead, variants: Sequence[str], hidden_size: int = 0) -> None:
        super().__init__()
        self.variants = tuple(variants)
        self.classifier = head.classifier()
        self.blocks = head.blocks(hidden_size)
        num_classes = head.weight.shape[0]
        top_k = tuple(min(k, num_classes) for k in TOP_K)
        self.metric = TopKAccuracy(self.variants, top_k)
        self.held = (
            HeldInputAccuracy(head.weight[:, -hidden_size:], top_k)
            if self.blocks and FULL_OUTPUT in self.variants
            else None
        )

    def head_input(self, decomposition: Mapping[str, Tensor], variant: str) -> Tensor:
        """What the head reads for `variant` (batch, width): the variant itself, or DINOv2's linear
        input with the variant as the last block's [CLS] row."""
        if not self.blocks:
            return decomposition[variant]
        return joined_input(decomposition, decomposition[variant], self.blocks)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        dtype = self.classifier.weight.dtype
        inputs = torch.stack([self.head_input(decomposition, variant) for variant in self.variants]).to(dtype)
        self.metric.update(self.classifier(inputs), labels)
        if self.held is not None:
            full = inputs[self.variants.index(FULL_OUTPUT)]
            width = self.held.held_weight.shape[1]
            partial = nn.functional.linear(
                full[:, :-width], self.classifier.weight[:, :-width], self.classifier.bias
            )
            self.held.update(partial, full[:, -width:], labels)

    def compute(self) -> dict[str, float]:
        computed = list(self.metric.compute().values())  # variants x ks, in that order
        names = [self.result_name(variant, k) for variant in self.variants for k in TOP_K]
        results = {name: value.item() for name, value in zip(names, computed, strict=True)}
        if self.held is not None:
            held = list(self.held.compute().values())
            names = [self.result_name(FULL_OUTPUT + CLS_ONLY, k) for k in TOP_K]
            results |= {name: value.item() for name, value in zip(names, held, strict=True)}
        return results
