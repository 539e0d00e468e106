"""What every probe is: a module fed the `Decomposition` of each batch, reduced across ranks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

from torch import Tensor, nn
from torchmetrics import Metric

PIXELS = "pixels"
"""The batch's normalised images (batch, 3, H, W), next to the decomposition's names."""


class Probe(nn.Module, ABC):
    """Consumes decompositions batch by batch; `compute` gives results under DESIGN.md names.

    Subclasses hold torchmetrics Metrics as attributes, so states move with the module's
    device and reduce across DDP ranks in `compute`.
    """

    name: str
    needs_labels: bool = False
    needs_pixels: bool = False
    """True for probes that read the batch's images (`PIXELS` in the mapping `update` gets); they
    cannot be re-run from saved features."""

    @abstractmethod
    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        """Add one batch: its decomposition, labels (-1 when unlabelled) and dataset indices.

        The decomposition mapping also holds `PIXELS`, the batch's normalised images, when the
        backbone ran (not when features are replayed)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Results of everything seen, synchronised across ranks, keyed by DESIGN.md names."""

    def arrays(self) -> dict[str, Tensor]:
        """Non-scalar results (histograms, per-image values, gallery images), synchronised like
        `compute` and called after it; none by default."""
        return {}

    def reset(self) -> None:
        """Forget everything seen."""
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()


def module_key(name: str) -> str:
    """A DESIGN.md name as an `nn.ModuleDict` key (which may not hold '/' or '.')."""
    return name.replace("/", "__")


def update_probes(
    probes: Iterable[Probe],
    decomposition: Mapping[str, Tensor],
    pixels: Tensor,
    labels: Tensor,
    indices: Tensor,
) -> None:
    """Feed one batch to every probe: its decomposition, with the batch's images under `PIXELS`."""
    inputs = {**decomposition, PIXELS: pixels}  # references only: no tensor is copied
    for probe in probes:
        probe.update(inputs, labels, indices)
