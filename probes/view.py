"""What a probe's figures read of a finished run: the results, arrays and backbone facts that
`cls_decoupling.outputs.Run` holds (a Protocol here, so probes sit below the outputs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from torch import Tensor

from harness import BackboneInfo


class RunView(Protocol):
    """A finished run as its figures read it."""

    @property
    def results(self) -> Mapping[str, float]: ...

    @property
    def arrays(self) -> Mapping[str, Tensor]: ...

    @property
    def info(self) -> BackboneInfo:
        """The backbone that ran."""
        ...

    @property
    def backbone(self) -> str: ...

    @property
    def num_images(self) -> int: ...

    @property
    def num_layers(self) -> int: ...

    @property
    def num_registers(self) -> int: ...

    @property
    def num_distillation(self) -> int: ...

    @property
    def num_classes(self) -> int:
        """Classes of the evaluated data (0 when unlabelled)."""
        ...

    @property
    def resolution(self) -> int: ...

    @property
    def variants(self) -> tuple[str, ...]:
        """Every `{readout}/{variant}` the run's backbone produces, in canonical order."""
        ...

    @property
    def interventions(self) -> tuple[str, ...]:
        """The names of the run's interventions (`Intervention.name`), in the order given."""
        ...


class ComparedView(Protocol):
    """One run of a comparison and its label in figures and tables."""

    @property
    def label(self) -> str: ...

    @property
    def run(self) -> RunView: ...
