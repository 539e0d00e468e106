"""DINOv2's evaluation transform: Resize(256, bicubic) -> CenterCrop(224) -> ImageNet mean/std."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 224
_RESIZE_RATIO = 256 / 224


def resize_size(resolution: int) -> int:
    """Shorter side before the centre crop: resolution * 256 / 224 (256 at 224 px)."""
    return round(resolution * _RESIZE_RATIO)


def evaluation_transform(resolution: int = DEFAULT_RESOLUTION) -> transforms.Compose:
    """PIL image -> normalised (3, resolution, resolution) tensor.

    The shorter side is resized to resolution * 256 / 224 (256 at 224 px), then centre-cropped.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return transforms.Compose(
        [
            transforms.Resize(resize_size(resolution), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(resolution),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def to_uint8_image(pixels: Tensor) -> Tensor:
    """Normalised (..., 3, H, W) pixels back to uint8 RGB, the inverse of the transform's last two steps."""
    # channel by channel with Python numbers: a mean/std tensor made here would be copied from the
    # host to the pixels' device, which makes the host wait for the device
    channels = [
        pixels[..., channel, :, :].float() * std + mean
        for channel, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    ]
    return torch.stack(channels, dim=-3).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
