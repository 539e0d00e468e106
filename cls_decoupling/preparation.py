"""How a backbone's images are prepared (docs/design.md#backbones): one value, `Preprocessing`, that
the model side reads from a family or a checkpoint and the data side turns into the evaluation
transform. Layer 0: both sides import it, neither imports the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_RESIZE_RATIO = 256 / 224
"""DINOv2's evaluation: the shorter side to 256 px before a 224 px centre crop."""

RESIZES = ("shorter_crop", "square", "square_crop")
INTERPOLATIONS = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a model prepares an image (its processor's settings); DINOv2's evaluation by default.

    Attributes:
        mean, std: the normalisation per RGB channel.
        resize: "shorter_crop" (the shorter side to resolution x `resize_ratio`, then a centre crop:
            DINOv2's evaluation), "square" (straight to resolution x resolution: ViT's processor) or
            "square_crop" (to a square of resolution x `resize_ratio`, then a centre crop: DeiT's
            processor, timm's "squash" crop mode).
        interpolation: "bicubic" or "bilinear".
        resize_ratio: side before the centre crop, relative to the crop (256 / 224 for DINOv2, 1 for
            CLIP).

    >>> Preprocessing().shorter_side(224), Preprocessing(resize="square").shorter_side(224)
    (256, 224)

    Raises:
        ValueError: an unknown resize or interpolation, or not 3 means and 3 positive stds.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "shorter_crop"
    interpolation: str = "bicubic"
    resize_ratio: float = DINOV2_RESIZE_RATIO

    def __post_init__(self) -> None:
        if self.resize not in RESIZES or self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown resize {self.resize!r} or interpolation {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got {self.mean}, {self.std}")
        # a list read from JSON compares and hashes as the tuple it stands for
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))

    def cropped(self, crop_ratio: float) -> Preprocessing:
        """The same preparation with the crop taking `crop_ratio` of the resized side (timm's
        `crop_pct`, DeiT's `--eval-crop-ratio`): the side before the crop is resolution / crop_ratio;
        a "square" resize becomes "square_crop" when the ratio is below 1.

        >>> Preprocessing().cropped(1.0).shorter_side(224)
        224
        >>> Preprocessing(resize="square").cropped(0.875).resize
        'square_crop'

        Raises:
            ValueError: `crop_ratio` is not in (0, 1].
        """
        if not 0 < crop_ratio <= 1:
            raise ValueError(f"the crop ratio must lie in (0, 1], got {crop_ratio}")
        resize = "square_crop" if self.resize == "square" and crop_ratio < 1 else self.resize
        return replace(self, resize=resize, resize_ratio=1 / crop_ratio)

    def shorter_side(self, resolution: int) -> int:
        """The shorter side the image is resized to before the crop (the crop itself for "square"),
        rounded down as timm does (`floor(size / crop_pct)`; exact for DINOv2's 256 / 224 at every
        multiple of 14)."""
        if self.resize == "square":
            return resolution
        return math.floor(resolution * self.resize_ratio + 1e-6)  # 1e-6: 256/224 * 224 is 255.999...

    def transform(self, resolution: int) -> transforms.Compose:
        """The evaluation transform: PIL image -> normalised (3, resolution, resolution) tensor.

        Raises:
            ValueError: `resolution` is not positive.
        """
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        interpolation = INTERPOLATIONS[self.interpolation]
        if self.resize == "square":
            steps = [transforms.Resize((resolution, resolution), interpolation=interpolation)]
        else:  # to the shorter side ("shorter_crop") or a square ("square_crop"), then the crop
            side = self.shorter_side(resolution)
            size = (side, side) if self.resize == "square_crop" else side
            steps = [transforms.Resize(size, interpolation=interpolation), transforms.CenterCrop(resolution)]
        return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])


DINOV2_EVALUATION = Preprocessing()
"""DINOv2's evaluation transform (the paper's protocol): the default wherever nothing else is said."""
