"""CKA probe (paper Fig 3a, 6): how similar each variant is to the full [CLS] output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from torch import Tensor, nn

from probes.base import Probe, module_key
from probes.cka import LinearCKA

ESTIMATORS = ("cka", "cka_debiased")
"""Result prefixes: plain linear CKA and the debiased estimator (both from the same moments)."""


class CKAProbe(Probe):
    """Linear CKA of `{readout}/full` against every other variant of the same readout.

    Results: `{estimator}/{readout}/{variant}` for each variant other than full and each
    estimator (`cka`, `cka_debiased`); both estimators read the same streamed moments, so asking
    for both costs no more than one.

    Args:
        variants: the `{readout}/{variant}` names the backbone produces.
        hidden_size: feature size of every variant.
        estimators: which of `ESTIMATORS` to report.
    """

    def __init__(
        self, variants: Sequence[str], hidden_size: int, estimators: Sequence[str] = ("cka",)
    ) -> None:
        super().__init__()
        unknown = set(estimators) - set(ESTIMATORS)
        if unknown or not estimators:
            raise ValueError(f"estimators must be among {ESTIMATORS}, got {list(estimators)}")
        self.name = estimators[0]
        self.estimators = tuple(estimators)
        self.pairs: dict[str, str] = {}  # variant -> its reference
        for variant in variants:
            readout, kind = variant.split("/")
            if kind != "full":
                self.pairs[variant] = f"{readout}/full"
        if not self.pairs:
            raise ValueError(f"no variant to compare with the full output among {list(variants)}")
        self.metrics = nn.ModuleDict({module_key(variant): LinearCKA(hidden_size) for variant in self.pairs})

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        for variant, reference in self.pairs.items():
            self._metric(variant).update(decomposition[reference], decomposition[variant])

    def compute(self) -> dict[str, float]:
        results = {}
        for variant in self.pairs:
            metric = self._metric(variant)
            for estimator in self.estimators:
                results[f"{estimator}/{variant}"] = metric.compute_estimate(
                    estimator == "cka_debiased"
                ).item()
        return results

    def _metric(self, variant: str) -> LinearCKA:
        return cast(LinearCKA, self.metrics[module_key(variant)])
