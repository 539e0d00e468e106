"""Linear CKA (Kornblith et al., 2019) streamed over batches from fixed-size float64 sums.

With X, Y the (n, d) feature matrices and Xc, Yc their column-centred versions,

    CKA = ||Xc'Yc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F),

and the debiased estimator replaces each squared Frobenius norm by Song et al.'s unbiased HSIC,
which also needs the per-sample squared norms a_i = ||xc_i||^2, b_i = ||yc_i||^2 (as in
Kornblith et al.'s `_debiased_dot_product_similarity_helper`).

Every term follows from a few sums over samples (`Moments`). Features are summed relative to a
shift (each rank's first-batch mean), which keeps the centring well conditioned in float64 even
when the mean is large against the spread; `shift_moments` moves moments from one shift to
another exactly, so ranks with different shifts combine into the same numbers as one process.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, fields
from typing import Any, cast

import torch
from torch import Tensor
from torchmetrics import Metric


@dataclass(frozen=True)
class Moments:
    """Sums over samples of paired features x_i, y_i and their squared norms a_i, b_i (float64).

    n; sum x, sum y; X'X, Y'Y, X'Y; sum a b, sum a a, sum b b; sum a x, sum a y, sum b x, sum b y.
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


MOMENTS = tuple(field.name for field in fields(Moments))


def _shifted_cross(cross: Tensor, sum_a: Tensor, sum_b: Tensor, n: Tensor, da: Tensor, db: Tensor) -> Tensor:
    """sum (a_i + da)(b_i + db)' from sum a_i b_i'."""
    return cross + torch.outer(sum_a, db) + torch.outer(da, sum_b) + n * torch.outer(da, db)


def _shifted_norm_products(
    norms: Tensor, norm_a_times_b: Tensor, norm_b_times_a: Tensor, cross: Tensor,
    sum_a: Tensor, sum_b: Tensor, trace_a: Tensor, trace_b: Tensor, n: Tensor, da: Tensor, db: Tensor,
) -> Tensor:  # fmt: skip
    """sum ||a_i + da||^2 ||b_i + db||^2: expand ||a_i + da||^2 = ||a_i||^2 + 2 a_i.da + ||da||^2."""
    sq_a, sq_b = da @ da, db @ db
    return (
        norms
        + 2 * (norm_a_times_b @ db)
        + 2 * (norm_b_times_a @ da)
        + 4 * (da @ cross @ db)
        + sq_b * (trace_a + 2 * (sum_a @ da))
        + sq_a * (trace_b + 2 * (sum_b @ db))
        + n * sq_a * sq_b
    )


def _shifted_norm_times(
    norm_a_times_b: Tensor, cross: Tensor, sum_a: Tensor, sum_b: Tensor, trace_a: Tensor, n: Tensor,
    da: Tensor, db: Tensor,
) -> Tensor:  # fmt: skip
    """sum ||a_i + da||^2 (b_i + db) from sums of the unshifted a_i, b_i (cross = sum a_i b_i')."""
    sq_a = da @ da
    return (
        norm_a_times_b
        + trace_a * db
        + 2 * (cross.T @ da)
        + 2 * (sum_a @ da) * db
        + sq_a * sum_b
        + n * sq_a * db
    )


