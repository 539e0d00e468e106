"""The highest-norm token of a layer across images: where it sits, how large, how alike (Fig 2b)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from common.errors import InsufficientDataError

TOP_DIMS = 100
"""Dimensions of the token compared before and after the norm (the paper's top-100)."""


class HighNormToken(Metric):
    """Statistics of one chosen token per image (e.g. the highest-norm non-[CLS] token of a layer).

    `update(position, norm, other_norm, state, state_norm1)` takes, per image, the token's
    sequence position, its L2 norm, the mean norm of the other non-[CLS] tokens, its state and
    that state after a norm. `compute()` returns a dict of tensors:

    - `top_in_registers`: share of images whose token is a register (positions 1..registers);
    - `top_token`, `top_token_share`: the most frequent position and its share;
    - `top_norm`, `other_norm`, `norm_ratio`: mean norms and their ratio;
    - `pairwise_cosine`: mean cosine similarity of the token's state over all pairs of distinct
      images, (||sum of unit states||^2 - n) / (n (n - 1)) (the paper: 0.9989 for ViT-g/14-reg);
    - `top_dims_before`, `top_dims_after`: mean |activation| over the `top_dims` dimensions of
      largest |mean state|, before and after norm1;
    - `top_token_counts`: (num_tokens,) how many images have their token at each position.

    Args:
        hidden_size: width of the states.
        num_tokens: sequence length (1 + registers + patches).
        num_registers: register tokens.
        first_register: the first register's position (1, after [CLS]; 2 after a distillation token).
        first_token: the first position the token may hold (1, after [CLS]; 0 for a model without).
        top_dims: how many dimensions the last two results average over.
        kwargs: torchmetrics' Metric arguments (`compute_on_cpu`, `sync_on_compute`, ...).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    register_hits: Tensor
    positions: Tensor
    unit_sum: Tensor
    state_sum: Tensor
    state_norm1_sum: Tensor
    norm_sum: Tensor
    other_norm_sum: Tensor

    def __init__(
        self,
        hidden_size: int,
        num_tokens: int,
        num_registers: int,
        top_dims: int = TOP_DIMS,
        first_register: int = 1,
        first_token: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_tokens < 2 or hidden_size < 1 or top_dims < 1:
            raise ValueError(
                f"need 2+ tokens, 1+ dims, top_dims >= 1; got {num_tokens}, {hidden_size}, {top_dims}"
            )
        self.num_registers, self.top_dims = num_registers, min(top_dims, hidden_size)
        self.first_register, self.first_token = first_register, first_token
        for name, shape in {
            "n": (), "register_hits": (), "positions": (num_tokens,), "unit_sum": (hidden_size,),
            "state_sum": (hidden_size,), "state_norm1_sum": (hidden_size,),
            "norm_sum": (), "other_norm_sum": (),
        }.items():  # fmt: skip
            self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, position: Tensor, norm: Tensor, other_norm: Tensor, state: Tensor, state_norm1: Tensor
    ) -> None:
        position = position.long()
        # checked where it costs nothing; on an accelerator the check would wait for the device
        # every batch (index_add_ below still refuses positions past the end there)
        on_host = position.device.type == "cpu" and position.numel()
        if on_host and (position.min() < self.first_token or position.max() >= self.positions.shape[0]):
            raise ValueError(f"token positions must lie in {self.first_token}..{self.positions.shape[0] - 1}")
        state = state.double()
        self.n += position.numel()
        first = self.first_register
        self.register_hits += ((position >= first) & (position < first + self.num_registers)).sum()
        # index_add_, not bincount: bincount reads the largest value back to the host
        self.positions.index_add_(0, position, torch.ones_like(position, dtype=self.positions.dtype))
        self.unit_sum += torch.nn.functional.normalize(state, dim=-1).sum(0)
        self.state_sum += state.sum(0)
        self.state_norm1_sum += state_norm1.double().sum(0)
        self.norm_sum += norm.double().sum()
        self.other_norm_sum += other_norm.double().sum()

    def compute(self) -> dict[str, Tensor]:
        n = self.n
        if n < 2:
            raise InsufficientDataError(f"the registers probe needs at least 2 images, got {int(n)}")
        mean_state, mean_norm1 = self.state_sum / n, self.state_norm1_sum / n
        dims = mean_state.abs().topk(self.top_dims).indices
        top_norm, other_norm = self.norm_sum / n, self.other_norm_sum / n
        return {
            "top_in_registers": self.register_hits / n,
            "top_token": self.positions.argmax(),
            "top_token_share": self.positions.max() / n,
            "top_norm": top_norm,
            "other_norm": other_norm,
            "norm_ratio": top_norm / other_norm,
            "pairwise_cosine": (self.unit_sum.square().sum() - n) / (n * (n - 1)),
            "top_dims_before": mean_state[dims].abs().mean(),
            "top_dims_after": mean_norm1[dims].abs().mean(),
            "top_token_counts": self.positions.clone(),
        }
