"""One-shot accuracy against scikit-learn's NearestCentroid and a numpy top-k computation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestCentroid

from probes.metrics import OneShotAccuracy, oneshot_accuracy
from tests.probes.synthetic import LabelledFeatures, labelled_features
from tests.probes.tester import check_metric


def reference_oneshot(data: LabelledFeatures, episodes: int, shots: int, seed: int) -> dict:
    """The documented protocol, written out with numpy and scikit-learn."""
    order = np.argsort(data.indices)
    labels = data.labels[order]

    def unit(values: np.ndarray) -> np.ndarray:
        values = values[order].astype(np.float64)
        return values / np.linalg.norm(values, axis=1, keepdims=True)

    full = unit(data.full)
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= shots + 1]
    accuracies: dict[str, dict[int, list[float]]] = {v: {1: [], 5: []} for v in data.variants}
    for episode in range(episodes):
        rng = np.random.default_rng([seed, episode])
        support_rows, query_rows = [], []
        for c in classes:
            chosen = rng.permutation(np.flatnonzero(labels == c))[: shots + 1]
            support_rows.append(chosen[:shots])
            query_rows.append(chosen[shots])
        centroid_rows = np.concatenate(support_rows)
        centroid_labels = np.repeat(np.arange(len(classes)), shots)
        centroids = np.stack([full[rows].mean(0) for rows in support_rows])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        for variant, values in data.variants.items():
            queries = unit(values)[query_rows]
            if shots == 1:  # unit vectors: nearest by euclidean distance = nearest by cosine
                top1 = NearestCentroid().fit(full[centroid_rows], centroid_labels).predict(queries)
                accuracies[variant][1].append(float(np.mean(top1 == np.arange(len(classes)))))
            else:
                accuracies[variant][1].append(
                    float(np.mean(np.argmax(queries @ centroids.T, 1) == np.arange(len(classes))))
                )
            top5 = np.argsort(-(queries @ centroids.T), axis=1)[:, :5]
            accuracies[variant][5].append(float(np.mean([i in row for i, row in enumerate(top5)])))
    result: dict = {"classes": len(classes), "skipped_classes": len(np.unique(labels)) - len(classes)}
    for variant, by_k in accuracies.items():
        for k, values in by_k.items():
            result[f"{variant}/top{k}"] = np.mean(values)
            result[f"{variant}/top{k}_std"] = np.std(values)
    return result


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # NearestCentroid, 1 sample a class
@pytest.mark.parametrize("shots", [1, 2], ids=["1-shot", "2-shot"])
def test_oneshot_matches_reference_everywhere(shots: int) -> None:
    data = labelled_features(num_classes=12, per_class=5)
    make = functools.partial(OneShotAccuracy, tuple(data.variants), episodes=6, shots=shots, seed=3)
    check_metric(make, data.batches(7), reference_oneshot(data, episodes=6, shots=shots, seed=3), atol=1e-9)


def test_episodes_do_not_depend_on_batch_order() -> None:
    data = labelled_features()
    forward, backward = OneShotAccuracy(tuple(data.variants)), OneShotAccuracy(tuple(data.variants))
    for arguments in data.batches(5):
        forward.update(*arguments)
    for arguments in reversed(data.batches(3)):
        backward.update(*arguments)
    first, second = forward.compute(), backward.compute()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_small_classes_are_skipped_and_counted() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # class 3 has a single image
    features = torch.nn.functional.one_hot(labels, 4).float() * 3.0  # every class on its own axis
    metric = OneShotAccuracy(["output/full"], episodes=2)
    metric.update(features, {"output/full": features}, labels, torch.arange(9))
    result = metric.compute()
    assert result["classes"] == 3 and result["skipped_classes"] == 1
    assert result["output/full/top1"].item() == 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="episodes >= 1"):
        OneShotAccuracy(["output/full"], episodes=0)
    metric = OneShotAccuracy(["output/full"])
    with pytest.raises(ValueError, match="3 features, 2 labels"):
        metric.update(torch.zeros(3, 2), {"output/full": torch.zeros(3, 2)}, torch.zeros(2), torch.zeros(3))


def test_functional_form_equals_the_metric() -> None:
    data = labelled_features(num_classes=6, per_class=4)
    variant = next(iter(data.variants))
    metric = OneShotAccuracy([variant], episodes=3, seed=1)
    for arguments in data.batches(5):
        metric.update(*arguments)
    order = np.argsort(data.indices)
    functional = oneshot_accuracy(
        torch.from_numpy(data.full[order]), torch.from_numpy(data.variants[variant][order]),
        torch.from_numpy(data.labels[order]), episodes=3, seed=1,
    )  # fmt: skip
    computed = metric.compute()
    assert set(functional) == {"classes", "skipped_classes", "top1", "top1_std", "top5", "top5_std"}
    for name, value in functional.items():
        assert torch.equal(value, computed[name if "classes" in name else f"{variant}/{name}"]), name


def test_too_few_classes_is_a_user_error() -> None:
    from common.errors import UserError

    metric = OneShotAccuracy(["x"])
    metric.update(torch.zeros(4, 2), {"x": torch.zeros(4, 2)}, torch.tensor([0, 0, 0, 1]), torch.arange(4))
    with pytest.raises(UserError, match="needs 2 classes"):
        metric.compute()
