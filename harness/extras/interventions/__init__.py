"""Interventions that test the paper's conclusion with fair ablations (docs/design.md, Interventions):
a token group's states, the [CLS] skip stream, or a group's contribution to the [CLS] update replaced
at chosen blocks (`Intervention`, an extra), the model's output read again. Its levels and modes
register themselves by name (`LEVELS`, `MODES`); importing this package imports every module in it,
so a new mode or level is one file here.
"""

from __future__ import annotations

from common.lazy import import_every_module
from harness.extras.interventions.intervention import (
    INTERVENTION_PREFIX,
    LEVELS,
    MODES,
    TARGETS,
    AbsentTargetError,
    Intervention,
    Level,
    Mode,
    parse_intervention,
)
from harness.extras.interventions.reference import DEFAULT_BANK_SIZE, ReferenceKey, ReferenceStatistics

import_every_module(__name__, __path__)

__all__ = [
    "DEFAULT_BANK_SIZE",
    "INTERVENTION_PREFIX",
    "LEVELS",
    "MODES",
    "TARGETS",
    "AbsentTargetError",
    "Intervention",
    "Level",
    "Mode",
    "ReferenceKey",
    "ReferenceStatistics",
    "parse_intervention",
]
