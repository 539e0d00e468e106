"""Ridge classifier probe against scikit-learn's RidgeClassifier."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier

from probes.metrics import RidgeAccuracy, is_train_image, ridge_accuracy
from tests.probes.synthetic import LabelledFeatures, labelled_features
from tests.probes.tester import check_metric


def reference_ridge(data: LabelledFeatures, num_classes: int, relative_alpha: float, seed: int) -> dict:
    train = is_train_image(torch.from_numpy(data.indices), seed, 0.5).numpy()
    x_train = data.full[train].astype(np.float64)
    centred = x_train - x_train.mean(0)
    alpha = relative_alpha * np.trace(centred.T @ centred) / x_train.shape[1]
    classifier = RidgeClassifier(alpha=alpha, solver="cholesky").fit(x_train, data.labels[train])
    assert list(classifier.classes_) == list(range(num_classes))
    result: dict = {"train_images": int(train.sum()), "test_images": int((~train).sum()), "alpha": alpha}
    for variant, values in data.variants.items():
        scores = classifier.decision_function(values[~train].astype(np.float64))
        ranking = np.argsort(-scores, axis=1)
        truth = data.labels[~train]
        for k in (1, 5):
            result[f"{variant}/top{k}"] = np.mean(
                [t in row[:k] for t, row in zip(truth, ranking, strict=True)]
            )
    return result


def test_ridge_matches_scikit_learn_everywhere() -> None:
    data = labelled_features(num_classes=8, per_class=12, dims=10)
    make = functools.partial(RidgeAccuracy, tuple(data.variants), 10, 8, relative_alpha=0.05, seed=1)
    check_metric(make, data.batches(9), reference_ridge(data, 8, 0.05, seed=1), atol=1e-9)


def test_split_is_a_function_of_the_index() -> None:
    indices = torch.arange(1000)
    train = is_train_image(indices, seed=0, train_fraction=0.5)
    assert 450 < int(train.sum()) < 550
    assert torch.equal(is_train_image(indices.flip(0), 0, 0.5), train.flip(0))
    assert not torch.equal(is_train_image(indices, 1, 0.5), train)


def splitmix64_uniform(indices: np.ndarray, seed: int) -> np.ndarray:
    """The split's hash written with numpy's unsigned 64-bit integers: splitmix64 of index + seed *
    golden ratio (plus one golden step), its top 53 bits as a uniform number in [0, 1)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        state = indices.astype(np.uint64) + np.uint64(seed) * golden + golden
        state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        state = state ^ (state >> np.uint64(31))
    return (state >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**40 + 3])
def test_split_equals_unsigned_splitmix64(seed: int) -> None:
    """The int64 tensor hash (wrapping, logical shifts emulated) equals the unsigned one bit for bit."""
    indices = np.concatenate([np.arange(5000), np.array([2**31 - 1, 2**40, 2**62 + 12345])])
    for fraction in (0.5, 0.2):
        expected = splitmix64_uniform(indices, seed) < fraction
        got = is_train_image(torch.from_numpy(indices), seed, fraction).numpy()
        np.testing.assert_array_equal(got, expected)


def test_labels_out_of_range_are_refused() -> None:
    metric = RidgeAccuracy(["output/full"], dims=2, num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        metric.update(
            torch.zeros(2, 2), {"output/full": torch.zeros(2, 2)}, torch.tensor([0, 3]), torch.tensor([0, 1])
        )


def test_functional_form_equals_the_metric() -> None:
    data = labelled_features(num_classes=4, per_class=10, dims=6)
    variant = "output/patch"
    metric = RidgeAccuracy([variant], dims=6, num_classes=4, seed=2)
    for arguments in data.batches(7):
        metric.update(*arguments)
    computed = metric.compute()
    train = is_train_image(torch.from_numpy(data.indices), 2, 0.5)
    order = np.argsort(data.indices[~train.numpy()])
    functional = ridge_accuracy(
        torch.from_numpy(data.full)[train], torch.from_numpy(data.labels)[train],
        torch.from_numpy(data.variants[variant])[~train][order], torch.from_numpy(data.labels)[~train][order],
        num_classes=4,
    )  # fmt: skip
    assert functional["alpha"].item() == pytest.approx(computed["alpha"].item(), rel=1e-9)
    for k in (1, 5):
        assert functional[f"top{k}"].item() == pytest.approx(computed[f"{variant}/top{k}"].item(), abs=1e-12)


def test_features_that_never_vary_give_the_class_prior() -> None:
    """An intervention can make every image's output the same (all patches zeroed at the first
    block): the classifier then has nothing to read and predicts the most frequent training class,
    as scikit-learn does with any alpha, instead of failing on a singular system."""
    labels = torch.tensor([0, 0, 0, 1, 1, 2] * 4)
    constant = torch.ones(len(labels), 5)
    functional = ridge_accuracy(constant[:12], labels[:12], constant[12:], labels[12:], num_classes=3)
    classifier = RidgeClassifier(alpha=1.0).fit(constant[:12].numpy(), labels[:12].numpy())
    expected = float(np.mean(classifier.predict(constant[12:].numpy()) == labels[12:].numpy()))
    assert functional["top1"].item() == pytest.approx(expected) == pytest.approx(0.5)
