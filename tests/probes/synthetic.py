"""Class-structured synthetic features for probe tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LabelledFeatures:
    """N images in shuffled index order: full output, variants, labels, dataset indices."""

    indices: np.ndarray
    labels: np.ndarray
    full: np.ndarray
    variants: dict[str, np.ndarray]

    def batches(
        self, size: int
    ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]:
        """`update(full, queries, labels, indices)` arguments, `size` images at a time."""
        out = []
        for start in range(0, len(self.indices), size):
            part = slice(start, start + size)
            out.append(
                (
                    torch.from_numpy(self.full[part]),
                    {name: torch.from_numpy(values[part]) for name, values in self.variants.items()},
                    torch.from_numpy(self.labels[part]),
                    torch.from_numpy(self.indices[part]),
                )
            )
        return out


def labelled_features(
    num_classes: int = 12, per_class: int = 5, dims: int = 16, seed: int = 0
) -> LabelledFeatures:
    rng = np.random.default_rng(seed)
    n = num_classes * per_class
    labels = np.repeat(np.arange(num_classes), per_class)
    centres = rng.normal(size=(num_classes, dims))
    full = (centres[labels] + 0.8 * rng.normal(size=(n, dims))).astype(np.float32)
    variants = {
        "output/full": full,
        "output/patch": (full + 1.5 * rng.normal(size=(n, dims))).astype(np.float32),
        "output/skip": rng.normal(size=(n, dims)).astype(np.float32),
    }
    order = rng.permutation(n)
    indices = rng.permutation(n * 2)[:n]  # sparse, shuffled dataset indices
    return LabelledFeatures(
        indices=indices[order].astype(np.int64),
        labels=labels[order].astype(np.int64),
        full=full[order],
        variants={name: values[order] for name, values in variants.items()},
    )
