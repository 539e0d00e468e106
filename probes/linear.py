"""Linear probe (the paper's card): a classifier on the full output, tested on every variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, cast

from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from harness.heads import LinearHead
from probes.base import FULL_OUTPUT, Probe, ProbeContext, module_key
from probes.metrics.ridge import RidgeAccuracy

TOP_K = (1, 5)


class LinearProbe(Probe):
    """The `linear` probe: a head from train_probe.py when the run has one (`LinearHeadProbe`), else a
    ridge classifier fit in the same pass (`RidgeProbe`).

    Results: `linear/{readout}/{variant}/top{k}`; the ridge classifier adds `linear/train_images`,
    `linear/test_images` and `linear/alpha`.
    """

    name = "linear"
    needs_labels = True
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
        if context.head is None:
            return RidgeProbe(
                context.output_variants, context.info.hidden_size, len(context.class_names), context.seed
            )
        head = LinearHead.load(context.head)
        head.check_compatible(
            context.info.identity, context.class_names, context.resolution, context.info.pos_interpolation
        )
        return LinearHeadProbe(head, context.output_variants)


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
    """A head trained by train_probe.py applied to every variant."""

    def __init__(self, head: LinearHead, variants: Sequence[str]) -> None:
        super().__init__()
        self.variants = tuple(variants)
        self.classifier = nn.Linear(head.weight.shape[1], head.weight.shape[0])
        self.classifier.weight.data.copy_(head.weight)
        self.classifier.bias.data.copy_(head.bias)
        self.classifier.requires_grad_(False)
        num_classes = head.weight.shape[0]
        self.metrics = nn.ModuleDict(
            {
                module_key(self.result_name(variant, k)): MulticlassAccuracy(
                    num_classes, top_k=min(k, num_classes), average="micro"
                )
                for variant in self.variants
                for k in TOP_K
            }
        )

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        for variant in self.variants:
            logits = self.classifier(decomposition[variant].to(self.classifier.weight.dtype))
            for k in TOP_K:
                self._metric(variant, k).update(logits, labels)

    def compute(self) -> dict[str, float]:
        return {
            self.result_name(variant, k): self._metric(variant, k).compute().item()
            for variant in self.variants
            for k in TOP_K
        }

    def _metric(self, variant: str, k: int) -> MulticlassAccuracy:
        return cast(MulticlassAccuracy, self.metrics[module_key(self.result_name(variant, k))])
