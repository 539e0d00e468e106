"""CKA probe (paper Fig 3a, 6): how similar each variant is to the full [CLS] output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from torch import Tensor, nn

from probes.base import Probe, module_key
from probes.cka import LinearCKA


class CKAProbe(Probe):
    """Linear CKA of `{readout}/full` against every other variant of the same readout.

    Results: `cka/{readout}/{variant}` for each variant other than full
    (`cka_debiased/...` with the debiased estimator).

    Args:
        variants: the `{readout}/{variant}` names the backbone produces.
        hidden_size: feature size of every variant.
        debiased: use the debiased CKA estimator.
    """

    def __init__(self, variants: Sequence[str], hidden_size: int, debiased: bool = False) -> None:
        super().__init__()
        self.name = "cka_debiased" if debiased else "cka"
        self.pairs: dict[str, tuple[str, str]] = {}
        for variant in variants:
            readout, kind = variant.split("/")
            if kind != "full":
                self.pairs[f"{self.name}/{variant}"] = (f"{readout}/full", variant)
        if not self.pairs:
            raise ValueError(f"no variant to compare with the full output among {list(variants)}")
        self.metrics = nn.ModuleDict(
            {module_key(name): LinearCKA(hidden_size, debiased=debiased) for name in self.pairs}
        )

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        for name, (reference, variant) in self.pairs.items():
            self._metric(name).update(decomposition[reference], decomposition[variant])

    def compute(self) -> dict[str, float]:
        return {name: self._metric(name).compute().item() for name in self.pairs}

    def _metric(self, name: str) -> LinearCKA:
        return cast(LinearCKA, self.metrics[module_key(name)])
