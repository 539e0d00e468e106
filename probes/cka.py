"""Linear CKA (Kornblith et al., 2019) streamed over batches from fixed-size float64 sums.

With X, Y the (n, d) feature matrices and Xc, Yc their column-centred versions,

    CKA = ||Xc'Yc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F),

and every term follows from n, the column sums, X'X, Y'Y and X'Y. The debiased estimator
(Song et al. 2012's unbiased HSIC, as in Kornblith et al.'s code) also needs the per-sample
squared norms, which enter only through a few more sums (see `_StreamingSums`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric


@dataclass(frozen=True)
class _StreamingSums:
    """Sufficient statistics of paired features x_i, y_i (float64), all summed over samples i.

    Besides n, sum x, sum y, X'X, Y'Y and X'Y: with a_i = ||x_i||^2 and b_i = ||y_i||^2,
    sum a b, sum a^2, sum b^2, sum a x, sum a y, sum b x, sum b y (for the debiased estimator).
    """

    n: Tensor
    sum_x: Tensor
    sum_y: Tensor
    xx: Tensor
    yy: Tensor
    xy: Tensor
    norms_xy: Tensor
    norms_xx: Tensor
    norms_yy: Tensor
    norm_x_times_x: Tensor
    norm_x_times_y: Tensor
    norm_y_times_x: Tensor
    norm_y_times_y: Tensor


_STATES = tuple(_StreamingSums.__dataclass_fields__)


def _linear_cka_update(features_x: Tensor, features_y: Tensor) -> _StreamingSums:
    """Per-batch sufficient statistics of (samples, dims_x) and (samples, dims_y) features."""
    if features_x.ndim != 2 or features_y.ndim != 2:
        raise ValueError(
            f"features must be (samples, dims), got {tuple(features_x.shape)} and {tuple(features_y.shape)}"
        )
    if features_x.shape[0] != features_y.shape[0]:
        raise ValueError(f"x has {features_x.shape[0]} samples but y has {features_y.shape[0]}")
    x, y = features_x.double(), features_y.double()
    norm_x, norm_y = x.square().sum(dim=1), y.square().sum(dim=1)  # samples
    return _StreamingSums(
        n=torch.tensor(x.shape[0], dtype=torch.float64, device=x.device),
        sum_x=x.sum(dim=0),
        sum_y=y.sum(dim=0),
        xx=x.T @ x,
        yy=y.T @ y,
        xy=x.T @ y,
        norms_xy=norm_x @ norm_y,
        norms_xx=norm_x @ norm_x,
        norms_yy=norm_y @ norm_y,
        norm_x_times_x=norm_x @ x,
        norm_x_times_y=norm_x @ y,
        norm_y_times_x=norm_y @ x,
        norm_y_times_y=norm_y @ y,
    )


def _centred_norm_products(
    n: Tensor, norms: Tensor, norm_a_times_b: Tensor, norm_b_times_a: Tensor, ab: Tensor,
    sum_a: Tensor, sum_b: Tensor, trace_a: Tensor, trace_b: Tensor,
) -> Tensor:  # fmt: skip
    """sum_i ||a_i - mean a||^2 ||b_i - mean b||^2 from uncentred sums.

    ||a_i - m_a||^2 = ||a_i||^2 - 2 a_i.m_a + ||m_a||^2; expanding the product of two such
    terms and summing over i leaves only the streamed sums.
    """
    mean_a, mean_b = sum_a / n, sum_b / n
    sq_mean_a, sq_mean_b = mean_a @ mean_a, mean_b @ mean_b
    return (
        norms
        - 2 * (norm_a_times_b @ mean_b)
        - 2 * (norm_b_times_a @ mean_a)
        + 4 * (mean_a @ ab @ mean_b)
        + sq_mean_b * (trace_a - 2 * (sum_a @ mean_a))
        + sq_mean_a * (trace_b - 2 * (sum_b @ mean_b))
        + n * sq_mean_a * sq_mean_b
    )


def _debias(
    squared_hsic: Tensor, norm_products: Tensor, trace_a: Tensor, trace_b: Tensor, n: Tensor
) -> Tensor:
    """Kornblith et al.'s `_debiased_dot_product_similarity_helper` (before its n(n-3) factor)."""
    return squared_hsic - n / (n - 2) * norm_products + trace_a * trace_b / ((n - 1) * (n - 2))


