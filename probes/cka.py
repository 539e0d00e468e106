"""CKA probes (paper Fig 3a, 6): how similar each variant is to the full [CLS] output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, cast

import torch
from torch import Tensor, nn

from probes.base import Headline, Probe, ProbeContext, module_key
from probes.metrics.cka import SharedReferenceCKA
from probes.plotting import named, reader_of, variant_bars, variant_sweep
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ESTIMATORS = ("cka", "cka_debiased")
"""Result prefixes: plain linear CKA and the debiased estimator (both from the same moments)."""


class CKAProbe(Probe):
    """Linear CKA of `{readout}/full` against every other variant of the same readout.

    Results: `{estimator}/{readout}/{variant}` for each variant other than full and each
    estimator (`cka`, `cka_debiased`); both estimators read the same streamed moments, so asking
    for both costs no more than one (the registry lets one probe `absorb` the other).

    Args:
        variants: the `{readout}/{variant}` names the backbone produces.
        widths: feature size of every variant (one number), or of each readout's full output.
        estimators: which of `ESTIMATORS` to report.
    """

    name = "cka"
    under_interventions = "decomposition"
    position = 20
    TITLE: ClassVar[str] = "Linear CKA"
    ESTIMATORS: ClassVar[tuple[str, ...]] = ESTIMATORS

    @staticmethod
    def result_name(estimator: str, variant: str) -> str:
        """`{estimator}/{readout}/{variant}`, e.g. `cka/output/patch`."""
        return f"{estimator}/{variant}"

    @classmethod
    def from_context(cls, context: ProbeContext) -> CKAProbe:
        widths = {variant: context.width(variant) for variant in context.variants}
        return cls(context.variants, widths, estimators=(cls.name,))

    def __init__(
        self, variants: Sequence[str], widths: int | Mapping[str, int], estimators: Sequence[str] = ("cka",)
    ) -> None:
        super().__init__()
        unknown = set(estimators) - set(ESTIMATORS)
        if unknown or not estimators:
            raise ValueError(f"estimators must be among {ESTIMATORS}, got {list(estimators)}")
        self.estimators = tuple(estimators)
        self.pairs: dict[str, str] = {}  # variant -> its reference, in the order results are named
        for variant in variants:
            readout, kind = variant.split("/")
            if kind != "full":
                self.pairs[variant] = f"{readout}/full"
        if not self.pairs:
            raise ValueError(f"no variant to compare with the full output among {list(variants)}")
        # one metric per reference: its moments summed once, every variant of its readout batched
        self.compared: dict[str, tuple[str, ...]] = {}
        for variant, reference in self.pairs.items():
            self.compared[reference] = (*self.compared.get(reference, ()), variant)
        self.metrics = nn.ModuleDict(
            {
                module_key(reference): SharedReferenceCKA(
                    widths if isinstance(widths, int) else widths[reference], len(compared)
                )
                for reference, compared in self.compared.items()
            }
        )

    def absorb(self, other: Probe) -> bool:
        if not isinstance(other, CKAProbe) or other.pairs != self.pairs:
            return False
        self.estimators += tuple(e for e in other.estimators if e not in self.estimators)
        return True

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        for reference, compared in self.compared.items():
            features = torch.stack([decomposition[variant] for variant in compared])  # variants, images, dims
            self._metric(reference).update(decomposition[reference], features)

    def compute(self) -> dict[str, float]:
        estimates: dict[tuple[str, str], float] = {}
        for reference, compared in self.compared.items():
            metric = self._metric(reference)
            for estimator in self.estimators:
                values = metric.compute_estimate(estimator == "cka_debiased").tolist()
                estimates |= {
                    (estimator, variant): value for variant, value in zip(compared, values, strict=True)
                }
        return {
            self.result_name(estimator, variant): estimates[estimator, variant]
            for variant in self.pairs
            for estimator in self.estimators
        }

    def _metric(self, reference: str) -> SharedReferenceCKA:
        return cast(SharedReferenceCKA, self.metrics[module_key(reference)])

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (cls.result_name("cka", "output/patch"), "CKA of the patch-only output with the full output"),
            (
                cls.result_name("cka", "output/register"),
                "CKA of the register-only output with the full output",
            ),
            (
                cls.result_name("cka", "output/skip"),
                "CKA of the skip-only (residual) output with the full output",
            ),
        )

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Fig 3a / 6: CKA of the full output with each variant (this class's estimator)."""
        figure = variant_bars(
            run, lambda variant: cls.result_name(cls.name, variant), None,
            f"{cls.TITLE} with the full {reader_of([run])} output (Fig 3a, 6)", "CKA",
        )  # fmt: skip
        if figure is not None:
            for axis in figure.axes:
                axis.set_ylim(0, 1.05)
        return named(f"{cls.name}.png", figure)

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Fig 3a / 6 across models: CKA of the full output with each variant."""
        figure = variant_sweep(
            compared, (lambda variant: cls.result_name(cls.name, variant), None),
            f"{cls.TITLE} with the full {reader_of([c.run for c in compared])} output per model (Fig 3a, 6)",
            "CKA", (0, 1.05),
        )  # fmt: skip
        return named(f"compare_{cls.name}.png", figure)


class DebiasedCKAProbe(CKAProbe):
    """The same as `CKAProbe` with the debiased estimator: `cka_debiased/{readout}/{variant}`."""

    name = "cka_debiased"
    position = 30
    TITLE = "Linear CKA (debiased estimator)"

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return ()  # the plain estimator's are the paper's numbers
