"""What a call of the backbone computes besides the decomposition (docs/design.md#the-seam), each an
`harness.Extra` that plugs into the backbone's taps and runs its own passes: `Depth` (the [CLS] update
of chosen blocks), `HeadTerms` (its per-head terms), `Deletion` (deletion passes), `Intervention` (a
pass under an intervention), `AttributionMaps` (attribution maps and their scores) and
`RegisterNeurons` (the MLP neurons that make high-norm tokens). The core
imports none of them.

Importing the package imports none of them: each name below loads its submodule on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from harness.extras.attribution import MAPS, AttributionMaps, map_names, parse_maps
    from harness.extras.deletion import DELETION_FRACTIONS, DELETION_ORDERS, DELETION_PREFIX, Deletion
    from harness.extras.depth import Depth
    from harness.extras.head_terms import HEADS_PREFIX, HeadTerms, head_prefix
    from harness.extras.interventions import (
        INTERVENTION_PREFIX,
        LEVELS,
        MODES,
        AbsentTargetError,
        Intervention,
        ReferenceStatistics,
        parse_intervention,
    )
    from harness.extras.register_neurons import (
        REGISTER_NEURONS_PREFIX,
        NeuronScores,
        RegisterNeurons,
        neurons_by_block,
        ranked_neurons,
    )
    from harness.extras.scores import ClassScores

_SUBMODULES: dict[str, tuple[str, ...]] = {
    "attribution": ("MAPS", "AttributionMaps", "map_names", "parse_maps"),
    "deletion": ("DELETION_FRACTIONS", "DELETION_ORDERS", "DELETION_PREFIX", "Deletion"),
    "depth": ("Depth",),
    "head_terms": ("HEADS_PREFIX", "HeadTerms", "head_prefix"),
    "interventions": (
        "INTERVENTION_PREFIX",
        "LEVELS",
        "MODES",
        "AbsentTargetError",
        "Intervention",
        "ReferenceStatistics",
        "parse_intervention",
    ),
    "register_neurons": (
        "REGISTER_NEURONS_PREFIX",
        "NeuronScores",
        "RegisterNeurons",
        "neurons_by_block",
        "ranked_neurons",
    ),
    "scores": ("ClassScores",),
}
"""Submodule -> the names the package exports from it."""

__all__ = [
    "DELETION_FRACTIONS",
    "DELETION_ORDERS",
    "DELETION_PREFIX",
    "HEADS_PREFIX",
    "INTERVENTION_PREFIX",
    "LEVELS",
    "MAPS",
    "MODES",
    "REGISTER_NEURONS_PREFIX",
    "AbsentTargetError",
    "AttributionMaps",
    "ClassScores",
    "Deletion",
    "Depth",
    "HeadTerms",
    "Intervention",
    "NeuronScores",
    "ReferenceStatistics",
    "RegisterNeurons",
    "head_prefix",
    "map_names",
    "neurons_by_block",
    "parse_intervention",
    "parse_maps",
    "ranked_neurons",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _SUBMODULES)
