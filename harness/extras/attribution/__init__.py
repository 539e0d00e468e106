"""Attribution maps over the patches, scored by the same causal tests (issue 22): every map is a class
of this package that registers itself by name (`MAPS`, `AttributionMap`); importing the package
imports every module in it, so a new map is one file here. `AttributionMaps` is the extra that
computes and scores the chosen ones (`harness.extras.attribution.scoring`)."""

from __future__ import annotations

from common.lazy import import_every_module
from harness.extras.attribution.maps import MAPS, AttributionMap, MapCall, gradient_target, map_names
from harness.extras.attribution.scoring import (
    ATTRIBUTION_PREFIX,
    CONTROL,
    EVERY_HEAD,
    EXPLAINED,
    HEAD_MAP,
    HEAD_ORDERS,
    MAP_ORDERS,
    SCORE_FRACTIONS,
    SCORES,
    AttributionMaps,
    head_map_names,
    parse_maps,
    rank_agreement,
)

import_every_module(__name__, __path__)

__all__ = [
    "ATTRIBUTION_PREFIX",
    "CONTROL",
    "EVERY_HEAD",
    "EXPLAINED",
    "HEAD_MAP",
    "HEAD_ORDERS",
    "MAPS",
    "MAP_ORDERS",
    "SCORES",
    "SCORE_FRACTIONS",
    "AttributionMap",
    "AttributionMaps",
    "MapCall",
    "gradient_target",
    "head_map_names",
    "map_names",
    "parse_maps",
    "rank_agreement",
]
