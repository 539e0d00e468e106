"""DINOv2's evaluation transform: Resize(256, bicubic) -> CenterCrop(224) -> ImageNet mean/std."""

from __future__ import annotations

from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 224
_RESIZE_RATIO = 256 / 224


def evaluation_transform(resolution: int = DEFAULT_RESOLUTION) -> transforms.Compose:
    """PIL image -> normalised (3, resolution, resolution) tensor.

    The shorter side is resized to resolution * 256 / 224 (256 at 224 px), then centre-cropped.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return transforms.Compose(
        [
            transforms.Resize(
                round(resolution * _RESIZE_RATIO), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            transforms.CenterCrop(resolution),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
