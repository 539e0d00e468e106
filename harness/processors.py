"""A transformers `preprocessor_config.json` read as a `Preprocessing` (docs/design.md#backbones):
what the transformers families (ViT, DeiT, CLIP, DINOv3) take from a checkpoint's processor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cls_decoupling.preparation import Preprocessing

PROCESSOR_CONFIG = "preprocessor_config.json"
"""The file a transformers checkpoint keeps its image processor's settings in."""

_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes in transformers' processor configs

_SHORTEST_EDGE_PROCESSORS = ("CLIPImageProcessor", "CLIPImageProcessorFast", "BitImageProcessor")
"""Processors that read an integer `size` as the shorter side (transformers' `default_to_square=False`);
the others (ViT, DeiT) read it as a square."""


def processor_preprocessing(config: Mapping[str, Any], defaults: Preprocessing) -> Preprocessing:
    """The preparation a `preprocessor_config.json` describes, `defaults` (the family's) where it is
    silent: mean/std; resample; `size.shortest_edge` + crop -> "shorter_crop", `size.height` + crop
    -> "square_crop" (a square, then the crop: DeiT), no crop -> "square"; the size's ratio to the crop.

    Raises:
        ValueError: its mean / std are not 3 numbers each (stds positive).
    """
    settings: dict[str, Any] = {}
    if "image_mean" in config and "image_std" in config:
        settings["mean"], settings["std"] = _normalisation(config["image_mean"], config["image_std"])
    resample = config.get("resample")
    if isinstance(resample, int) and resample in _RESAMPLE:
        settings["interpolation"] = _RESAMPLE[resample]
    square = config.get("image_processor_type") not in _SHORTEST_EDGE_PROCESSORS
    size, crop = config.get("size"), config.get("crop_size")
    if isinstance(size, int):  # the older form: transformers reads it as its processor does
        size = {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if not config.get("do_center_crop"):
        settings["resize"], settings["resize_ratio"] = "square", 1.0
    elif isinstance(size, dict) and isinstance(crop, dict) and "height" in crop:
        if "shortest_edge" in size:  # the shorter side, then a crop (CLIP)
            settings["resize"], settings["resize_ratio"] = (
                "shorter_crop",
                size["shortest_edge"] / crop["height"],
            )
        elif "height" in size:  # a square, then a crop (DeiT)
            settings["resize"], settings["resize_ratio"] = "square_crop", size["height"] / crop["height"]
    elif defaults.resize == "square":  # a crop of unknown size: the shorter side at the family's ratio
        settings["resize"] = "shorter_crop"
    return replace(defaults, **settings)


def _normalisation(mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(mean, (int, float)):  # one number for every channel
        mean, std = [mean] * 3, [std] * 3
    lists = isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple))
    numbers = lists and all(isinstance(value, (int, float)) for value in (*mean, *std))
    if not numbers or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"image_mean / image_std must be 3 numbers each, got {mean}, {std}")
    return tuple(mean), tuple(std)
