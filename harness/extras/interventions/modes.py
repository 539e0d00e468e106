"""The modes that replace a target's values, each of the same shape as what it replaces:

- `zero`: the paper's ablation;
- `mean`: the target's mean over a reference set (per token position: each register its own);
- `shuffle`: another image's, from a bank of reference images; the partner is chosen by a seeded hash
  of the dataset index, so an image gets the same partner in any batch, on any rank, and at every
  block of a multi-block intervention;
- `noise`: Gaussian with the reference set's per-dimension mean and standard deviation, drawn from a
  seeded hash of (block, dataset index, token, dimension): each block draws its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.extras.interventions.intervention import Mode
from harness.extras.interventions.reference import ReferenceKey, ReferenceStatistics


class Zero(Mode):
    name = "zero"
    description = "zeros (the paper's ablation)"

    def replacement(
        self,
        current: Tensor,
        key: ReferenceKey,
        indices: Tensor | None,
        reference: ReferenceStatistics | None,
    ) -> Tensor:
        return torch.zeros_like(current)


class _FromReference(Mode):
    """A mode whose values come from the reference statistics, checked against the batch's shape."""

    reads_reference = True

    def replacement(
        self,
        current: Tensor,
        key: ReferenceKey,
        indices: Tensor | None,
        reference: ReferenceStatistics | None,
    ) -> Tensor:
        if reference is None:
            raise ValueError(f"the {self.name} mode needs reference statistics (a reference pass)")
        if self.draws_random and indices is None:
            raise ValueError(f"the {self.name} mode draws by dataset index: pass the images' indices")
        held = tuple(reference.mean(key).shape)
        if held != tuple(current.shape[1:]):
            raise ValueError(
                f"{self.name}: the reference holds {held} per image for {key.target} at block "
                f"{key.block}, this batch {tuple(current.shape[1:])} (another resolution?)"
            )
        return self.values(key, current, indices, reference).to(current.device, current.dtype)

    def values(
        self, key: ReferenceKey, current: Tensor, indices: Tensor | None, reference: ReferenceStatistics
    ) -> Tensor:
        """The replacement, before it takes `current`'s device and dtype (`indices` given where the
        mode draws: `draws_random`)."""
        raise NotImplementedError


class Mean(_FromReference):
    name = "mean"
    description = "the target's mean over the reference images (each token position its own)"

    def values(
        self, key: ReferenceKey, current: Tensor, indices: Tensor | None, reference: ReferenceStatistics
    ) -> Tensor:
        return reference.mean(key).expand_as(current)


class Shuffle(_FromReference):
    name = "shuffle"
    description = "another reference image's, the partner drawn by a seeded hash of the dataset index"
    draws_random = True

    def values(
        self, key: ReferenceKey, current: Tensor, indices: Tensor | None, reference: ReferenceStatistics
    ) -> Tensor:
        assert indices is not None  # checked by `replacement`
        return reference.partners(key, indices)


class Noise(_FromReference):
    name = "noise"
    description = "Gaussian with the reference images' per-dimension mean and std, seeded per block and image"
    draws_random = True

    def values(
        self, key: ReferenceKey, current: Tensor, indices: Tensor | None, reference: ReferenceStatistics
    ) -> Tensor:
        assert indices is not None  # checked by `replacement`
        return reference.noise(key, indices)
