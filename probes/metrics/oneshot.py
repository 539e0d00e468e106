"""Few-shot nearest-centroid accuracy over seeded episodes: centroids of one feature, queries of others."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from common.errors import InsufficientDataError
from probes.metrics.rows import add_row_states, append_rows, gathered_rows, is_empty

_REFERENCE = "reference"


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


def oneshot_accuracy(
    support_features: Tensor,
    query_features: Tensor,
    labels: Tensor,
    episodes: int = 10,
    shots: int = 1,
    seed: int = 0,
    top_k: Sequence[int] = (1, 5),
) -> dict[str, Tensor]:
    """Few-shot top-k accuracy over seeded episodes, on rows in dataset-index order.

    Centroids come from `support_features`, queries from `query_features` (both (rows, dims),
    paired by row); episodes are drawn by `sample_episodes`.

    Returns:
        `top{k}` and `top{k}_std`: mean and std (ddof 0) over episodes of the top-k accuracy, and
        the counts `classes` (used) and `skipped_classes` (too few images).

    Raises:
        InsufficientDataError: fewer than 2 classes have `shots + 1` images.
    """
    return _oneshot_results(support_features, {"": query_features}, labels, episodes, shots, seed, top_k)


def _oneshot_results(
    support_features: Tensor,
    queries: Mapping[str, Tensor],
    labels: Tensor,
    episodes: int,
    shots: int,
    seed: int,
    top_k: Sequence[int],
) -> dict[str, Tensor]:
    """`classes`, `skipped_classes` and, per query name q, `q/top{k}` and `q/top{k}_std` ("" names
    give bare `top{k}`)."""
    classes, support, query, skipped = sample_episodes(labels.cpu().numpy(), episodes, shots, seed)
    if len(classes) < 2:
        raise InsufficientDataError(
            f"one-shot accuracy needs 2 classes with {shots + 1}+ images, got {len(classes)}"
        )
    results = {"classes": torch.tensor(len(classes)), "skipped_classes": torch.tensor(skipped)}
    device = support_features.device
    support_rows, query_rows = torch.from_numpy(support).to(device), torch.from_numpy(query).to(device)
    for name, features in queries.items():
        prefix = f"{name}/" if name else ""
        accuracy = _oneshot_compute(support_features, features, support_rows, query_rows, top_k)
        for k, per_episode in accuracy.items():
            results[f"{prefix}top{k}"] = per_episode.mean().cpu()
            results[f"{prefix}top{k}_std"] = per_episode.std(correction=0).cpu()
    return results


class OneShotAccuracy(Metric):
    """Few-shot accuracy of query features against centroids of reference features, over seeded episodes.

    `update(reference, queries, labels, indices)` takes the reference features (samples, dims)
    the centroids are fit on, a mapping name -> (samples, dims) of query features, labels
    (samples,) and dataset indices (samples,). `compute()` gathers every rank's samples (one row
    per dataset index), samples the episodes with `sample_episodes`, and returns a dict of
    tensors: `classes` and `skipped_classes` (too few samples), and per query name q
    `q/top{k}` and `q/top{k}_std`, the mean and std (ddof 0) of top-k accuracy over episodes.

    Args:
        queries: names of the query features.
        episodes: number of episodes E.
        shots: support samples per class.
        seed: seed of the episode sampling.
        top_k: the accuracies reported.
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    index: list[Tensor]
    label: list[Tensor]

    def __init__(
        self,
        queries: Sequence[str],
        episodes: int = 10,
        shots: int = 1,
        seed: int = 0,
        top_k: Sequence[int] = (1, 5),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if episodes < 1 or shots < 1 or not top_k or min(top_k) < 1:
            raise ValueError(f"need episodes >= 1, shots >= 1, top_k >= 1; got {episodes}, {shots}, {top_k}")
        self.queries = tuple(queries)
        self.episodes, self.shots, self.seed, self.top_k = episodes, shots, seed, tuple(top_k)
        add_row_states(self, ("index", "label", _REFERENCE, *self.queries))

    def update(
        self, reference: Tensor, queries: Mapping[str, Tensor], labels: Tensor, indices: Tensor
    ) -> None:
        if not reference.shape[0] == labels.shape[0] == indices.shape[0]:
            raise ValueError(
                f"{reference.shape[0]} features, {labels.shape[0]} labels, {indices.shape[0]} indices"
            )
        append_rows(self, {"index": indices.long(), "label": labels.long(), _REFERENCE: reference.float()})
        append_rows(self, {name: queries[name].float() for name in self.queries})

    def compute(self) -> dict[str, Tensor]:
        if is_empty(self.index):
            raise InsufficientDataError("one-shot accuracy needs labelled images; none were seen")
        rows = gathered_rows(self, ("label", _REFERENCE, *self.queries))
        queries = {name: rows[name] for name in self.queries}
        return _oneshot_results(
            rows[_REFERENCE], queries, rows["label"], self.episodes, self.shots, self.seed, self.top_k
        )
