"""A linear classifier head trained by train_probe.py: saved with its class list and backbone name."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from harness.errors import HarnessError


class HeadMismatchError(HarnessError):
    """A head trained for another backbone, feature or class list than the run it is used in."""


@dataclass(frozen=True)
class LinearHead:
    """Weights (classes, dims) and bias (classes,) of a linear classifier on one feature.

    Attributes:
        backbone: the `--backbone` the features came from.
        feature: the variant it was trained on (`output/full`).
        class_names: class of each output row.
        resolution: image size of the training features.
        learning_rate: the learning rate chosen on the validation part.
        validation_top1: top-1 accuracy of that choice on the validation part.
    """

    weight: Tensor
    bias: Tensor
    backbone: str
    feature: str
    class_names: tuple[str, ...]
    resolution: int
    learning_rate: float
    validation_top1: float

    def save(self, path: Path) -> None:
        record = asdict(self) | {"class_names": list(self.class_names)}
        torch.save(record, path)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
            record["class_names"] = tuple(record["class_names"])
            return cls(**record)
        except (OSError, KeyError, TypeError, RuntimeError) as error:
            raise HarnessError(f"{path} is not a linear head saved by train_probe.py: {error}") from None

    def check_compatible(self, backbone: str, class_names: tuple[str, ...], resolution: int) -> None:
        """Refuse a head trained for another backbone or class list."""
        if backbone != self.backbone:
            raise HeadMismatchError(f"the head was trained on backbone {self.backbone!r}, not {backbone!r}")
        if class_names != self.class_names:
            raise HeadMismatchError(
                f"the head was trained on {len(self.class_names)} classes {list(self.class_names)[:5]}..., "
                f"this data has {len(class_names)} classes {list(class_names)[:5]}..."
            )
        if resolution != self.resolution:
            raise HeadMismatchError(
                f"the head was trained at {self.resolution} px, this run uses {resolution} px"
            )
