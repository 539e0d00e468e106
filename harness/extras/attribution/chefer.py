"""`chefer` (Chefer et al. 2021, "Generic attention-model explainability"): R = I, then for every
block R <- R + E_h[(grad A_l * A_l)^+] R, with the gradient of the target (`gradient_target`) with
respect to the attention weights the block used, from the call's one gradient pass
(`MapCall.attention`, `MapCall.attention_gradient`); the [CLS] row of R over the patches."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.extras.attribution.maps import AttributionMap, MapCall


def chefer_step(relevance: Tensor | None, attention: Tensor, gradient: Tensor) -> Tensor:
    """R <- R + E_h[(grad A * A)^+] R: one block of Chefer et al.'s relevance (R = I before the first)."""
    weighted = (gradient * attention).clamp_min(0).mean(dim=1)  # batch, tokens, tokens
    if relevance is None:
        relevance = torch.eye(attention.shape[-1], device=attention.device).expand_as(weighted)
    return relevance + weighted @ relevance


class CheferMap(AttributionMap):
    name = "chefer"
    reads_cls_rows = True  # relevance read from the [CLS] row of every block
    position = 30
    description = (
        "Chefer et al. 2021: R += E_h[(grad A * A)^+] R per block, the gradient through the model's own pass"
    )

    def attribute(self, call: MapCall) -> Tensor:
        relevance: Tensor | None = None
        for number in range(1, call.backbone.info.num_layers + 1):
            relevance = chefer_step(relevance, call.attention(number), call.attention_gradient(number))
        assert relevance is not None  # the model has blocks
        return relevance[:, 0, call.layout.slice("patch")]
