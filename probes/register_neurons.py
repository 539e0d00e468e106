"""Register neurons probe (Jiang et al. 2025; docs/design.md#register-neurons): which tokens of each
image are high-norm outliers, and which MLP neurons make them, over the evaluated images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import Tensor
from torchmetrics import Metric

from harness.extras.register_neurons import (
    DEFAULT_TOP_K,
    REGISTER_NEURONS_PREFIX,
    NeuronScores,
    RegisterNeurons,
    ranked_neurons,
    top_k_for,
)
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.rows import add_row_states, append_rows, gathered_rows
from probes.metrics.stats import ColumnStats
from probes.plotting import run_title, subplots
from probes.view import RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class OutlierRows(Metric):
    """Per image, its outlier mask (tokens,) with its dataset index: one row per distinct index."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        add_row_states(self, ("outliers", "index"))

    def update(self, outliers: Tensor, indices: Tensor) -> None:
        append_rows(self, {"outliers": outliers.to(torch.uint8), "index": indices.long()})

    def compute(self) -> dict[str, Tensor]:
        return gathered_rows(self, ("outliers",))


class RegisterNeuronsProbe(Probe):
    """The register-neuron search (`harness.extras.register_neurons`) over the evaluated images: per
    image, its outliers (tokens whose norm at the detection block exceeds the threshold); over images,
    each neuron's mean absolute activation at them, and the top K neurons ranked over blocks. Opt-in:
    one more pass per batch.

    Results (`register_neurons/`): `images_with_outliers` (fraction), `outliers` (+ `/std`: outliers
    per image), `cls_outlier` (fraction of images whose [CLS] is one), `top_block`, `top_neuron` and
    `top_score` (the highest-ranked neuron), `blocks_with_top` (blocks holding one of the top K),
    `threshold`, `detection_block`, `max_block`. Arrays: `scores` (max_block, mlp width), `ranked`
    (K, 3: block, neuron, score) and `outliers` (images, tokens: 1 at an outlier, in dataset order).

    Args:
        search: the outlier rule and the blocks scored.
        width: the MLP width.
        top_k: register neurons ranked.
    """

    name = "register_neurons"
    position = 106
    needs_pixels = True  # its own pass over the images
    opt_in = True

    @classmethod
    def from_context(cls, context: ProbeContext) -> RegisterNeuronsProbe:
        """The probe for the run's backbone: `context.neuron_search`, else the authors' settings.

        Raises:
            ValueError: no search given and none published for the model, or a backbone record
                without its MLP width (`BackboneInfo.mlp_size`).
        """
        if not context.info.mlp_size:
            raise ValueError("the register_neurons probe needs the MLP width: BackboneInfo.mlp_size is 0")
        search = context.neuron_search or RegisterNeurons.for_model(context.info)
        return cls(search, context.info.mlp_size, top_k_for(context.info, context.neuron_top_k))

    def __init__(self, search: RegisterNeurons, width: int, top_k: int = DEFAULT_TOP_K) -> None:
        super().__init__()
        self.search, self.top_k = search, top_k
        self.scores = NeuronScores(search.max_block, width)
        self.per_image = ColumnStats(2)  # outliers, [CLS] an outlier
        self.rows = OutlierRows()

    def extras(self) -> tuple[RegisterNeurons, ...]:
        return (self.search,)

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        outliers = decomposition[f"{REGISTER_NEURONS_PREFIX}outliers"]
        self.scores.update(decomposition[f"{REGISTER_NEURONS_PREFIX}scores"], outliers)
        self.per_image.update(torch.stack([outliers.sum(dim=1), outliers[:, 0]], dim=1).double())
        self.rows.update(outliers, indices)

    def compute(self) -> dict[str, float]:
        found = self.scores.compute()
        stats = self.per_image.compute()
        ranked = ranked_neurons(found["scores"], self.top_k)
        top = ranked[0] if ranked else None
        prefix, nan = REGISTER_NEURONS_PREFIX, float("nan")
        return {
            prefix + "images_with_outliers": int(found["with_outliers"]) / max(int(found["images"]), 1),
            prefix + "outliers": float(stats["mean"][0]),
            prefix + "outliers/std": float(stats["std"][0]),
            prefix + "cls_outlier": float(stats["mean"][1]),
            prefix + "top_block": float(top.block) if top else nan,
            prefix + "top_neuron": float(top.neuron) if top else nan,
            prefix + "top_score": top.score if top else nan,
            prefix + "blocks_with_top": float(len({item.block for item in ranked})),
            prefix + "threshold": self.search.threshold,
            prefix + "detection_block": float(self.search.detection_block),
            prefix + "max_block": float(self.search.max_block),
        }

    def arrays(self) -> dict[str, Tensor]:
        scores = self.scores.compute()["scores"]
        ranked = ranked_neurons(scores, self.top_k)
        table = torch.tensor([[r.block, r.neuron, r.score] for r in ranked], dtype=torch.float64)
        return {
            REGISTER_NEURONS_PREFIX + "scores": scores.float(),
            REGISTER_NEURONS_PREFIX + "ranked": table.reshape(-1, 3),
            REGISTER_NEURONS_PREFIX + "outliers": self.rows.compute()["outliers"],
        }

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (REGISTER_NEURONS_PREFIX + "outliers", "high-norm outlier tokens per image (mean)"),
            (REGISTER_NEURONS_PREFIX + "top_score", "the top register neuron's mean |activation| at them"),
        )

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """The ranked register neurons' scores per block, and how often each sequence position is an
        outlier."""
        ranked_name, outliers_name = REGISTER_NEURONS_PREFIX + "ranked", REGISTER_NEURONS_PREFIX + "outliers"
        if ranked_name not in run.arrays or outliers_name not in run.arrays:
            return {}
        ranked = run.arrays[ranked_name].numpy()
        share = run.arrays[outliers_name].float().mean(dim=0).numpy()
        figure, (left, right) = subplots(1, 2, figsize=(11, 3.8))
        if len(ranked):
            left.scatter(ranked[:, 0], ranked[:, 2], s=14)
            for block, neuron, score in ranked[:5]:
                left.annotate(
                    f"{int(neuron)}", (block, score), fontsize=7, xytext=(3, 2), textcoords="offset points"
                )
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_xlabel("block")
        left.set_ylabel("mean |activation| at the outliers")
        left.set_title(f"top {len(ranked)} register neurons (top 5 labelled)", fontsize=9)
        right.bar(np.arange(len(share)), share, width=1.0)
        right.set_xlabel("sequence position ([CLS] at 0)")
        right.set_ylabel("share of images")
        right.set_title("where the outliers are", fontsize=9)
        threshold = run.results.get(REGISTER_NEURONS_PREFIX + "threshold", float("nan"))
        block = run.results.get(REGISTER_NEURONS_PREFIX + "detection_block", float("nan"))
        figure.suptitle(
            f"Register neurons: tokens of norm > {threshold:g} at block {block:.0f}\n{run_title(run)}",
            fontsize=10,
        )
        figure.tight_layout()
        return {"register_neurons.png": figure}
