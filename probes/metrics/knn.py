"""Weighted k-nearest-neighbour votes as DINOv2's k-NN evaluation computes them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

KNN_K = (10, 20, 100, 200)
"""DINOv2's neighbour counts."""
KNN_TEMPERATURE = 0.07
"""DINOv2's temperature of the exponentiated similarity weights."""
KNN_SCORE_K = 20
"""The neighbours of `KnnScores` (DINOv2's reported k-NN setting)."""


def knn_votes(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    ks: Sequence[int] = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 65536,
) -> Tensor:
    """Class votes (len(ks), queries, classes) of the k nearest bank rows of each query.

    As DINOv2's evaluation: cosine similarity of L2-normalised features; the k most similar bank
    rows vote for their class with weight exp(similarity / temperature). The bank is read in
    chunks of `chunk` rows (the running top-k merged), so no (queries x bank) matrix is held whole.
    A k above the bank's size uses the whole bank.

    Args:
        queries: (queries, dims) features.
        bank: (rows, dims) L2-normalised float features (the queries are cast to their dtype).
        bank_labels: (rows,) their classes.

    >>> bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    >>> knn_votes(torch.tensor([[1.0, 0.05]]), bank, torch.tensor([0, 0, 1]), 2, ks=(1,)).argmax(-1).tolist()
    [[0]]
    """
    normalised = torch.nn.functional.normalize(queries.to(bank.dtype), dim=-1)  # float32 banks
    most = min(max(ks), bank.shape[0])
    best: tuple[Tensor, Tensor] | None = None
    for start in range(0, bank.shape[0], chunk):
        similarity = normalised @ bank[start : start + chunk].T
        values, positions = similarity.topk(min(most, similarity.shape[1]), dim=1)
        positions = positions + start
        if best is not None:
            merged = torch.cat([best[0], values], dim=1)
            values, order = merged.topk(min(most, merged.shape[1]), dim=1)
            positions = torch.cat([best[1], positions], dim=1).gather(1, order)
        best = values, positions
    if best is None:
        raise ValueError("the k-NN bank is empty")
    weights, neighbour_labels = (best[0] / temperature).exp(), bank_labels[best[1]]
    votes = []
    for k in ks:
        count = min(k, most)
        zeros = weights.new_zeros(weights.shape[0], num_classes)
        votes.append(zeros.scatter_add_(1, neighbour_labels[:, :count], weights[:, :count]))
    return torch.stack(votes)


class KnnScores(nn.Module):
    """Class scores of features from a bank's weighted k-NN votes: log(votes / sum of votes) per
    class (queries, classes), so their softmax is the vote shares and their argmax the k-NN's
    prediction; differentiable in the queries (through the chosen neighbours' similarities). A class
    no neighbour votes for scores log(1e-30).

    Args:
        bank: (rows, dims) features (normalised here).
        labels: (rows,) their classes.
        num_classes: the classes' count.
    """

    bank: Tensor
    labels: Tensor

    def __init__(
        self, bank: Tensor, labels: Tensor, num_classes: int, k: int = KNN_SCORE_K,
        temperature: float = KNN_TEMPERATURE,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        self.register_buffer("bank", nn.functional.normalize(bank.float(), dim=-1), persistent=False)
        self.register_buffer("labels", labels.long(), persistent=False)

    def forward(self, queries: Tensor) -> Tensor:
        votes = knn_votes(queries, self.bank, self.labels, self.num_classes, (self.k,), self.temperature)[0]
        return (votes / votes.sum(dim=-1, keepdim=True)).clamp_min(1e-30).log()
