"""Probes that need labels: one-shot (Fig 3b), ridge classifier, and a trained linear head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from probes.base import Probe, module_key
from probes.linear_head import LinearHead
from probes.oneshot import OneShotAccuracy
from probes.ridge import RidgeAccuracy

TOP_K = (1, 5)
REFERENCE = "output/full"


class OneShotProbe(Probe):
    """Results: `oneshot/{variant}/top{k}` and `.../top{k}_std` over episodes, `oneshot/classes`,
    `oneshot/skipped_classes` (too few images), `oneshot/episodes`."""

    name = "oneshot"
    needs_labels = True

    def __init__(self, variants: Sequence[str], episodes: int = 10, shots: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.metric = OneShotAccuracy(variants, episodes=episodes, shots=shots, seed=seed, top_k=TOP_K)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(decomposition[REFERENCE], decomposition, labels, indices)

    def compute(self) -> dict[str, float]:
        computed = self.metric.compute()
        results = {
            "oneshot/classes": float(cast(int, computed["classes"])),
            "oneshot/skipped_classes": float(cast(int, computed["skipped_classes"])),
            "oneshot/episodes": float(self.metric.episodes),
        }
        for variant in self.metric.variants:
            for k, (mean, std) in cast(dict[int, tuple[Tensor, Tensor]], computed[variant]).items():
                results[f"oneshot/{variant}/top{k}"] = mean.item()
                results[f"oneshot/{variant}/top{k}_std"] = std.item()
        return results


class RidgeProbe(Probe):
    """A ridge classifier fit on `output/full` of a seeded half of the images, scored on the rest.

    Results: `linear/{variant}/top{k}`, `linear/train_images`, `linear/test_images`, `linear/alpha`.
    """

    name = "linear"
    needs_labels = True

    def __init__(self, variants: Sequence[str], dims: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        self.metric = RidgeAccuracy(variants, dims, num_classes, seed=seed, top_k=TOP_K)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(decomposition[REFERENCE], decomposition, labels, indices)

    def compute(self) -> dict[str, float]:
        computed = self.metric.compute()
        results = {
            f"linear/{key}": float(cast(float, computed[key]))
            for key in ("train_images", "test_images", "alpha")
        }
        for variant in self.metric.variants:
            for k, accuracy in cast(dict[int, Tensor], computed[variant]).items():
                results[f"linear/{variant}/top{k}"] = accuracy.item()
        return results


class LinearHeadProbe(Probe):
    """A head trained by train_probe.py applied to every variant. Results: `linear/{variant}/top{k}`."""

    name = "linear"
    needs_labels = True

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
                module_key(f"{variant}/top{k}"): MulticlassAccuracy(
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
                cast(MulticlassAccuracy, self.metrics[module_key(f"{variant}/top{k}")]).update(logits, labels)

    def compute(self) -> dict[str, float]:
        return {
            f"linear/{variant}/top{k}": cast(
                MulticlassAccuracy, self.metrics[module_key(f"{variant}/top{k}")]
            )
            .compute()
            .item()
            for variant in self.variants
            for k in TOP_K
        }
