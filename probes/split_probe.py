"""Split probe (paper Fig 2a): mean, std and histogram of the per-image [CLS] attention split."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from probes.base import Probe
from probes.split import AttentionSplit


class SplitProbe(Probe):
    """Results: `split/{cls,register,patch,register_vs_patch}/{mean,std}` over images.

    Arrays: `split/{group}/histogram` (image counts per bin) and `split/bin_edges`.
    """

    name = "split"

    def __init__(self) -> None:
        super().__init__()
        self.metric = AttentionSplit()

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        self.metric.update(
            decomposition["split/cls"], decomposition["split/register"], decomposition["split/patch"]
        )

    def compute(self) -> dict[str, float]:
        results = {}
        for group, stats in self.metric.compute().items():
            results[f"split/{group}/mean"] = stats.mean.item()
            results[f"split/{group}/std"] = stats.std.item()
        return results

    def arrays(self) -> dict[str, Tensor]:
        arrays = {f"split/{group}/histogram": stats.counts for group, stats in self.metric.compute().items()}
        return {**arrays, "split/bin_edges": self.metric.bin_edges}
