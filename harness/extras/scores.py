"""Class scores of pooled outputs, as the extras that score outputs read them (deletion passes,
attribution maps): a linear head's logits, or the log of a k-NN bank's vote shares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

ClassScores = Callable[[Tensor], Tensor]
"""Class scores (n, classes) of pooled outputs (n, width), differentiable: a linear head's logits, or
the log of a k-NN bank's vote shares; their softmax is the probability of each class."""


def class_scores_of(class_scores: ClassScores, pooled: Tensor) -> Tensor:
    """`class_scores` of pooled outputs in float32, outside any autocast (a k-NN vote's exp(s / 0.07)
    or a softmax in bf16 would round the probabilities the curves follow)."""
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        return class_scores(pooled.float()).float()


def explained_classes(class_scores: ClassScores | None, pooled: Tensor) -> Tensor | None:
    """The class each clean output's scores rank first (batch,), or None without class scores."""
    if class_scores is None:
        return None
    with torch.no_grad():
        return class_scores_of(class_scores, pooled.detach()).argmax(dim=-1)


def class_measures(class_scores: ClassScores, outputs: Tensor, explained: Tensor) -> tuple[Tensor, Tensor]:
    """Per output (n,): the probability of its `explained` class, and the class its scores rank first."""
    scores = class_scores_of(class_scores, outputs)
    return scores.softmax(dim=-1).gather(1, explained.unsqueeze(1)).squeeze(1), scores.argmax(dim=-1)


@runtime_checkable
class ImageBoundScores(Protocol):
    """Class scores that read, beside the pooled output, inputs of each image of the call (a released
    DINOv2 head: the earlier blocks' [CLS] and the patch mean): `bind` gives the call's `ClassScores`,
    whose rows are the call's images tiled (k x batch rows, image i at rows i, batch + i, ...: how the
    perturbation and integration passes stack them)."""

    def bind(self, decomposition: Mapping[str, Tensor]) -> ClassScores: ...


def bound(class_scores: ClassScores | None, decomposition: Mapping[str, Tensor]) -> ClassScores | None:
    """`class_scores` for the call whose clean decomposition is `decomposition` (bound to its images
    where they read more than the pooled output: `ImageBoundScores`)."""
    if isinstance(class_scores, ImageBoundScores):
        return class_scores.bind(decomposition)
    return class_scores