def shift_moments(m: Moments, dx: Tensor, dy: Tensor) -> Moments:
    """The moments of x_i + dx, y_i + dy, exactly, from those of x_i, y_i."""
    trace_x, trace_y = torch.trace(m.xx), torch.trace(m.yy)
    return Moments(
        n=m.n,
        sum_x=m.sum_x + m.n * dx,
        sum_y=m.sum_y + m.n * dy,
        xx=_shifted_cross(m.xx, m.sum_x, m.sum_x, m.n, dx, dx),
        yy=_shifted_cross(m.yy, m.sum_y, m.sum_y, m.n, dy, dy),
        xy=_shifted_cross(m.xy, m.sum_x, m.sum_y, m.n, dx, dy),
        norms_xy=_shifted_norm_products(
            m.norms_xy,
            m.norm_x_times_y,
            m.norm_y_times_x,
            m.xy,
            m.sum_x,
            m.sum_y,
            trace_x,
            trace_y,
            m.n,
            dx,
            dy,
        ),
        norms_xx=_shifted_norm_products(
            m.norms_xx,
            m.norm_x_times_x,
            m.norm_x_times_x,
            m.xx,
            m.sum_x,
            m.sum_x,
            trace_x,
            trace_x,
            m.n,
            dx,
            dx,
        ),
        norms_yy=_shifted_norm_products(
            m.norms_yy,
            m.norm_y_times_y,
            m.norm_y_times_y,
            m.yy,
            m.sum_y,
            m.sum_y,
            trace_y,
            trace_y,
            m.n,
            dy,
            dy,
        ),
        norm_x_times_x=_shifted_norm_times(m.norm_x_times_x, m.xx, m.sum_x, m.sum_x, trace_x, m.n, dx, dx),
        norm_x_times_y=_shifted_norm_times(m.norm_x_times_y, m.xy, m.sum_x, m.sum_y, trace_x, m.n, dx, dy),
        norm_y_times_x=_shifted_norm_times(m.norm_y_times_x, m.xy.T, m.sum_y, m.sum_x, trace_y, m.n, dy, dx),
        norm_y_times_y=_shifted_norm_times(m.norm_y_times_y, m.yy, m.sum_y, m.sum_y, trace_y, m.n, dy, dy),
    )


def add_moments(first: Moments, second: Moments) -> Moments:
    return Moments(**{name: getattr(first, name) + getattr(second, name) for name in MOMENTS})


def _debias(
    squared_hsic: Tensor, norm_products: Tensor, trace_a: Tensor, trace_b: Tensor, n: Tensor
) -> Tensor:
    """Kornblith et al.'s `_debiased_dot_product_similarity_helper` (its 1 / (n (n-3)) cancels)."""
    return squared_hsic - n / (n - 2) * norm_products + trace_a * trace_b / ((n - 1) * (n - 2))


def linear_cka_from_moments(moments: Moments, debiased: bool) -> Tensor:
    """CKA of the samples summed into `moments`; NaN with a warning where it is undefined."""
    n = moments.n
    minimum = 4 if debiased else 2
    if n < minimum:
        warnings.warn(
            f"linear CKA needs at least {minimum} samples, got {int(n)}; returning NaN", stacklevel=3
        )
        return torch.tensor(float("nan"), dtype=torch.float64)
    centred = shift_moments(moments, -moments.sum_x / n, -moments.sum_y / n)
    similarity = centred.xy.square().sum()
    normaliser_x, normaliser_y = centred.xx.square().sum(), centred.yy.square().sum()
    if debiased:
        trace_x, trace_y = torch.trace(centred.xx), torch.trace(centred.yy)
        similarity = _debias(similarity, centred.norms_xy, trace_x, trace_y, n)
        normaliser_x = _debias(normaliser_x, centred.norms_xx, trace_x, trace_x, n)
        normaliser_y = _debias(normaliser_y, centred.norms_yy, trace_y, trace_y, n)
    denominator = torch.sqrt(normaliser_x.clamp_min(0) * normaliser_y.clamp_min(0))
    if denominator <= 0:
        warnings.warn("linear CKA is undefined for constant features; returning NaN", stacklevel=3)
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (similarity / denominator).cpu()


def linear_cka(features_x: Tensor, features_y: Tensor, debiased: bool = False) -> Tensor:
    """Linear CKA of paired (samples, dims_x) and (samples, dims_y) features, float64 scalar.

    The same numbers as `LinearCKA` fed the features in any batches (NaN with a warning where CKA
    is undefined: too few samples, constant features).

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 2.0]])
    >>> round(linear_cka(x, 2 * x + 1).item(), 6), round(linear_cka(x, x[:, :1]).item(), 4)
    (1.0, 0.9512)
    """
    metric = LinearCKA(features_x.shape[-1], features_y.shape[-1], debiased=debiased)
    metric.update(features_x, features_y)
    return metric.compute()


_REFERENCE_MOMENTS = ("sum_x", "xx", "norms_xx", "norm_x_times_x")
"""Moments of the reference alone: summed once however many features are compared with it."""
_PAIR_MOMENTS = tuple(name for name in MOMENTS if name not in (*_REFERENCE_MOMENTS, "n"))
"""Moments that involve a compared feature: one per feature (leading axis)."""


