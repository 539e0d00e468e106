"""What every probe is: a module fed the `Decomposition` of each batch, reduced across ranks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from torch import Tensor, nn
from torchmetrics import Metric


class Probe(nn.Module, ABC):
    """Consumes decompositions batch by batch; `compute` gives results under DESIGN.md names.

    Subclasses hold torchmetrics Metrics as attributes, so states move with the module's
    device and reduce across DDP ranks in `compute`.
    """

    name: str
    needs_labels: bool = False

    @abstractmethod
    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        """Add one batch: its decomposition, labels (-1 when unlabelled) and dataset indices."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Results of everything seen, synchronised across ranks, keyed by DESIGN.md names."""

    def reset(self) -> None:
        """Forget everything seen."""
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()


def module_key(name: str) -> str:
    """A DESIGN.md name as an `nn.ModuleDict` key (which may not hold '/' or '.')."""
    return name.replace("/", "__")
