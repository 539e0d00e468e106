"""How a backbone's images are prepared (docs/design.md#backbones): one value, `Preprocessing`, that
the model side reads from a family or a checkpoint and the data side turns into the evaluation
transform. Layer 0: both sides import it, neither imports the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_RESIZE_RATIO = 256 / 224
"""DINOv2's evaluation: the shorter side to 256 px before a 224 px centre crop."""

RESIZES = ("shorter_crop", "square", "square_crop")
RESIZE_CHOICES = ("shorter", "square")
"""What a user chooses (`Preprocessing.chosen`): the shorter side, or the whole image to a square."""
INTERPOLATIONS = ("bicubic", "bilinear")
"""torchvision's `InterpolationMode` values this tool prepares images with."""


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

    def chosen(self, resize: str | None = None, crop_ratio: float | None = None) -> Preprocessing:
        """The same preparation with its resize and crop chosen (None: as it is): `resize` "shorter"
        (the shorter side, then the crop: DINOv2's, DeiT's own `main.py`, timm's "center") or "square"
        (the whole image to a square, then the crop: ViT's and DeiT's processors, timm's "squash");
        `crop_ratio` the crop's share of the resized side (timm's `crop_pct`, DeiT's
        `--eval-crop-ratio`): the side before the crop is resolution / crop_ratio.

        >>> Preprocessing().chosen(crop_ratio=1.0).shorter_side(224)
        224
        >>> Preprocessing(resize="square", resize_ratio=1.0).chosen(crop_ratio=0.875).resize
        'square_crop'
        >>> squashed = Preprocessing().chosen(resize="square")
        >>> squashed.resize, squashed.shorter_side(224)
        ('square_crop', 256)

        Raises:
            ValueError: `resize` is none of `RESIZE_CHOICES`, or `crop_ratio` is not in (0, 1].
        """
        if resize is None and crop_ratio is None:
            return self
        if resize is not None and resize not in RESIZE_CHOICES:
            raise ValueError(f"unknown resize {resize!r}; choose from {', '.join(RESIZE_CHOICES)}")
        if crop_ratio is not None and not 0 < crop_ratio <= 1:
            raise ValueError(f"the crop ratio must lie in (0, 1], got {crop_ratio}")
        ratio = self.resize_ratio if crop_ratio is None else 1 / crop_ratio
        square = self.resize != "shorter_crop" if resize is None else resize == "square"
        mode = ("square" if ratio == 1 else "square_crop") if square else "shorter_crop"
        return replace(self, resize=mode, resize_ratio=ratio)

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
        from torchvision import transforms  # here: the command line reads this module before parsing

        interpolation = transforms.InterpolationMode(self.interpolation)
        if self.resize == "square":
            steps = [transforms.Resize((resolution, resolution), interpolation=interpolation)]
        else:  # to the shorter side ("shorter_crop") or a square ("square_crop"), then the crop
            side = self.shorter_side(resolution)
            size = (side, side) if self.resize == "square_crop" else side
            steps = [transforms.Resize(size, interpolation=interpolation), transforms.CenterCrop(resolution)]
        return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])


DINOV2_EVALUATION = Preprocessing()
"""DINOv2's evaluation transform (the paper's protocol): the default wherever nothing else is said."""