class SharedReferenceCKA(Metric):
    """Linear CKA of one reference against several features at once, each exactly as `LinearCKA`.

    `update(reference, features)` takes (samples, dims) reference features and (features, samples,
    dims) compared features, rows paired; `compute()` returns the CKA of the reference with each
    feature, (features,) float64. The reference's own moments (sum, X'X, its squared norms) are
    summed once per batch instead of once per pair, and every pair's moments come from batched
    products: a handful of kernels per batch however many features (what a GPU wants).

    Args:
        dims: feature size of the reference.
        features: how many features are compared with the reference.
        debiased: `compute()` gives the debiased estimator (`compute_estimate` gives either).
        dims_y: feature size of every compared feature (defaults to `dims`).
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 2.0]])
    >>> metric = SharedReferenceCKA(dims=2, features=2)
    >>> metric.update(x, torch.stack([2 * x + 1, x[:, [1, 0]]]))
    >>> [round(value, 6) for value in metric.compute().tolist()]
    [1.0, 1.0]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self, dims: int, features: int, debiased: bool = False, dims_y: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        dx, dy, k = dims, dims if dims_y is None else dims_y, features
        if dx < 1 or dy < 1 or k < 1:
            raise ValueError(
                f"feature sizes and the number of features must be positive, got {dx}, {dy}, {k}"
            )
        self.debiased = debiased
        self._shapes: dict[str, tuple[int, ...]] = {
            "n": (), "shift_x": (dx,), "sum_x": (dx,), "xx": (dx, dx), "norms_xx": (),
            "norm_x_times_x": (dx,), "shift_y": (k, dy), "sum_y": (k, dy), "yy": (k, dy, dy),
            "xy": (k, dx, dy), "norms_xy": (k,), "norms_yy": (k,), "norm_x_times_y": (k, dy),
            "norm_y_times_x": (k, dx), "norm_y_times_y": (k, dy),
        }  # fmt: skip
        for name, shape in self._shapes.items():  # leading axis: one row per rank once gathered
            self.add_state(name, torch.zeros((1, *shape), dtype=torch.float64), dist_reduce_fx="cat")
        self._shift_chosen = False

    @property
    def num_features(self) -> int:
        return self._shapes["sum_y"][0]

    def update(self, reference: Tensor, features: Tensor) -> None:
        dims_x, (k, dims_y) = self._shapes["sum_x"][0], self._shapes["sum_y"]
        if (
            reference.ndim != 2
            or features.shape != (k, reference.shape[0], dims_y)
            or reference.shape[1] != dims_x
        ):
            raise ValueError(
                f"expected (samples, {dims_x}) and ({k}, samples, {dims_y}) features, "
                f"got {tuple(reference.shape)} and {tuple(features.shape)}"
            )
        if reference.shape[0] == 0:
            return
        x, ys = reference.double(), features.double()
        state = {name: self._per_rank(name)[0] for name in self._shapes}
        if not self._shift_chosen:  # this rank's shifts: its first batch's means (no device read)
            state["shift_x"].copy_(x.mean(dim=0))
            state["shift_y"].copy_(ys.mean(dim=1))
            self._shift_chosen = True
        x = x - state["shift_x"]  # samples, dims
        ys = ys - state["shift_y"].unsqueeze(1)  # features, samples, dims
        norm_x, norm_y = x.square().sum(dim=1), ys.square().sum(dim=2)  # (samples,), (features, samples)
        state["n"] += x.shape[0]
        state["sum_x"] += x.sum(dim=0)
        state["xx"] += x.T @ x
        state["norms_xx"] += norm_x @ norm_x
        state["norm_x_times_x"] += norm_x @ x
        state["sum_y"] += ys.sum(dim=1)
        state["yy"] += ys.transpose(1, 2) @ ys
        state["xy"] += x.T @ ys
        state["norms_xy"] += norm_y @ norm_x
        state["norms_yy"] += norm_y.square().sum(dim=1)
        state["norm_x_times_y"] += norm_x @ ys
        state["norm_y_times_x"] += norm_y @ x
        state["norm_y_times_y"] += (norm_y.unsqueeze(1) @ ys).squeeze(1)

    def reset(self) -> None:
        super().reset()
        self._shift_chosen = False

    def compute(self) -> Tensor:
        return self._estimates(self.debiased)

    def compute_estimate(self, debiased: bool) -> Tensor:
        """Plain or debiased CKA with each feature, synchronised across ranks like `compute`."""
        with self.sync_context():
            return self._estimates(debiased)

    def _per_rank(self, name: str) -> Tensor:
        """A state as (ranks, *shape): 1 row before synchronisation, one per rank after it."""
        return cast(Tensor, getattr(self, name)).view(-1, *self._shapes[name])

    def _estimates(self, debiased: bool) -> Tensor:
        """Every rank's moments of each pair moved to one common shift, summed, and turned into CKA."""
        counts = self._per_rank("n")
        weights = counts / counts.sum().clamp_min(1)
        shifts_x, shifts_y = self._per_rank("shift_x"), self._per_rank("shift_y")  # (r, d), (r, k, d)
        common_x = weights @ shifts_x
        ranks = [rank for rank in range(counts.shape[0]) if counts[rank] > 0 or rank == 0]
        estimates = []
        for pair in range(self.num_features):
            common_y = weights @ shifts_y[:, pair]
            moved = [
                shift_moments(
                    self._pair_moments(rank, pair), shifts_x[rank] - common_x, shifts_y[rank, pair] - common_y
                )
                for rank in ranks
            ]
            estimates.append(linear_cka_from_moments(functools.reduce(add_moments, moved), debiased))
        return torch.stack(estimates)

    def _pair_moments(self, rank: int, pair: int) -> Moments:
        shared = {name: self._per_rank(name)[rank] for name in ("n", *_REFERENCE_MOMENTS)}
        return Moments(**shared, **{name: self._per_rank(name)[rank, pair] for name in _PAIR_MOMENTS})


