"""Closed-form ridge classifier fit in one streaming pass: a linear-probe number without training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from common.errors import InsufficientDataError
from common.hashing import uniform_hash
from probes.metrics.oneshot import true_class_rank
from probes.metrics.rows import add_row_states, append_rows, gathered_rows, is_empty


def is_train_image(indices: Tensor, seed: int, train_fraction: float) -> Tensor:
    """Whether each dataset index belongs to the training part: a seeded hash of the index alone.

    (`common.hashing.uniform_hash`: computed on the indices' device, nothing read back.)

    >>> is_train_image(torch.arange(6), seed=0, train_fraction=0.5).tolist()
    [False, False, False, True, True, True]
    """
    return uniform_hash(indices, seed) < train_fraction


def _ridge_update(
    features: Tensor, labels: Tensor, num_classes: int, weight: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Class counts, sum x, X'X and X'Y (one-hot Y) of the rows, each row weighted by `weight` (0 or
    1 selects rows without boolean indexing, whose size an accelerator would have to report), float64."""
    x = features.double()
    targets = (labels.unsqueeze(-1) == torch.arange(num_classes, device=labels.device)).double()
    weighted = x if weight is None else x * weight.unsqueeze(-1)
    weighted_targets = targets if weight is None else targets * weight.unsqueeze(-1)
    return weighted_targets.sum(dim=0), weighted.sum(dim=0), weighted.T @ x, weighted.T @ targets


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
    if not alpha > 0:  # features that never vary (an intervention can make them so): W = 0, the prior decides
        alpha = 1.0
    identity = torch.eye(xx.shape[0], dtype=xx.dtype, device=xx.device)
    weight = torch.linalg.solve(centred_xx + alpha * identity, centred_xy)
    return weight, mean_y - mean_x @ weight, alpha


def ridge_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    relative_alpha: float = 1e-2,
    top_k: Sequence[int] = (1, 5),
) -> dict[str, Tensor]:
    """Top-k accuracy on the test rows of a ridge classifier fit in closed form on the train rows.

    Returns:
        `top{k}` accuracies (float64 scalars) and the absolute `alpha` used.

    >>> x = torch.tensor([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
    >>> y = torch.tensor([0, 0, 1, 1])
    >>> ridge_accuracy(x, y, x, y, num_classes=2, top_k=(1,))["top1"].item()
    1.0
    """
    weight, bias, alpha = _ridge_solve(
        *_ridge_update(train_features, train_labels, num_classes), relative_alpha
    )
    rank = true_class_rank(test_features.double() @ weight + bias, test_labels)
    return {f"top{k}": (rank < k).double().mean().cpu() for k in top_k} | {
        "alpha": torch.tensor(alpha, dtype=torch.float64)
    }


class RidgeAccuracy(Metric):
    """Top-k accuracy of a ridge classifier fit on reference features of a seeded part of the samples.

    A sample is in the training part when `is_train_image(index, seed, train_fraction)`; its
    reference features enter fixed-size float64 sums (summed across ranks). Every sample's query
    features are kept as rows; `compute()` scores the other samples after the fit (choosing them
    per batch would need their number on the host). The sums assume no sample is
    fed twice (the harness's sampler guarantees it); scored samples are deduplicated by index.

    `update(reference, queries, labels, indices)` as `OneShotAccuracy`; `compute()` returns a
    dict of tensors: `q/top{k}` per query name q, `train_images`, `test_images` and `alpha`.

    Args:
        queries: names of the scored features.
        dims: feature size.
        num_classes: number of classes (labels in 0..num_classes-1).
        relative_alpha: ridge penalty relative to the mean feature variance.
        train_fraction: expected share of samples in the training part.
        seed: seed of the split.
        top_k: the accuracies reported.
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).
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
        queries: Sequence[str],
        dims: int,
        num_classes: int,
        relative_alpha: float = 1e-2,
        train_fraction: float = 0.5,
        seed: int = 0,
        top_k: Sequence[int] = (1, 5),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2 or dims < 1:
            raise ValueError(f"need at least 2 classes and 1 dim, got {num_classes} and {dims}")
        if not 0 < train_fraction < 1 or relative_alpha <= 0:
            raise ValueError(
                f"need 0 < train_fraction < 1 and alpha > 0, got {train_fraction}, {relative_alpha}"
            )
        self.queries = tuple(queries)
        self.num_classes, self.relative_alpha = num_classes, relative_alpha
        self.train_fraction, self.seed, self.top_k = train_fraction, seed, tuple(top_k)
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        self.add_state("class_counts", zeros(num_classes), dist_reduce_fx="sum")
        self.add_state("sum_x", zeros(dims), dist_reduce_fx="sum")
        self.add_state("xx", zeros(dims, dims), dist_reduce_fx="sum")
        self.add_state("xy", zeros(dims, num_classes), dist_reduce_fx="sum")
        add_row_states(self, ("index", "label", *self.queries))

    def update(
        self, reference: Tensor, queries: Mapping[str, Tensor], labels: Tensor, indices: Tensor
    ) -> None:
        # checked where it costs nothing; on an accelerator it would wait for the device every batch
        on_host = labels.device.type == "cpu" and labels.numel()
        if on_host and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}"
            )
        train = is_train_image(indices, self.seed, self.train_fraction)
        counts, sum_x, xx, xy = _ridge_update(reference, labels, self.num_classes, train.double())
        self.class_counts += counts
        self.sum_x += sum_x
        self.xx += xx
        self.xy += xy
        # every image's rows (the test part is chosen in compute: selecting it here needs its size)
        append_rows(self, {"index": indices.long(), "label": labels.long()})
        append_rows(self, {name: queries[name].float() for name in self.queries})

    def compute(self) -> dict[str, Tensor]:
        train_images = int(self.class_counts.sum())
        rows = gathered_rows(self, ("index", "label", *self.queries)) if not is_empty(self.index) else {}
        test = ~is_train_image(rows["index"], self.seed, self.train_fraction) if rows else None
        if train_images < 2 or test is None or not bool(test.any()):
            raise InsufficientDataError(
                f"the ridge probe needs images in both parts; got {train_images} for training"
            )
        weight, bias, alpha = _ridge_solve(
            self.class_counts, self.sum_x, self.xx, self.xy, self.relative_alpha
        )
        labels = rows["label"][test]
        results = {
            "train_images": torch.tensor(train_images),
            "test_images": torch.tensor(len(labels)),
            "alpha": torch.tensor(alpha, dtype=torch.float64),
        }
        weight, bias = weight.to(labels.device), bias.to(labels.device)  # rows may sit on the CPU
        for name in self.queries:
            rank = true_class_rank(rows[name][test].double() @ weight + bias, labels)
            results |= {f"{name}/top{k}": (rank < k).double().mean().cpu() for k in self.top_k}
        return results
