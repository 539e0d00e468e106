"""The k-NN probe against a brute-force numpy k-NN written from DINOv2's protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import KnnBank, KnnProbe
from probes.metrics.knn import KNN_K, knn_votes


def numpy_knn_accuracy(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, labels: np.ndarray,
                       num_classes: int, k: int, top: int, temperature: float = 0.07) -> float:  # fmt: skip
    """Cosine similarity of L2-normalised features, the k most similar bank rows vote with weight
    exp(similarity / T); correct at `top` when the true class is among the `top` highest votes."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    correct = 0
    for query, label in zip(queries, labels, strict=True):
        similarity = bank @ query
        nearest = np.argsort(-similarity, kind="stable")[: min(k, len(bank))]
        votes = np.zeros(num_classes)
        np.add.at(votes, bank_labels[nearest], np.exp(similarity[nearest] / temperature))
        correct += label in np.argsort(-votes, kind="stable")[:top]
    return correct / len(labels)


@pytest.mark.parametrize("chunk", [7, 65536])
def test_votes_match_numpy(chunk: int) -> None:
    generator = np.random.default_rng(0)
    num_classes, dims = 6, 5
    centres = generator.normal(size=(num_classes, dims))
    bank_labels = generator.integers(0, num_classes, 150)
    bank = centres[bank_labels] + generator.normal(size=(150, dims))
    labels = generator.integers(0, num_classes, 40)
    queries = centres[labels] + generator.normal(size=(40, dims))
    normalised = torch.nn.functional.normalize(torch.from_numpy(bank).float(), dim=1)
    votes = knn_votes(
        torch.from_numpy(queries), normalised, torch.from_numpy(bank_labels), num_classes, chunk=chunk
    )
    for row, k in enumerate(KNN_K):
        ranking = votes[row].argsort(dim=1, descending=True)
        for top in (1, 5):
            got = (ranking[:, :top] == torch.from_numpy(labels)[:, None]).any(1).double().mean().item()
            expected = numpy_knn_accuracy(bank, bank_labels, queries, labels, num_classes, k, top)
            assert got == pytest.approx(expected, abs=1e-12), (k, top)


def test_probe_over_batches_equals_numpy() -> None:
    generator = np.random.default_rng(1)
    num_classes, dims = 4, 6
    bank = generator.normal(size=(90, dims))
    bank_labels = generator.integers(0, num_classes, 90)
    variants = ("output/full", "output/patch")
    features = {v: generator.normal(size=(33, dims)) for v in variants}
    labels = generator.integers(0, num_classes, 33)
    stored = KnnBank(torch.from_numpy(bank), torch.from_numpy(bank_labels), ("a", "b", "c", "d"))
    probe = KnnProbe(variants, stored, num_classes)
    for start in range(0, 33, 10):
        batch = {v: torch.from_numpy(f[start : start + 10]).float() for v, f in features.items()}
        probe.update(batch, torch.from_numpy(labels[start : start + 10]), torch.arange(start, start + 10))
    results = probe.compute()
    assert results[KnnProbe.BANK_IMAGES] == 90
    for variant in variants:
        for k in KNN_K:
            for top in (1, 5):
                expected = numpy_knn_accuracy(
                    bank, bank_labels, features[variant], labels, num_classes, k, min(top, 4)
                )
                assert results[KnnProbe.result_name(variant, k, top)] == pytest.approx(expected, abs=1e-6)