class LinearCKA(SharedReferenceCKA):
    """Linear CKA between two feature sets, exact over all samples seen, in O(dims^2) memory.

    `update(features_x, features_y)` takes (samples, dims_x) and (samples, dims_y) with rows
    paired; `compute()` returns the CKA of everything seen (float64 scalar), equal to CKA
    computed on all samples at once, on one process or many. Undefined cases (too few samples,
    constant features) give NaN with a warning. It is `SharedReferenceCKA` with one feature.

    Each state holds one row per rank (moments relative to that rank's shift); the rows are
    gathered across ranks and combined exactly in `compute`.

    Args:
        dims_x: feature size of x.
        dims_y: feature size of y (defaults to dims_x).
        debiased: the debiased estimator (unbiased HSIC; needs at least 4 samples).
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).

    >>> metric = LinearCKA(dims_x=2)
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 2.0]])
    >>> metric.update(x[:2], 2 * x[:2] + 1)
    >>> metric.update(x[2:], 2 * x[2:] + 1)
    >>> round(metric.compute().item(), 6)  # invariant to scaling and shifting
    1.0
    """

    def __init__(self, dims_x: int, dims_y: int | None = None, debiased: bool = False, **kwargs: Any) -> None:
        dims_y = dims_x if dims_y is None else dims_y
        if dims_x < 1 or dims_y < 1:
            raise ValueError(f"feature sizes must be positive, got {dims_x} and {dims_y}")
        super().__init__(dims_x, 1, debiased=debiased, dims_y=dims_y, **kwargs)

    def update(self, features_x: Tensor, features_y: Tensor) -> None:
        dims_x, dims_y = self._shapes["sum_x"][0], self._shapes["sum_y"][1]
        if features_x.ndim != 2 or features_y.ndim != 2:
            raise ValueError(
                "features must be (samples, dims), "
                f"got {tuple(features_x.shape)} and {tuple(features_y.shape)}"
            )
        if features_x.shape[1] != dims_x or features_y.shape[1] != dims_y:
            raise ValueError(
                f"expected feature sizes {dims_x} and {dims_y}, "
                f"got {features_x.shape[1]} and {features_y.shape[1]}"
            )
        if features_x.shape[0] != features_y.shape[0]:
            raise ValueError(f"x has {features_x.shape[0]} samples but y has {features_y.shape[0]}")
        super().update(features_x, features_y.unsqueeze(0))

    def compute(self) -> Tensor:
        return super().compute()[0]

    def compute_estimate(self, debiased: bool) -> Tensor:
        """Plain or debiased CKA of everything seen, synchronised across ranks like `compute`."""
        return super().compute_estimate(debiased)[0]
