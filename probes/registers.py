"""Registers probe (paper Fig 2b): the highest-norm token of the penultimate layer, across images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import Tensor

from harness.decomposition import PENULTIMATE
from probes.base import Probe, ProbeContext
from probes.metrics.high_norm import TOP_DIMS, HighNormToken


class RegistersProbe(Probe):
    """The highest-norm non-[CLS] token of the penultimate layer (the last block's input) per image.

    Results: `registers/{key}` for each key of `RESULTS` (see `HighNormToken`): share of images whose
    token is a register, its most frequent position and that position's share, mean norms and
    their ratio, mean pairwise cosine across images, mean |activation| of its top-`TOP_DIMS`
    dimensions before and after norm1.
    Arrays: `registers/top_token_counts`, images per position of the highest-norm token.
    """

    name = "registers"
    RESULTS: ClassVar[tuple[str, ...]] = (
        "top_in_registers", "top_token", "top_token_share", "top_norm", "other_norm", "norm_ratio",
        "pairwise_cosine", "top_dims_before", "top_dims_after",
    )  # fmt: skip
    TOP_TOKEN_COUNTS: ClassVar[str] = "registers/top_token_counts"
    TOP_DIMS: ClassVar[int] = TOP_DIMS

    @staticmethod
    def result_name(key: str) -> str:
        """`registers/{key}`, key in `RESULTS`."""
        return f"registers/{key}"

    @classmethod
    def from_context(cls, context: ProbeContext) -> RegistersProbe:
        info = context.info
        return cls(info.hidden_size, context.num_tokens, info.num_registers, 1 + info.num_distillation)

    def __init__(
        self, hidden_size: int, num_tokens: int, num_registers: int, first_register: int = 1
    ) -> None:
        super().__init__()
        self.metric = HighNormToken(hidden_size, num_tokens, num_registers, first_register=first_register)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(*(decomposition[name] for name in PENULTIMATE))

    def compute(self) -> dict[str, float]:
        computed = self.metric.compute()
        return {self.result_name(key): float(computed[key]) for key in self.RESULTS}

    def arrays(self) -> dict[str, Tensor]:
        return {self.TOP_TOKEN_COUNTS: self.metric.compute()["top_token_counts"]}
