"""Registers probe (paper Fig 2b): the highest-norm token of the penultimate layer, across images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from torch import Tensor

from harness import TokenLayout
from harness.decomposition import PENULTIMATE
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.high_norm import TOP_DIMS, HighNormToken
from probes.plotting import GROUP_COLOURS, models_axis, run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class RegistersProbe(Probe):
    """The highest-norm non-[CLS] token of the penultimate layer (the last block's input) per image.

    Results: `registers/{key}` for each key of `RESULTS` (see `HighNormToken`): share of images whose
    token is a register, its most frequent position and that position's share, mean norms and
    their ratio, mean pairwise cosine across images, mean |activation| of its top-`TOP_DIMS`
    dimensions before and after norm1.
    Arrays: `registers/top_token_counts`, images per position of the highest-norm token.
    """

    name = "registers"
    position = 40
    under_interventions = "decomposition"
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
        layout = context.layout
        return cls(
            context.info.hidden_size, layout.num_tokens, layout.num_registers, layout.slice("register").start,
            layout.num_cls,
        )  # fmt: skip

    def __init__(
        self,
        hidden_size: int,
        num_tokens: int,
        num_registers: int,
        first_register: int = 1,
        first_token: int = 1,
    ) -> None:
        super().__init__()
        self.metric = HighNormToken(
            hidden_size, num_tokens, num_registers, first_register=first_register, first_token=first_token
        )

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(*(decomposition[name] for name in PENULTIMATE))

    def compute(self) -> dict[str, float]:
        computed = self.metric.compute()
        return {self.result_name(key): float(computed[key]) for key in self.RESULTS}

    def arrays(self) -> dict[str, Tensor]:
        return {self.TOP_TOKEN_COUNTS: self.metric.compute()["top_token_counts"]}

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (
                cls.result_name("top_in_registers"),
                "share of images whose highest-norm penultimate token is a register",
            ),
            (cls.result_name("pairwise_cosine"), "mean pairwise cosine of that token across images"),
        )

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Fig 2b: where the highest-norm token of the penultimate layer sits, and its top dimensions
        before and after norm1."""
        if cls.result_name("top_norm") not in run.results:
            return {}
        results = {key: run.results[cls.result_name(key)] for key in cls.RESULTS}
        figure, (where, dims) = subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
        counts = run.arrays.get(cls.TOP_TOKEN_COUNTS)
        if counts is not None:
            layout = TokenLayout.for_image(
                run.resolution, run.resolution, run.info.patch_size, run.num_registers, run.num_distillation
            )
            labels, groups, shares = top_positions(layout, counts.numpy())
            where.bar(range(len(labels)), shares, color=[GROUP_COLOURS.get(g, "#c7c7c7") for g in groups])
            where.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
        where.set_ylim(0, 1)
        where.set_ylabel("share of images")
        where.set_title(
            f"which token has the highest norm (in registers: {results['top_in_registers']:.2f});\n"
            f"its norm / mean norm of the others = {results['norm_ratio']:.2f}",
            fontsize=9,
        )
        before, after = results["top_dims_before"], results["top_dims_after"]
        dims.bar(["before norm1", "after norm1"], [before, after], color=["#d62728", "#ff9896"])
        if min(before, after) > 0 and max(before, after) / min(before, after) > 20:
            dims.set_yscale("log")
        dims.set_ylabel(f"mean |activation| of its top-{min(cls.TOP_DIMS, run.info.hidden_size)} dims")
        dims.set_title(
            f"mean pairwise cosine of the token\nacross images = {results['pairwise_cosine']:.4f}", fontsize=9
        )
        figure.suptitle(
            f"Highest-norm token of the penultimate layer (Fig 2b)\n{run_title(run)}", fontsize=10
        )
        figure.tight_layout()
        return {"registers.png": figure}

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Fig 2b across models: the highest-norm penultimate token: how often a register, how alike
        across images, how large; its top dimensions before and after norm1."""
        if not any(cls.result_name("top_norm") in c.run.results for c in compared):
            return {}
        figure, (shares, ratio, dims) = subplots(1, 3, figsize=(2.4 * len(compared) + 9, 4.0))
        x = np.arange(len(compared))

        def values(key: str) -> list[float]:
            return [c.run.results.get(cls.result_name(key), np.nan) for c in compared]

        shares.plot(x, values("top_in_registers"), marker="o", color=GROUP_COLOURS["register"],
                    linestyle="none", label="share of images where it is a register")  # fmt: skip
        shares.plot(
            x,
            values("pairwise_cosine"),
            marker="s",
            linestyle="none",
            color="black",
            label="mean pairwise cosine across images",
        )
        shares.set_ylim(-1.05, 1.3)
        shares.set_yticks(np.linspace(-1, 1, 5))
        shares.legend(fontsize=7, loc="upper center")
        shares.set_title("which token, and how alike across images", fontsize=9)
        ratios = values("norm_ratio")
        ratio.plot(x, ratios, marker="o", linestyle="none", color="#8c564b")
        if np.isfinite(np.nanmax(ratios)):
            ratio.set_ylim(0, 1.15 * np.nanmax(ratios))
        ratio.set_ylabel("its norm / mean norm of the other tokens")
        ratio.set_title("how much larger than the others", fontsize=9)
        dims.plot(
            x,
            values("top_dims_before"),
            marker="o",
            linestyle="none",
            color=GROUP_COLOURS["register"],
            label="before norm1",
        )
        dims.plot(
            x, values("top_dims_after"), marker="o", linestyle="none", color="#ff9896", label="after norm1"
        )
        dims.set_yscale("log")
        dims.set_ylabel("mean |activation| of its top dims")
        dims.legend(fontsize=7)
        dims.set_title("its largest dimensions", fontsize=9)
        measured = [cls.result_name("top_norm") in c.run.results for c in compared]
        for axis in (shares, ratio, dims):  # markers, no lines: the models are not a sequence
            models_axis(axis, compared, measured)
        figure.suptitle("Highest-norm token of the penultimate layer per model (Fig 2b)", fontsize=10)
        figure.tight_layout()
        return {"compare_registers.png": figure}


def top_positions(
    layout: TokenLayout, counts: np.ndarray, shown: int = 8
) -> tuple[list[str], list[str], list[float]]:
    """Labels, groups and image shares of the most frequent positions (registers by number, patches by
    row and column), the rest summed as "other" (group "other")."""
    order = [int(p) for p in np.argsort(-counts, kind="stable") if counts[p] > 0]
    total = max(counts.sum(), 1)
    labels, groups, shares = [], [], []
    for position in order[:shown]:
        group = layout.group_at(position)
        if group == "register":
            labels.append(f"reg {position - layout.slice('register').start + 1}")
        elif group == "patch":
            row, column = layout.patch_cell(position)
            labels.append(f"patch r{row} c{column}")
        else:
            labels.append(group)
        groups.append(group)
        shares.append(counts[position] / total)
    if len(order) > shown:
        labels.append(f"{len(order) - shown} other tokens")
        groups.append("other")
        shares.append(counts[order[shown:]].sum() / total)
    return labels, groups, shares
