"""The two maps read off the exact decomposition of the last [CLS] update, from the clean pass:

- `value_weighted` (Kobayashi et al. 2020): ||c_j||, the norm of patch j's contribution to the last
  [CLS] update, c_j = gamma1 W_o concat_h(a^h_j v^h_j) (the patch group's c_patch = sum_j c_j);
- `contribution`: <c_j, u>, c_j projected on the direction u of the update (`attention/full`): the
  signed share of the update each patch makes (they sum, with the other groups' and the bias's, to
  ||attention/full||). The reference every map's rank agreement is measured against.
"""

from __future__ import annotations

from torch import Tensor

from harness.extras.attribution.maps import AttributionMap, MapCall


class ValueWeightedMap(AttributionMap):
    name = "value_weighted"
    position = 50
    description = (
        "Kobayashi et al. 2020: the norm of each patch's exact contribution to the last [CLS] update"
    )

    def attribute(self, call: MapCall) -> Tensor:
        return call.patch_terms[0].norm(dim=-1)


class ContributionMap(AttributionMap):
    name = "contribution"
    signed = True  # a patch may write against the update
    position = 60
    description = "each patch's exact contribution projected on the direction of the last [CLS] update"

    def attribute(self, call: MapCall) -> Tensor:
        terms, direction = call.patch_terms
        return (terms * direction.unsqueeze(1)).sum(dim=-1)
