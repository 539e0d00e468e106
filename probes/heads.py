"""Heads probe: which attention heads write each group's term of the [CLS] update, and how few of
them carry the update (docs/design.md#per-head-terms)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from harness import BackboneInfo
from harness.extras.head_terms import HeadTerms, head_prefix
from probes.base import Headline, Probe, ProbeContext
from probes.metrics.stats import ColumnStats
from probes.plotting import GROUP_LABELS, run_title, subplots
from probes.view import ComparedView, RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CARRYING_SHARE = 0.9
"""The share of the update a carrying set of heads reaches."""


def projection_shares(terms: Tensor, total: Tensor) -> Tensor:
    """Each part's projection on the total as a share of it, t_h . s / ||s||^2 (parts on dim 1, the
    vector on the last): additive, so the shares of all parts sum to 1; 0 where the total is 0.

    >>> projection_shares(torch.tensor([[[1.5, 1.0], [0.5, -1.0]]]), torch.tensor([[2.0, 0.0]])).tolist()
    [[0.75, 0.25]]
    """
    squared = total.square().sum(-1, keepdim=True)  # ..., 1
    dots = (terms * total.unsqueeze(1)).sum(-1)
    return torch.where(squared > 0, dots / squared.clamp_min(1e-30), 0.0)


def carrying_sets(shares: Tensor, reach: float = CARRYING_SHARE) -> tuple[Tensor, Tensor]:
    """The smallest set of heads whose projection shares (images, heads), summing to 1 per image,
    reach `reach`: the heads of the largest shares, taken in order until their sum reaches it (exact:
    no k heads sum to more than the k largest). Returns each image's set size (images,) and
    membership (images, heads) as 0 / 1.

    >>> sizes, members = carrying_sets(torch.tensor([[0.5, -0.1, 0.45, 0.15]]))
    >>> sizes.tolist(), members.tolist()
    ([2], [[1.0, 0.0, 1.0, 0.0]])
    """
    ordered, order = shares.sort(dim=1, descending=True)
    short = ordered.cumsum(dim=1) < reach
    sizes = (short.sum(dim=1) + 1).clamp_max(shares.shape[1])
    ranks = torch.arange(shares.shape[1], device=shares.device)
    members = torch.zeros_like(shares).scatter(1, order, (ranks < sizes.unsqueeze(1)).to(shares.dtype))
    return sizes, members


class HeadsProbe(Probe):
    """Per head, over images: the share of each group's contribution it writes, its attention mass on
    the group, the cosine of its whole term to the update and its share of the update; per image, the
    smallest set of heads whose terms reach 90 % of the update. At the last block and at every block
    of `--layers`.

    A head's share of a term s is its projection on s, t_h . s / ||s||^2, so the heads' shares sum to
    1 (a head writing against the term has a negative share). The update is the heads' terms summed
    (the output projection's bias belongs to no head).

    Results (prefix P = `heads/` at the last block, `heads/layer{l}/` at block l):
    `P carrying` (+ `/std`): heads in an image's carrying set, mean over images; `P carrying_set`:
    heads whose mean shares of the update reach 90 %; `P top_head` (1-based) and `P top_update`: the
    head of the largest mean share of the update and that share; `P top_share/{group}`: the largest
    mean share of the group's term any head writes.
    Arrays: `P share` and `P mass` (heads, groups) with `/std`, `P cosine` and `P update` (heads,)
    with `/std`, and `P in_set` (heads,): the fraction of images whose carrying set holds the head.

    Args:
        blocks: the blocks read (1-based, ascending; the last one included).
        num_layers: the model's blocks.
        num_heads: attention heads per block.
        groups: the model's token groups.
    """

    name = "heads"
    position = 105
    needs_pixels = True  # per-head terms come from the backbone's pass: saved features hold none
    QUANTITIES: ClassVar[tuple[str, ...]] = ("share", "mass", "cosine", "update", "in_set", "carrying")

    @staticmethod
    def result_prefix(block: int, num_layers: int) -> str:
        """Where the results of block `block` sit: `heads/` at the last block, else `heads/layer{l}/`.

        >>> HeadsProbe.result_prefix(12, 12), HeadsProbe.result_prefix(3, 12)
        ('heads/', 'heads/layer3/')
        """
        return "heads/" if block == num_layers else f"heads/layer{block}/"

    @classmethod
    def unsupported(cls, info: BackboneInfo) -> str:
        """A readout whose heads are not the blocks' (a pooling head of its own width, the patch
        mean's one): one head count for every block here."""
        if info.heads_read != info.num_heads:
            return (
                f"reads one head count for every block, and {info.name}'s {info.readout} readout has "
                f"{info.heads_read} heads to its blocks' {info.num_heads}"
            )
        return super().unsupported(info)

    @classmethod
    def from_context(cls, context: ProbeContext) -> HeadsProbe:
        info = context.info
        blocks = tuple(sorted({*context.layers, info.num_layers}))
        return cls(blocks, info.num_layers, info.num_heads, info.groups)

    def __init__(self, blocks: Sequence[int], num_layers: int, num_heads: int, groups: Sequence[str]) -> None:
        super().__init__()
        self.blocks, self.num_layers, self.num_heads = tuple(blocks), num_layers, num_heads
        self.groups = tuple(groups)
        heads, width = num_heads, num_heads * len(self.groups)
        self.widths = {"share": width, "mass": width, "cosine": heads, "update": heads, "in_set": heads,
                       "carrying": 1}  # fmt: skip
        self.metric = ColumnStats(len(self.blocks) * sum(self.widths.values()))

    def extras(self) -> tuple[HeadTerms, ...]:
        return (HeadTerms(self.blocks),)

    def block_columns(self, decomposition: Mapping[str, Tensor], block: int) -> dict[str, Tensor]:
        """One block's per-image quantities, each (images, columns) in `widths` order."""
        prefix = head_prefix(block, self.num_layers)
        terms = torch.stack([decomposition[prefix + group].float() for group in self.groups], dim=2)
        masses = torch.stack([decomposition[f"{prefix}split/{group}"] for group in self.groups], dim=2)
        images = terms.shape[0]  # terms: images, heads, groups, hidden
        per_group = terms.transpose(1, 2)  # images, groups, heads, hidden
        shares = projection_shares(per_group.flatten(0, 1), per_group.sum(2).flatten(0, 1))
        whole = terms.sum(2)  # images, heads, hidden: each head's whole term
        update = whole.sum(1)
        update_shares = projection_shares(whole, update)
        sizes, members = carrying_sets(update_shares)
        return {
            "share": shares.view(images, len(self.groups), self.num_heads).transpose(1, 2).flatten(1),
            "mass": masses.flatten(1).float(),
            "cosine": torch.nn.functional.cosine_similarity(whole, update.unsqueeze(1), dim=-1),
            "update": update_shares,
            "in_set": members,
            "carrying": sizes.unsqueeze(1).float(),
        }

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        columns = [self.block_columns(decomposition, block) for block in self.blocks]
        self.metric.update(torch.cat([part[q] for part in columns for q in self.widths], dim=1))

    def _per_block(self) -> dict[int, dict[str, tuple[Tensor, Tensor]]]:
        """block -> quantity -> (mean, std) over images, shaped (heads, groups) or (heads,)."""
        stats = self.metric.compute()
        means, stds = torch.atleast_1d(stats["mean"]), torch.atleast_1d(stats["std"])
        found: dict[int, dict[str, tuple[Tensor, Tensor]]] = {}
        start = 0
        for block in self.blocks:
            found[block] = {}
            for quantity, width in self.widths.items():
                shape = (self.num_heads, len(self.groups)) if quantity in ("share", "mass") else (width,)
                part = slice(start, start + width)
                found[block][quantity] = (means[part].view(shape), stds[part].view(shape))
                start += width
        return found

    def compute(self) -> dict[str, float]:
        results: dict[str, float] = {}
        for block, quantities in self._per_block().items():
            prefix = self.result_prefix(block, self.num_layers)
            carrying, carrying_std = quantities["carrying"]
            update = quantities["update"][0]
            data_level, _ = carrying_sets(update.unsqueeze(0))  # the same rule on the mean shares
            share = quantities["share"][0]
            results |= {
                prefix + "carrying": carrying.item(),
                prefix + "carrying/std": carrying_std.item(),
                prefix + "carrying_set": float(data_level[0]),
                prefix + "top_head": float(int(update.argmax()) + 1),
                prefix + "top_update": update.max().item(),
                **{f"{prefix}top_share/{g}": share[:, i].max().item() for i, g in enumerate(self.groups)},
            }
        return results

    def arrays(self) -> dict[str, Tensor]:
        found: dict[str, Tensor] = {}
        for block, quantities in self._per_block().items():
            prefix = self.result_prefix(block, self.num_layers)
            for quantity in ("share", "mass", "cosine", "update"):
                mean, std = quantities[quantity]
                found |= {prefix + quantity: mean, f"{prefix}{quantity}/std": std}
            found[prefix + "in_set"] = quantities["in_set"][0]
        return found

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return (
            (
                "heads/carrying",
                "heads whose terms reach 90 % of the last block's [CLS] update, per image (mean)",
            ),
            ("heads/top_update", "the largest mean share of that update one head writes"),
        )

    @classmethod
    def blocks_of(cls, run: RunView) -> list[int]:
        """The blocks (1-based) with heads results, in order."""
        layers = run.num_layers
        return [
            block
            for block in range(1, layers + 1)
            if cls.result_prefix(block, layers) + "share" in run.arrays
        ]

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """Per block, a heads x groups map of each head's share of the group's term; and one blocks x
        heads map of each head's share of the update, the carrying set's heads outlined."""
        blocks = cls.blocks_of(run)
        if not blocks:
            return {}
        layers, groups = run.num_layers, run.info.groups
        columns = min(len(blocks), 4)
        rows = math.ceil(len(blocks) / columns)
        heads = run.arrays[cls.result_prefix(blocks[0], layers) + "share"].shape[0]
        size = (2.2 + 1.1 * len(groups) * columns, max(3.2, 0.8 + (0.9 + 0.22 * heads) * rows))
        figure, axes = subplots(rows, columns, figsize=size, squeeze=False)
        for axis in axes.flat[len(blocks) :]:
            axis.set_visible(False)
        for axis, block in zip(axes.flat, blocks, strict=False):
            prefix = cls.result_prefix(block, layers)
            share = run.arrays[prefix + "share"].numpy()
            bound = max(float(np.abs(share).max()), 1e-6)
            image = axis.imshow(share, cmap="RdBu_r", norm=TwoSlopeNorm(0, -bound, bound), aspect="auto")
            axis.set_xticks(range(len(groups)), [GROUP_LABELS[g] for g in groups], fontsize=7)
            axis.set_yticks(range(heads), [str(h + 1) for h in range(heads)], fontsize=6)
            axis.set_ylabel("head")
            carrying = run.results.get(prefix + "carrying", float("nan"))
            axis.set_title(f"block {block}: {carrying:.1f} heads carry 90 %", fontsize=8)
            figure.colorbar(image, ax=axis, fraction=0.046).set_label("share of the group's term", fontsize=7)
        figure.suptitle(
            f"Which heads write each group's term of the [CLS] update (mean over images)\n{run_title(run)}",
            fontsize=10,
        )
        figure.tight_layout()
        return {"heads.png": figure, **cls._update_figure(run, blocks)}

    @classmethod
    def comparison_figures(cls, compared: Sequence[ComparedView]) -> dict[str, Figure]:
        """Across models: how few heads carry the last block's [CLS] update. Per model, the heads'
        mean shares of the update, largest first, summed: the curve crosses 90 % at the size of the
        carrying set of the mean shares (`carrying_set`)."""
        shown = [item for item in compared if "heads/update" in item.run.arrays]
        if not shown:
            return {}
        figure, axis = subplots(figsize=(6.5, 4.0))
        for item in shown:
            shares = np.sort(item.run.arrays["heads/update"].numpy())[::-1]
            heads = np.arange(1, len(shares) + 1)
            carrying = item.run.results.get("heads/carrying", float("nan"))
            axis.plot(heads, np.cumsum(shares), marker="o", markersize=3,
                      label=f"{item.label} ({carrying:.1f} heads per image)")  # fmt: skip
        axis.axhline(CARRYING_SHARE, color="grey", linewidth=0.8, linestyle="--")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("heads, largest mean share of the update first")
        axis.set_ylabel("their summed share of the update")
        axis.legend(fontsize=7)
        axis.set_title(
            "How few heads carry the last block's [CLS] update, per model\n"
            "(dashed: 90 %; in brackets: the mean per-image carrying set)",
            fontsize=9,
        )
        figure.tight_layout()
        return {"compare_heads.png": figure}

    @classmethod
    def _update_figure(cls, run: RunView, blocks: list[int]) -> dict[str, Figure]:
        layers = run.num_layers
        update = np.stack(
            [run.arrays[cls.result_prefix(block, layers) + "update"].numpy() for block in blocks]
        )
        in_set = np.stack(
            [run.arrays[cls.result_prefix(block, layers) + "in_set"].numpy() for block in blocks]
        )
        heads = update.shape[1]
        figure, axis = subplots(figsize=(max(6.5, 2.5 + 0.35 * heads), max(3.2, 1.8 + 0.35 * len(blocks))))
        bound = max(float(np.abs(update).max()), 1e-6)
        image = axis.imshow(update, cmap="RdBu_r", norm=TwoSlopeNorm(0, -bound, bound), aspect="auto")
        for row, column in zip(*np.nonzero(in_set >= 0.5), strict=True):
            axis.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, linewidth=1.2))
        axis.set_xticks(range(heads), [str(h + 1) for h in range(heads)], fontsize=7)
        axis.set_yticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
        axis.set_xlabel("head")
        axis.set_ylabel("block")
        figure.colorbar(image, ax=axis, fraction=0.046).set_label("share of the update (mean)", fontsize=8)
        figure.suptitle(
            "Each head's share of the [CLS] update (mean over images)\n"
            "outlined: in the smallest set reaching 90 % of the update in most images\n" + run_title(run),
            fontsize=9,
        )
        figure.tight_layout()
        return {"heads_update.png": figure}
