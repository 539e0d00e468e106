"""`integrated_gradients` (Sundararajan et al. 2017, through captum): the target's integrated
gradients along the straight path from a zero image in normalised space (every pixel at the
normalisation's mean colour: the data's mean, not black) to the image, summed over the channels and
the pixels of each patch (signed, so the patches sum to the target's change along the path);
`INTEGRATION_STEPS` gradient passes (one batched pass of steps x images)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.extras.attribution.maps import AttributionMap, MapCall, gradient_target

INTEGRATION_STEPS = 32
"""Gauss-Legendre steps of the integrated gradients (captum's default method)."""


class IntegratedGradientsMap(AttributionMap):
    name = "integrated_gradients"
    signed = True  # a patch may lower the target
    position = 40
    description = (
        "Sundararajan et al. 2017 through captum, from the data's mean colour, summed over each patch"
    )

    def attribute(self, call: MapCall) -> Tensor:
        from captum.attr import IntegratedGradients  # only this map needs it

        backbone, clean = call.backbone, call.capture.pooled.detach()
        direction = nn.functional.normalize(clean, dim=-1)
        explained = call.explained
        if explained is None:  # captum repeats every extra argument along the path: a tensor each
            explained = torch.zeros(clean.shape[0], dtype=torch.long, device=clean.device)

        def target(pixels: Tensor, direction: Tensor, explained: Tensor) -> Tensor:
            pooled = backbone.pooled(pixels)
            if call.class_scores is None:
                return (pooled * direction).sum(dim=-1)
            return gradient_target(pooled, call.class_scores, explained)

        with torch.enable_grad(), torch.inference_mode(False):
            pixels = call.pixel_values.detach().clone()
            attributions = IntegratedGradients(target).attribute(
                pixels, baselines=torch.zeros_like(pixels), additional_forward_args=(direction, explained),
                n_steps=INTEGRATION_STEPS,
            )  # fmt: skip
        patch, layout = backbone.patch_size, call.layout
        per_pixel = attributions.detach().float().sum(dim=1)  # batch, height, width
        cells = per_pixel.view(-1, layout.grid_height, patch, layout.grid_width, patch).sum(dim=(2, 4))
        return cells.flatten(1)
