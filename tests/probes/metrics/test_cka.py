"""Streaming linear CKA against the Gram-matrix formula computed with numpy."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from probes.metrics import LinearCKA, linear_cka
from tests.probes.tester import check_metric


def gram_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from centred Gram matrices (Kornblith et al. 2019, eq. for linear kernels)."""
    n = x.shape[0]
    centring = np.eye(n) - np.ones((n, n)) / n
    gram_x, gram_y = centring @ x @ x.T @ centring, centring @ y @ y.T @ centring
    return float(np.sum(gram_x * gram_y) / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def debiased_gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased CKA from Gram matrices: unbiased HSIC (Song et al. 2012) of K = XX', L = YY'."""

    def unbiased_hsic(gram_a: np.ndarray, gram_b: np.ndarray) -> float:
        n = gram_a.shape[0]
        a, b = gram_a.copy(), gram_b.copy()
        np.fill_diagonal(a, 0.0)
        np.fill_diagonal(b, 0.0)
        ones = np.ones(n)
        return float(
            np.trace(a @ b)
            + (ones @ a @ ones) * (ones @ b @ ones) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (ones @ a @ b @ ones)
        ) / (n * (n - 3))

    gram_x, gram_y = x @ x.T, y @ y.T
    return unbiased_hsic(gram_x, gram_y) / np.sqrt(
        unbiased_hsic(gram_x, gram_x) * unbiased_hsic(gram_y, gram_y)
    )


@pytest.mark.parametrize(
    ("debiased", "expected"), [(False, 0.55761), (True, 0.51346)], ids=["plain", "debiased"]
)
def test_google_research_demo_values(debiased: bool, expected: float) -> None:
    # representation_similarity demo: np.random.seed(1337); X = randn(100, 10); Y = randn(100, 10) + X
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    metric = LinearCKA(10, debiased=debiased)
    for start in range(0, 100, 30):
        metric.update(torch.from_numpy(x[start : start + 30]), torch.from_numpy(y[start : start + 30]))
    assert metric.compute().item() == pytest.approx(expected, abs=5e-6)


def test_debiased_equals_gram_reference_on_shifted_features() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 9)) + 5.0
    y = x[:, :4] @ rng.normal(size=(4, 7)) + rng.normal(size=(37, 7)) - 2.0
    metric = LinearCKA(9, 7, debiased=True)
    for start in range(0, 37, 8):
        metric.update(torch.from_numpy(x[start : start + 8]), torch.from_numpy(y[start : start + 8]))
    assert metric.compute().item() == pytest.approx(debiased_gram_cka(x, y), abs=1e-9)


@pytest.mark.parametrize("batch_size", [1, 7, 50], ids=lambda b: f"batch{b}")
def test_batches_equal_all_at_once_reference(batch_size: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 12)) + 3.0
    y = x[:, :8] @ rng.normal(size=(8, 6)) + 0.5 * rng.normal(size=(50, 6))
    metric = LinearCKA(12, 6)
    for start in range(0, 50, batch_size):
        metric.update(
            torch.from_numpy(x[start : start + batch_size]).float(),
            torch.from_numpy(y[start : start + batch_size]).float(),
        )
    assert metric.compute().item() == pytest.approx(gram_linear_cka(x, y), abs=1e-6)


def test_invariances_and_reset() -> None:
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)))
    metric = LinearCKA(5)
    metric.update(x, 3.0 * x @ rotation + 2.0)
    assert metric.compute().item() == pytest.approx(1.0, abs=1e-9)
    metric.reset()
    assert metric.n.item() == 0
    clone = metric.clone()
    clone.update(x, x)
    assert metric.n.item() == 0 and clone.n.item() == 40


def test_degenerate_inputs_give_nan_with_warning() -> None:
    metric = LinearCKA(3)
    metric.update(torch.ones(1, 3), torch.ones(1, 3))
    with pytest.warns(UserWarning, match="at least 2 samples"):
        assert torch.isnan(metric.compute())
    metric = LinearCKA(3)
    metric.update(torch.ones(5, 3), torch.randn(5, 3))
    with pytest.warns(UserWarning, match="constant features"):
        assert torch.isnan(metric.compute())
    metric = LinearCKA(3, debiased=True)
    metric.update(torch.randn(3, 3), torch.randn(3, 3))
    with pytest.warns(UserWarning, match="at least 4 samples"):
        assert torch.isnan(metric.compute())


def test_bad_shapes_are_refused() -> None:
    metric = LinearCKA(4)
    with pytest.raises(ValueError, match="expected feature sizes 4 and 4, got 3 and 4"):
        metric.update(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x has 2 samples but y has 3"):
        metric.update(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="feature sizes must be positive"):
        LinearCKA(0)


@pytest.mark.parametrize("debiased", [False, True], ids=["plain", "debiased"])
def test_streamed_and_distributed_equal_the_gram_formula(debiased: bool) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(45, 6))
    y = np.tanh(x @ rng.normal(size=(6, 5))) + 0.3 * rng.normal(size=(45, 5))
    reference = debiased_gram_cka(x, y) if debiased else gram_linear_cka(x, y)
    batches = [(torch.from_numpy(x[s : s + 8]), torch.from_numpy(y[s : s + 8])) for s in range(0, 45, 8)]
    check_metric(functools.partial(LinearCKA, 6, 5, debiased=debiased), batches, reference, atol=1e-9)


@pytest.mark.parametrize("debiased", [False, True], ids=["plain", "debiased"])
def test_large_mean_small_spread_stays_exact(debiased: bool) -> None:
    """Features like DINOv2's (a large common component, a small per-image one) in float32."""
    rng = np.random.default_rng(6)
    spread = rng.normal(size=(60, 8))
    x = (300.0 + 1e-2 * spread).astype(np.float32)
    y = (-200.0 + 1e-2 * (spread[:, :5] + 0.5 * rng.normal(size=(60, 5)))).astype(np.float32)
    centred_x, centred_y = x.astype(np.float64), y.astype(np.float64)
    centred_x, centred_y = centred_x - centred_x.mean(0), centred_y - centred_y.mean(0)  # two-pass reference
    reference = debiased_gram_cka(centred_x, centred_y) if debiased else gram_linear_cka(centred_x, centred_y)
    batches = [(torch.from_numpy(x[s : s + 16]), torch.from_numpy(y[s : s + 16])) for s in range(0, 60, 16)]
    check_metric(functools.partial(LinearCKA, 8, 5, debiased=debiased), batches, reference, atol=1e-9)


@pytest.mark.parametrize("debiased", [False, True], ids=["plain", "debiased"])
def test_functional_form_equals_the_gram_formula(debiased: bool) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 6))
    y = x @ rng.normal(size=(6, 5)) + 0.5 * rng.normal(size=(40, 5))
    reference = debiased_gram_cka(x, y) if debiased else gram_linear_cka(x, y)
    value = linear_cka(torch.from_numpy(x), torch.from_numpy(y), debiased=debiased)
    assert value.dtype == torch.float64 and value.item() == pytest.approx(reference, abs=1e-9)


