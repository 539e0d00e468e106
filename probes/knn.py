"""k-NN probe (DINOv2's protocol): a bank of `output/full` of labelled training images, queried by
every variant of the evaluated images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from probes.base import Headline, KnnBank, Probe, ProbeContext
from probes.metrics.knn import KNN_K, KNN_TEMPERATURE, knn_votes
from probes.metrics.topk import TopKAccuracy
from probes.plotting import NameOf, accuracy_bars, named, variant_sweep
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_K = (1, 5)
SHOWN_K = 20
"""The neighbours of the figures and the headline: DINOv2's reported k-NN setting."""


class KnnProbe(Probe):
    """Weighted k-NN top-1 / top-5 accuracy of every output variant against a bank of `output/full`.

    Results: `knn/{readout}/{variant}/k{k}/top{1,5}` for k in (10, 20, 100, 200) and
    `knn/bank_images`. Every rank holds the whole bank and scores its own queries; the counts are
    summed, so N devices give one device's numbers.
    """

    bank: Tensor
    bank_labels: Tensor

    name = "knn"
    position = 130
    needs_labels = True
    under_interventions = "outputs"
    needs_bank = True
    TOP_K: ClassVar[tuple[int, ...]] = TOP_K
    KS: ClassVar[tuple[int, ...]] = KNN_K
    BANK_IMAGES: ClassVar[str] = "knn/bank_images"

    @staticmethod
    def result_name(variant: str, k: int, top: int) -> str:
        """`knn/{readout}/{variant}/k{k}/top{top}`."""
        return f"knn/{variant}/k{k}/top{top}"

    @classmethod
    def from_context(cls, context: ProbeContext) -> KnnProbe:
        if context.bank is None:
            raise ValueError("the knn probe needs a bank of training features (--train-data)")
        return cls(context.output_variants, context.bank, len(context.class_names))

    def __init__(self, variants: Sequence[str], bank: KnnBank, num_classes: int,
                 temperature: float = KNN_TEMPERATURE) -> None:  # fmt: skip
        super().__init__()
        self.variants, self.num_classes, self.temperature = tuple(variants), num_classes, temperature
        self.register_buffer(
            "bank", torch.nn.functional.normalize(bank.features.float(), dim=-1), persistent=False
        )
        self.register_buffer("bank_labels", bank.labels.long(), persistent=False)
        names = [f"{variant}/k{k}" for variant in self.variants for k in KNN_K]
        self.metric = TopKAccuracy(names, tuple(min(top, num_classes) for top in TOP_K))

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        queries = torch.cat([decomposition[variant] for variant in self.variants])  # variants x batch
        votes = knn_votes(queries, self.bank, self.bank_labels, self.num_classes, KNN_K, self.temperature)
        batch = labels.shape[0]
        # (ks, variants x batch, classes) -> (variants x ks, batch, classes), the metric's name order
        scores = votes.view(len(KNN_K), len(self.variants), batch, -1).transpose(0, 1)
        self.metric.update(scores.reshape(-1, batch, self.num_classes), labels)

    def compute(self) -> dict[str, float]:
        computed = list(self.metric.compute().values())  # variants x ks x tops, in that order
        names = [self.result_name(v, k, top) for v in self.variants for k in KNN_K for top in TOP_K]
        results = {name: value.item() for name, value in zip(names, computed, strict=True)}
        return {self.BANK_IMAGES: float(self.bank.shape[0]), **results}

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (cls.result_name("output/patch", SHOWN_K, 1),
             f"{SHOWN_K}-NN top-1 accuracy of the patch-only output against a bank of full outputs"),
        )  # fmt: skip

    @classmethod
    def top1_name(cls) -> tuple[NameOf, None]:
        """A variant's top-1 result at `SHOWN_K` neighbours (no std: one bank)."""
        return (lambda variant: cls.result_name(variant, SHOWN_K, 1)), None

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Weighted k-NN top-1 accuracy of each output variant against the bank of full outputs (a
        variant close to chance carries little of what the full output says about the class)."""
        bank = int(run.results.get(cls.BANK_IMAGES, 0))
        title = (
            f"{SHOWN_K}-NN top-1 accuracy against {bank} training images' output/full, "
            f"{run.num_classes} classes"
        )
        return named("knn.png", accuracy_bars(run, cls.top1_name(), 1, run.num_classes, title))

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """k-NN top-1 accuracy of each output variant per model."""
        title = f"{SHOWN_K}-NN top-1 accuracy of each variant against a bank of output/full, per model"
        figure = variant_sweep(compared, cls.top1_name(), title, "top-1 accuracy", (0, 1.05))
        return named("compare_knn.png", figure)
