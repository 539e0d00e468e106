"""Evaluation transforms: DINOv2's Resize(256, bicubic) -> CenterCrop(224) -> ImageNet mean/std by
default, or another family's (`Preprocessing`, common.preparation: its normalisation and
resize), and their inverse for figures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import transforms

from common.preparation import (
    DINOV2_EVALUATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
)

__all__ = [
    "DEFAULT_RESOLUTION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "evaluation_transform",
    "to_uint8_image",
]

DEFAULT_RESOLUTION = 224


def evaluation_transform(
    resolution: int = DEFAULT_RESOLUTION, preprocessing: Preprocessing = DINOV2_EVALUATION
) -> transforms.Compose:
    """PIL image -> normalised (3, resolution, resolution) tensor: `preprocessing.transform`.

    By default (DINOv2) the shorter side is resized to resolution * 256 / 224 (256 at 224 px), then
    centre-cropped; `preprocessing` gives another family's resize and normalisation.
    """
    return preprocessing.transform(resolution)


def to_uint8_image(
    pixels: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Normalised (..., 3, H, W) pixels back to uint8 RGB, the inverse of the transform's last two steps."""
    # channel by channel with Python numbers: a mean/std tensor made here would be copied from the
    # host to the pixels' device, which makes the host wait for the device
    channels = [
        pixels[..., channel, :, :].float() * channel_std + channel_mean
        for channel, (channel_mean, channel_std) in enumerate(zip(mean, std, strict=True))
    ]
    return torch.stack(channels, dim=-3).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
