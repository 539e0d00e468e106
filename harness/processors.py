"""A transformers `preprocessor_config.json` read as a `Preprocessing` (docs/design.md#backbones):
what the transformers families (ViT, DeiT, CLIP, DINOv3) take from a checkpoint's processor, read by
transformers' own image processor (never by parsing the file here)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.preparation import Preprocessing
from harness.errors import first_line

PROCESSOR_CONFIG = "preprocessor_config.json"
"""The file a transformers checkpoint keeps its image processor's settings in."""

_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes in transformers' processor configs


def processor_preprocessing(
    config: Mapping[str, Any], defaults: Preprocessing, processor_type: str = ""
) -> Preprocessing:
    """The preparation a `preprocessor_config.json` describes, as transformers' own image processor
    reads it (`AutoImageProcessor`: the older `feature_extractor_type` form with integer sizes
    included), `defaults` (the family's) where it is silent: mean/std; resample; `size.shortest_edge`
    + crop -> "shorter_crop" (CLIP), `size.height` + crop -> "square_crop" (a square, then the crop:
    DeiT), no crop -> "square"; the size's ratio to the crop. `processor_type`: the processor of a
    config that names none (the family's).

    Raises:
        ValueError: transformers cannot read it, or its mean / std are not 3 numbers each.
    """
    processor = image_processor(config, processor_type)
    settings: dict[str, Any] = {}
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is not None and std is not None:
        settings["mean"], settings["std"] = _normalisation(mean, std)
    resample = getattr(processor, "resample", None)
    if resample is not None and int(resample) in _RESAMPLE:
        settings["interpolation"] = _RESAMPLE[int(resample)]
    size, crop = _sizes(getattr(processor, "size", None)), _sizes(getattr(processor, "crop_size", None))
    if min([*size.values(), *crop.values()], default=1) <= 0:
        raise ValueError(f"its sizes must be positive, got size {size} and crop_size {crop}")
    if not getattr(processor, "do_center_crop", False):
        settings["resize"], settings["resize_ratio"] = "square", 1.0
    elif "height" in crop and "shortest_edge" in size:  # the shorter side, then a crop (CLIP)
        settings["resize"], settings["resize_ratio"] = "shorter_crop", size["shortest_edge"] / crop["height"]
    elif "height" in crop and "height" in size:  # a square, then a crop (DeiT)
        settings["resize"], settings["resize_ratio"] = "square_crop", size["height"] / crop["height"]
    elif defaults.resize == "square":  # a crop of unknown size: the shorter side at the family's ratio
        settings["resize"] = "shorter_crop"
    return replace(defaults, **settings)


def image_processor(config: Mapping[str, Any], processor_type: str = "") -> Any:
    """transformers' image processor of `config` (its class from `image_processor_type`, or from the
    older `feature_extractor_type`, else `processor_type`), built by `AutoImageProcessor` from a folder
    holding only it.

    Raises:
        ValueError: transformers cannot build a processor from it.
    """
    from transformers import AutoImageProcessor

    with tempfile.TemporaryDirectory() as folder:
        named = "image_processor_type" in config or "feature_extractor_type" in config
        typed = (
            dict(config)
            if named or not processor_type
            else {**config, "image_processor_type": processor_type}
        )
        (Path(folder) / PROCESSOR_CONFIG).write_text(json.dumps(typed))
        try:
            return AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"transformers cannot read it: {first_line(error)}") from None


def _sizes(size: Any) -> dict[str, int]:
    """A processor's size (a dict, or transformers' SizeDict) as a dict of the sizes it sets."""
    if size is None:
        return {}
    return {key: int(value) for key, value in dict(size).items() if isinstance(value, (int, float))}


def _normalisation(mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(mean, (int, float)):  # one number for every channel
        mean, std = [mean] * 3, [std] * 3
    lists = isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple))
    numbers = lists and all(isinstance(value, (int, float)) for value in (*mean, *std))
    if not numbers or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"image_mean / image_std must be 3 numbers each, got {mean}, {std}")
    return tuple(float(value) for value in mean), tuple(float(value) for value in std)
