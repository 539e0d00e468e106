"""Closed-form ridge classifier fit in the evaluation pass: a linear-probe number from one command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from probes.features import add_row_states, append_rows, gathered_rows, is_empty
from probes.oneshot import true_class_rank


def is_train_image(indices: Tensor, seed: int, train_fraction: float) -> Tensor:
    """Whether each dataset index belongs to the training part: a seeded hash of the index alone.

    >>> is_train_image(torch.arange(6), seed=0, train_fraction=0.5).tolist()
    [False, False, False, True, True, True]
    """
    with np.errstate(over="ignore"):  # splitmix64: a well-mixed 64-bit hash, wrapping on purpose
        state = indices.detach().cpu().numpy().astype(np.uint64) + np.uint64(seed) * np.uint64(
            0x9E3779B97F4A7C15
        )
        state = state + np.uint64(0x9E3779B97F4A7C15)
        state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        state = state ^ (state >> np.uint64(31))
    uniform = (state >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return torch.from_numpy(uniform < train_fraction).to(indices.device)


def _ridge_update(
    features: Tensor, labels: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Class counts, sum x, X'X and X'Y (one-hot Y) of training rows, float64."""
    x = features.double()
    targets = torch.nn.functional.one_hot(labels, num_classes).double()
    return targets.sum(dim=0), x.sum(dim=0), x.T @ x, x.T @ targets


def _ridge_solve(
    class_counts: Tensor, sum_x: Tensor, xx: Tensor, xy: Tensor, relative_alpha: float
) -> tuple[Tensor, Tensor, float]:
    """Ridge regression on centred features with an intercept, as scikit-learn's RidgeClassifier.

    alpha = relative_alpha * trace(Xc'Xc) / dims, so the penalty follows the features' scale;
    (Xc'Xc + alpha I) W = Xc'Yc and b = mean y - mean x W. (scikit-learn's -1/+1 targets give
    2W and 2b - 1: the same ranking of classes.)

    Returns:
        weight (dims, classes), bias (classes,), and the absolute alpha used.
    """
    n = class_counts.sum()
    mean_x, mean_y = sum_x / n, class_counts / n
    centred_xx = xx - n * torch.outer(mean_x, mean_x)
    centred_xy = xy - n * torch.outer(mean_x, mean_y)
    alpha = relative_alpha * float(torch.trace(centred_xx)) / xx.shape[0]
    identity = torch.eye(xx.shape[0], dtype=xx.dtype, device=xx.device)
    weight = torch.linalg.solve(centred_xx + alpha * identity, centred_xy)
    return weight, mean_y - mean_x @ weight, alpha


class RidgeAccuracy(Metric):
    """Top-k accuracy of a ridge classifier fit on the full output of a seeded part of the images.

    An image is in the training part when `is_train_image(index, seed, train_fraction)`; its
    full-output features enter fixed-size float64 sums (summed across ranks). The other images
    are kept per variant and scored, after the fit, in `compute()`. The sums assume no image is
    fed twice (the harness's sampler guarantees it); scored images are deduplicated by index.

    `update(full, queries, labels, indices)` as `OneShotAccuracy`; `compute()` returns
    `{variant: {k: accuracy}}`, plus `train_images`, `test_images` and `alpha`.

    Args:
        variants: names of the scored variants.
        dims: feature size.
        num_classes: number of classes (labels in 0..num_classes-1).
        relative_alpha: ridge penalty relative to the mean feature variance.
        train_fraction: expected share of images in the training part.
        seed: seed of the split.
        top_k: the accuracies reported.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    class_counts: Tensor
    sum_x: Tensor
    xx: Tensor
    xy: Tensor
    index: list[Tensor]
    label: list[Tensor]

    def __init__(
        self,
        variants: Sequence[str],
        dims: int,
        num_classes: int,
        relative_alpha: float = 1e-2,
        train_fraction: float = 0.5,
        seed: int = 0,
        top_k: Sequence[int] = (1, 5),
    ) -> None:
        super().__init__()
        if num_classes < 2 or dims < 1:
            raise ValueError(f"need at least 2 classes and 1 dim, got {num_classes} and {dims}")
        if not 0 < train_fraction < 1 or relative_alpha <= 0:
            raise ValueError(
                f"need 0 < train_fraction < 1 and alpha > 0, got {train_fraction}, {relative_alpha}"
            )
        self.variants = tuple(variants)
        self.num_classes, self.relative_alpha = num_classes, relative_alpha
        self.train_fraction, self.seed, self.top_k = train_fraction, seed, tuple(top_k)
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        self.add_state("class_counts", zeros(num_classes), dist_reduce_fx="sum")
        self.add_state("sum_x", zeros(dims), dist_reduce_fx="sum")
        self.add_state("xx", zeros(dims, dims), dist_reduce_fx="sum")
        self.add_state("xy", zeros(dims, num_classes), dist_reduce_fx="sum")
        add_row_states(self, ("index", "label", *self.variants))

    def update(self, full: Tensor, queries: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}"
            )
        train = is_train_image(indices, self.seed, self.train_fraction)
        counts, sum_x, xx, xy = _ridge_update(full[train], labels[train], self.num_classes)
        self.class_counts += counts
        self.sum_x += sum_x
        self.xx += xx
        self.xy += xy
        append_rows(self, {"index": indices[~train].long(), "label": labels[~train].long()})
        append_rows(self, {variant: queries[variant][~train].float() for variant in self.variants})

    def compute(self) -> dict[str, object]:
        train_images = int(self.class_counts.sum())
        if train_images < 2 or is_empty(self.index):
            raise ValueError(f"the ridge probe needs images in both parts; got {train_images} for training")
        weight, bias, alpha = _ridge_solve(
            self.class_counts, self.sum_x, self.xx, self.xy, self.relative_alpha
        )
        rows = gathered_rows(self, ("label", *self.variants))
        labels = rows["label"]
        results: dict[str, object] = {
            "train_images": train_images,
            "test_images": len(labels),
            "alpha": alpha,
        }
        for variant in self.variants:
            rank = true_class_rank(rows[variant].double() @ weight + bias, labels)
            results[variant] = {k: (rank < k).double().mean().cpu() for k in self.top_k}
        return results