def _linear_cka_compute(sums: _StreamingSums, debiased: bool) -> Tensor:
    """CKA of all samples summed into `sums`; NaN with a warning where it is undefined."""
    n = sums.n
    minimum = 4 if debiased else 2
    if n < minimum:
        warnings.warn(
            f"linear CKA needs at least {minimum} samples, got {int(n)}; returning NaN", stacklevel=3
        )
        return torch.tensor(float("nan"), dtype=torch.float64)
    cross = sums.xy - torch.outer(sums.sum_x, sums.sum_y) / n  # Xc'Yc
    self_x = sums.xx - torch.outer(sums.sum_x, sums.sum_x) / n
    self_y = sums.yy - torch.outer(sums.sum_y, sums.sum_y) / n
    similarity = cross.square().sum()
    normaliser_x, normaliser_y = self_x.square().sum(), self_y.square().sum()
    if debiased:
        trace_x, trace_y = torch.trace(self_x), torch.trace(self_y)
        raw_trace_x, raw_trace_y = torch.trace(sums.xx), torch.trace(sums.yy)
        products_xy = _centred_norm_products(
            n, sums.norms_xy, sums.norm_x_times_y, sums.norm_y_times_x, sums.xy,
            sums.sum_x, sums.sum_y, raw_trace_x, raw_trace_y,
        )  # fmt: skip
        products_xx = _centred_norm_products(
            n, sums.norms_xx, sums.norm_x_times_x, sums.norm_x_times_x, sums.xx,
            sums.sum_x, sums.sum_x, raw_trace_x, raw_trace_x,
        )  # fmt: skip
        products_yy = _centred_norm_products(
            n, sums.norms_yy, sums.norm_y_times_y, sums.norm_y_times_y, sums.yy,
            sums.sum_y, sums.sum_y, raw_trace_y, raw_trace_y,
        )  # fmt: skip
        similarity = _debias(similarity, products_xy, trace_x, trace_y, n)
        normaliser_x = _debias(normaliser_x, products_xx, trace_x, trace_x, n)
        normaliser_y = _debias(normaliser_y, products_yy, trace_y, trace_y, n)
    denominator = torch.sqrt(normaliser_x.clamp_min(0) * normaliser_y.clamp_min(0))
    if denominator <= 0:
        warnings.warn("linear CKA is undefined for constant features; returning NaN", stacklevel=3)
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (similarity / denominator).cpu()


class LinearCKA(Metric):
    """Linear CKA between two feature sets, exact over all samples seen, in O(dims^2) memory.

    `update(features_x, features_y)` takes (samples, dims_x) and (samples, dims_y) with rows
    paired; `compute()` returns the CKA of everything seen (float64 scalar), equal to CKA
    computed on all samples at once. Undefined cases (too few samples, constant features)
    give NaN with a warning.

    Args:
        dims_x: feature size of x.
        dims_y: feature size of y (defaults to dims_x).
        debiased: the debiased estimator (unbiased HSIC; needs at least 4 samples).

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

    def __init__(self, dims_x: int, dims_y: int | None = None, debiased: bool = False) -> None:
        super().__init__()
        dims_y = dims_x if dims_y is None else dims_y
        if dims_x < 1 or dims_y < 1:
            raise ValueError(f"feature sizes must be positive, got {dims_x} and {dims_y}")
        self.debiased = debiased
        shapes: dict[str, tuple[int, ...]] = {
            "n": (), "sum_x": (dims_x,), "sum_y": (dims_y,),
            "xx": (dims_x, dims_x), "yy": (dims_y, dims_y), "xy": (dims_x, dims_y),
            "norms_xy": (), "norms_xx": (), "norms_yy": (),
            "norm_x_times_x": (dims_x,), "norm_x_times_y": (dims_y,),
            "norm_y_times_x": (dims_x,), "norm_y_times_y": (dims_y,),
        }  # fmt: skip
        for name in _STATES:
            self.add_state(name, torch.zeros(shapes[name], dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features_x: Tensor, features_y: Tensor) -> None:
        if features_x.shape[-1] != self.sum_x.shape[0] or features_y.shape[-1] != self.sum_y.shape[0]:
            raise ValueError(
                f"expected feature sizes {self.sum_x.shape[0]} and {self.sum_y.shape[0]}, "
                f"got {features_x.shape[-1]} and {features_y.shape[-1]}"
            )
        batch = _linear_cka_update(features_x, features_y)
        for name in _STATES:
            getattr(self, name).add_(getattr(batch, name))

    def compute(self) -> Tensor:
        sums = _StreamingSums(**{name: getattr(self, name) for name in _STATES})
        return _linear_cka_compute(sums, self.debiased)
