"""Evaluation transforms: DINOv2's Resize(256, bicubic) -> CenterCrop(224) -> ImageNet mean/std by
default, or another family's (`Preprocessing`: its normalisation and resize)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 224
_RESIZE_RATIO = 256 / 224


RESIZES = ("shorter_crop", "square", "square_crop")
INTERPOLATIONS = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a model family prepares an image (its processor's settings).

    Attributes:
        mean, std: the normalisation per RGB channel.
        resize: "shorter_crop" (the shorter side to resolution x `resize_ratio`, then a centre crop:
            DINOv2's evaluation), "square" (straight to resolution x resolution: ViT's processor) or
            "square_crop" (to a square of resolution x `resize_ratio`, then a centre crop: DeiT's
            processor, timm's "squash" crop mode).
        interpolation: "bicubic" or "bilinear".
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "shorter_crop"
    interpolation: str = "bicubic"
    resize_ratio: float = _RESIZE_RATIO
    """Side before the centre crop, relative to the crop (256 / 224 for DINOv2, 1 for CLIP)."""

    def __post_init__(self) -> None:
        if self.resize not in RESIZES or self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown resize {self.resize!r} or interpolation {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got {self.mean}, {self.std}")

    def shorter_side(self, resolution: int) -> int:
        """The shorter side the image is resized to before the crop (the crop itself for "square"),
        rounded down as timm does (`floor(size / crop_pct)`; exact for DINOv2's 256 / 224 at every
        multiple of 14)."""
        if self.resize == "square":
            return resolution
        return math.floor(resolution * self.resize_ratio + 1e-6)  # 1e-6: 256/224 * 224 is 255.999...


def resize_size(resolution: int) -> int:
    """Shorter side before the centre crop: resolution * 256 / 224 (256 at 224 px)."""
    return round(resolution * _RESIZE_RATIO)


def evaluation_transform(
    resolution: int = DEFAULT_RESOLUTION, preprocessing: Preprocessing = Preprocessing()
) -> transforms.Compose:
    """PIL image -> normalised (3, resolution, resolution) tensor.

    By default (DINOv2) the shorter side is resized to resolution * 256 / 224 (256 at 224 px), then
    centre-cropped; `preprocessing` gives another family's resize and normalisation.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    interpolation = INTERPOLATIONS[preprocessing.interpolation]
    if preprocessing.resize == "square":
        resize = [transforms.Resize((resolution, resolution), interpolation=interpolation)]
    elif preprocessing.resize == "square_crop":
        side = preprocessing.shorter_side(resolution)
        resize = [
            transforms.Resize((side, side), interpolation=interpolation),
            transforms.CenterCrop(resolution),
        ]
    else:
        resize = [
            transforms.Resize(preprocessing.shorter_side(resolution), interpolation=interpolation),
            transforms.CenterCrop(resolution),
        ]
    return transforms.Compose(
        [*resize, transforms.ToTensor(), transforms.Normalize(preprocessing.mean, preprocessing.std)]
    )


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
