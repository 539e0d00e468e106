"""`attention`: the last block's [CLS] attention over the patches, mean over heads (the paper's map,
`map/attention`). Each head's own map (`attention_head{h}`) is scored when asked
(`AttributionMaps(heads=...)`)."""

from __future__ import annotations

from torch import Tensor

from harness.extras.attribution.maps import AttributionMap, MapCall


class AttentionMap(AttributionMap):
    name = "attention"
    position = 10
    description = "the last block's [CLS] attention over the patches, mean over heads (the paper's map)"

    def attribute(self, call: MapCall) -> Tensor:
        return call.patch_attention.mean(dim=1)