def _shared_batches(seed: int = 9) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(31, 5)) + 40.0  # a large mean: the shifts matter
    ys = np.stack([x @ rng.normal(size=(5, 5)) + rng.normal(size=(31, 5)) * s for s in (0.1, 1.0, 10.0)])
    batches = [
        (torch.from_numpy(x[start : start + 6]), torch.from_numpy(ys[:, start : start + 6]))
        for start in range(0, 31, 6)
    ]
    return batches, x, ys


@pytest.mark.parametrize("debiased", [False, True], ids=["plain", "debiased"])
def test_shared_reference_equals_one_gram_cka_per_pair_everywhere(debiased: bool) -> None:
    from probes.metrics import SharedReferenceCKA

    batches, x, ys = _shared_batches()
    reference = np.array([(debiased_gram_cka if debiased else gram_linear_cka)(x, y) for y in ys])
    make = functools.partial(SharedReferenceCKA, 5, 3, debiased=debiased)
    check_metric(make, batches, reference, atol=1e-8)  # the Gram formula itself loses ~4e-10 here


def test_shared_reference_equals_linear_cka_pair_by_pair() -> None:
    from probes.metrics import SharedReferenceCKA

    batches, _, _ = _shared_batches(seed=10)
    shared = SharedReferenceCKA(5, 3)
    pairs = [LinearCKA(5) for _ in range(3)]
    for x, ys in batches:
        shared.update(x, ys)
        for pair, metric in enumerate(pairs):
            metric.update(x, ys[pair])
    for debiased in (False, True):
        expected = torch.stack([metric.compute_estimate(debiased) for metric in pairs])
        torch.testing.assert_close(shared.compute_estimate(debiased), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"expected \(samples, 5\) and \(3, samples, 5\)"):
        shared.update(torch.zeros(4, 5), torch.zeros(2, 4, 5))
