from __future__ import annotations

import lightning as L  # noqa: N812
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from harness import LinearHeads


def test_heads_learn_separable_classes_and_score_like_numpy() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(4, 8, generator=generator)
    labels = torch.arange(4).repeat(50)
    features = centres[labels] + torch.randn(200, 8, generator=generator)
    loader = DataLoader(TensorDataset(features, labels), batch_size=32, shuffle=True, generator=generator)
    heads = LinearHeads(8, 4, learning_rates=[1e-6, 0.1], total_steps=10 * len(loader))
    trainer = L.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(heads, train_dataloaders=loader)
    accuracies = heads.accuracies(features, labels)
    for head, accuracy in zip(heads.heads, accuracies, strict=True):
        scores = features.numpy() @ head.weight.detach().numpy().T + head.bias.detach().numpy()
        assert accuracy == pytest.approx(float(np.mean(scores.argmax(1) == labels.numpy())))
    assert accuracies[1] > 0.95 and accuracies[1] > accuracies[0]  # a tiny rate barely moves


def test_learning_rates_must_be_positive() -> None:
    with pytest.raises(ValueError, match="learning rates must be positive"):
        LinearHeads(4, 2, [0.1, 0.0], total_steps=1)


def test_heads_start_from_their_seed() -> None:
    """The same seed gives the same initial heads whatever the global random state (train_probe.py
    trained a different head each run before the seed reached the initialisation)."""
    first = LinearHeads(6, 3, (0.1, 0.01), total_steps=4, seed=5)
    torch.manual_seed(123)  # the global state must not matter
    second = LinearHeads(6, 3, (0.1, 0.01), total_steps=4, seed=5)
    other = LinearHeads(6, 3, (0.1, 0.01), total_steps=4, seed=6)
    for a, b, c in zip(first.parameters(), second.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
        assert a.abs().sum() == 0 or not torch.equal(a, c)  # biases start at zero for every seed
