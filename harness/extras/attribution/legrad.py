"""`legrad` (Bousselham et al. 2024, "LeGrad: an explainability method for vision transformers via
feature formation sensitivity"): per block l, the positive part of the gradient of the target with
respect to the block's attention weights, (dA^l)^+ with dA^l = d target / d A^l, averaged over the
heads and over the query rows; those maps averaged over the blocks; read at the patch columns.

The gradient is the call's one gradient pass (`MapCall.attention_gradient`, shared with `chefer`); the
target is every gradient map's (`gradient_target`: the class the full image is given, else the
output's projection on its own direction), the same for every block. The authors' code differs in two
ways a reader comparing numbers should know: it scores each block's own tokens through the model's
final norm and projection (a target per block), and by default reads only the last blocks; its final
min-max scaling changes no ranking, so no score here.
"""

from __future__ import annotations

from torch import Tensor

from harness.extras.attribution.maps import AttributionMap, MapCall


class LeGradMap(AttributionMap):
    name = "legrad"
    reads_cls_rows = True  # relevance read from the [CLS] row of every block
    position = 35
    description = (
        "Bousselham et al. 2024: the positive gradient of the target w.r.t. each block's attention, averaged"
    )

    def attribute(self, call: MapCall) -> Tensor:
        blocks = call.backbone.info.num_layers
        total: Tensor | None = None
        for number in range(1, blocks + 1):
            gradient = call.attention_gradient(number)  # batch, heads, queries, keys
            block = gradient.clamp_min(0).mean(dim=(1, 2))  # batch, keys
            total = block if total is None else total + block
        assert total is not None  # the model has blocks
        return total[:, call.layout.slice("patch")] / blocks
