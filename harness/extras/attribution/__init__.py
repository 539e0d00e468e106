"""Attribution maps over the patches, scored by the same causal tests (issue 22): every map is a class
of this package that registers itself by name (`MAPS`, `AttributionMap`); importing the package
imports every module in it, so a new map is one file here. `AttributionMaps` is the extra that
computes and scores the chosen ones (`harness.extras.attribution.scoring`), by removing patches or, as
Chefer et al.'s test does, blacking out pixels (`harness.extras.attribution.pixels`)."""

from __future__ import annotations

from common.lazy import import_every_module
from harness.extras.attribution.maps import MAPS, AttributionMap, MapCall, gradient_target, map_names
from harness.extras.attribution.pixels import (
    PIXEL_FRACTIONS,
    PIXEL_ORDERS,
    PIXEL_SCORE,
    black_pixel,
    pixel_area,
    upsampled,
)
from harness.extras.attribution.scoring import (
    ATTRIBUTION_PREFIX,
    CONTROL,
    EVERY_HEAD,
    EXPLAINED,
    HEAD_MAP,
    HEAD_ORDERS,
    HEAD_PIXEL_ORDERS,
    MAP_ORDERS,
    PERTURBATIONS,
    SCORE_FRACTIONS,
    SCORES,
    AttributionMaps,
    head_map_names,
    parse_maps,
    parse_perturbations,
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
    "HEAD_PIXEL_ORDERS",
    "MAPS",
    "MAP_ORDERS",
    "PERTURBATIONS",
    "PIXEL_FRACTIONS",
    "PIXEL_ORDERS",
    "PIXEL_SCORE",
    "SCORES",
    "SCORE_FRACTIONS",
    "AttributionMap",
    "AttributionMaps",
    "MapCall",
    "black_pixel",
    "gradient_target",
    "head_map_names",
    "map_names",
    "parse_maps",
    "parse_perturbations",
    "pixel_area",
    "rank_agreement",
    "upsampled",
]
