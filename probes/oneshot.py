"""One-shot nearest-centroid accuracy (paper Fig 3b): centroids of the full output, queries of a variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from probes.features import add_row_states, append_rows, gathered_rows, is_empty


def sample_episodes(
    labels: np.ndarray, episodes: int, shots: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Support and query rows per episode, from rows sorted by dataset index.

    For each episode e, `np.random.default_rng([seed, e])` permutes the rows of every class
    that has at least `shots + 1` images (classes in ascending order): the first `shots` are
    the support, the next one the query. The choice depends only on the seed and the set of
    (index, label) pairs, never on batch order or world size.

    Returns:
        classes (C,), support rows (episodes, C, shots), query rows (episodes, C), and the
        number of classes skipped for having too few images.
    """
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    used = classes[counts >= shots + 1]
    rows_of = {label: np.flatnonzero(labels == label) for label in used}
    support = np.empty((episodes, len(used), shots), dtype=np.int64)
    query = np.empty((episodes, len(used)), dtype=np.int64)
    for episode in range(episodes):
        rng = np.random.default_rng([seed, episode])
        for position, label in enumerate(used):
            chosen = rng.permutation(rows_of[label])[: shots + 1]
            support[episode, position], query[episode, position] = chosen[:shots], chosen[shots]
    return used, support, query, len(classes) - len(used)


def _oneshot_compute(
    support_features: Tensor, query_features: Tensor, support: Tensor, query: Tensor, top_k: Sequence[int]
) -> dict[int, Tensor]:
    """Per-episode top-k accuracy of cosine nearest-centroid classification.

    Args:
        support_features: (rows, dims) features the centroids are fit on.
        query_features: (rows, dims) features classified.
        support: (episodes, classes, shots) rows; query: (episodes, classes) rows.
        top_k: the k of each accuracy.

    Returns:
        k -> (episodes,) accuracy, each query counted correct when its class is among the k
        most similar centroids (k is capped at the number of classes).
    """
    normalised_support = torch.nn.functional.normalize(support_features.double(), dim=-1)
    normalised_query = torch.nn.functional.normalize(query_features.double(), dim=-1)
    centroids = torch.nn.functional.normalize(normalised_support[support].mean(dim=2), dim=-1)  # ep, C, dims
    similarity = normalised_query[query] @ centroids.transpose(1, 2)  # episodes, queries, classes
    truth = torch.arange(similarity.shape[1], device=similarity.device)
    correct_rank = true_class_rank(similarity, truth.expand(similarity.shape[:2]))  # episodes, queries
    return {k: (correct_rank < k).double().mean(dim=1) for k in top_k}


def true_class_rank(scores: Tensor, truth: Tensor) -> Tensor:
    """0-based rank of the true class among each row's scores (..., classes): top-k iff rank < k.

    >>> true_class_rank(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]), torch.tensor([2, 0])).tolist()
    [1, 0]
    """
    ranking = scores.argsort(dim=-1, descending=True)
    return (ranking == truth.unsqueeze(-1)).float().argmax(dim=-1)


class OneShotAccuracy(Metric):
    """Few-shot accuracy of variants against centroids of the full output, over seeded episodes.

    `update(full, queries, labels, indices)` takes the full-output features (images, dims), a
    mapping variant -> (images, dims) of query features, labels (images,) and dataset indices
    (images,). `compute()` gathers every rank's images (one row per dataset index), samples the
    episodes with `sample_episodes`, and returns `{variant: {k: (mean, std)}}` of top-k
    accuracy over episodes (std with ddof 0) plus `classes` and `skipped_classes` counts.

    Args:
        variants: names of the query variants.
        episodes: number of episodes E.
        shots: support images per class.
        seed: seed of the episode sampling.
        top_k: the accuracies reported.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    index: list[Tensor]
    label: list[Tensor]

    def __init__(
        self,
        variants: Sequence[str],
        episodes: int = 10,
        shots: int = 1,
        seed: int = 0,
        top_k: Sequence[int] = (1, 5),
    ) -> None:
        super().__init__()
        if episodes < 1 or shots < 1 or not top_k or min(top_k) < 1:
            raise ValueError(f"need episodes >= 1, shots >= 1, top_k >= 1; got {episodes}, {shots}, {top_k}")
        self.variants = tuple(variants)
        self.episodes, self.shots, self.seed, self.top_k = episodes, shots, seed, tuple(top_k)
        add_row_states(self, ("index", "label", "full", *self.variants))

    def update(self, full: Tensor, queries: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        if not full.shape[0] == labels.shape[0] == indices.shape[0]:
            raise ValueError(
                f"{full.shape[0]} features, {labels.shape[0]} labels, {indices.shape[0]} indices"
            )
        append_rows(self, {"index": indices.long(), "label": labels.long(), "full": full.float()})
        append_rows(self, {variant: queries[variant].float() for variant in self.variants})

    def compute(self) -> dict[str, object]:
        if is_empty(self.index):
            raise ValueError("one-shot accuracy needs labelled images; none were seen")
        rows = gathered_rows(self, ("label", "full", *self.variants))
        labels, full = rows["label"], rows["full"]
        classes, support, query, skipped = sample_episodes(
            labels.cpu().numpy(), self.episodes, self.shots, self.seed
        )
        results: dict[str, object] = {"classes": len(classes), "skipped_classes": skipped}
        if len(classes) < 2:
            raise ValueError(
                f"one-shot accuracy needs 2 classes with {self.shots + 1}+ images, got {len(classes)}"
            )
        support_rows, query_rows = (
            torch.from_numpy(support).to(full.device),
            torch.from_numpy(query).to(full.device),
        )
        for variant in self.variants:
            accuracy = _oneshot_compute(full, rows[variant], support_rows, query_rows, self.top_k)
            results[variant] = {
                k: (acc.mean().cpu(), acc.std(correction=0).cpu()) for k, acc in accuracy.items()
            }
        return results
