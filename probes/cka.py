"""Linear CKA (Kornblith et al., 2019) streamed over batches from fixed-size float64 sums."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics import Metric


def _linear_cka_update(features_x: Tensor, features_y: Tensor) -> tuple[Tensor, ...]:
    """Per-batch sufficient statistics: n, sum x, sum y, X'X, Y'Y, X'Y (float64)."""
    if features_x.ndim != 2 or features_y.ndim != 2:
        raise ValueError(
            f"features must be (samples, dims), got {tuple(features_x.shape)} and {tuple(features_y.shape)}"
        )
    if features_x.shape[0] != features_y.shape[0]:
        raise ValueError(f"x has {features_x.shape[0]} samples but y has {features_y.shape[0]}")
    x, y = features_x.double(), features_y.double()
    return (
        torch.tensor(x.shape[0], dtype=torch.float64, device=x.device),
        x.sum(dim=0),
        y.sum(dim=0),
        x.T @ x,
        y.T @ y,
        x.T @ y,
    )


def _linear_cka_compute(
    n: Tensor, sum_x: Tensor, sum_y: Tensor, xx: Tensor, yy: Tensor, xy: Tensor
) -> Tensor:
    """CKA = ||Xc'Yc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F) with Xc, Yc centred over samples.

    Returns NaN, with a warning, when it is undefined (fewer than 2 samples, constant features).
    """
    if n < 2:
        warnings.warn(f"linear CKA needs at least 2 samples, got {int(n)}; returning NaN", stacklevel=3)
        return torch.tensor(float("nan"), dtype=torch.float64)
    cross = xy - torch.outer(sum_x, sum_y) / n
    self_x = xx - torch.outer(sum_x, sum_x) / n
    self_y = yy - torch.outer(sum_y, sum_y) / n
    denominator = torch.linalg.matrix_norm(self_x) * torch.linalg.matrix_norm(self_y)
    if denominator <= 0:
        warnings.warn("linear CKA is undefined for constant features; returning NaN", stacklevel=3)
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (cross.square().sum() / denominator).cpu()


class LinearCKA(Metric):
    """Linear CKA between two feature sets, exact over all samples seen, in O(dims^2) memory.

    `update(features_x, features_y)` takes (samples, dims_x) and (samples, dims_y) with rows
    paired; `compute()` returns the CKA of everything seen (float64 scalar, in [0, 1]).

    Args:
        dims_x: feature size of x.
        dims_y: feature size of y (defaults to dims_x).

    >>> metric = LinearCKA(dims_x=2)
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 2.0]])
    >>> metric.update(x[:2], 2 * x[:2] + 1)
    >>> metric.update(x[2:], 2 * x[2:] + 1)
    >>> round(metric.compute().item(), 6)  # invariant to scaling and shifting
    1.0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    sum_x: Tensor
    sum_y: Tensor
    xx: Tensor
    yy: Tensor
    xy: Tensor

    def __init__(self, dims_x: int, dims_y: int | None = None) -> None:
        super().__init__()
        dims_y = dims_x if dims_y is None else dims_y
        if dims_x < 1 or dims_y < 1:
            raise ValueError(f"feature sizes must be positive, got {dims_x} and {dims_y}")
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        self.add_state("n", zeros(()), dist_reduce_fx="sum")
        self.add_state("sum_x", zeros(dims_x), dist_reduce_fx="sum")
        self.add_state("sum_y", zeros(dims_y), dist_reduce_fx="sum")
        self.add_state("xx", zeros(dims_x, dims_x), dist_reduce_fx="sum")
        self.add_state("yy", zeros(dims_y, dims_y), dist_reduce_fx="sum")
        self.add_state("xy", zeros(dims_x, dims_y), dist_reduce_fx="sum")

    def update(self, features_x: Tensor, features_y: Tensor) -> None:
        if features_x.shape[-1] != self.sum_x.shape[0] or features_y.shape[-1] != self.sum_y.shape[0]:
            raise ValueError(
                f"expected feature sizes {self.sum_x.shape[0]} and {self.sum_y.shape[0]}, "
                f"got {features_x.shape[-1]} and {features_y.shape[-1]}"
            )
        n, sum_x, sum_y, xx, yy, xy = _linear_cka_update(features_x, features_y)
        self.n += n
        self.sum_x += sum_x
        self.sum_y += sum_y
        self.xx += xx
        self.yy += yy
        self.xy += xy

    def compute(self) -> Tensor:
        return _linear_cka_compute(self.n, self.sum_x, self.sum_y, self.xx, self.yy, self.xy)
