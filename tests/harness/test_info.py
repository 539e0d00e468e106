"""`BackboneInfo` as results.json holds it: the preparation as flat keys, in their old places."""

from __future__ import annotations

import dataclasses
import json

from common.preparation import DINOV2_EVALUATION, Preprocessing
from harness import BackboneInfo

CLIP = Preprocessing((0.48, 0.45, 0.40), (0.26, 0.26, 0.27), "shorter_crop", "bicubic", 1.0)
INFO = BackboneInfo("clip-folder", "folder", "/m/clip", 32, 2, 2, 0, 14, False, False, "hf", "clip", CLIP, 16)

KEYS = [
    "name", "source", "location", "hidden_size", "num_layers", "num_heads", "num_registers", "patch_size",
    "swiglu", "random_weights", "pos_interpolation", "family", "image_mean", "image_std", "resize",
    "interpolation", "resize_ratio", "projection_dim", "num_distillation",
]  # fmt: skip
"""results.json's `backbone` keys, in the order written since the families were recorded."""


def test_as_dict_writes_the_preparation_as_flat_keys_in_order() -> None:
    data = INFO.as_dict()
    assert list(data) == KEYS
    assert (data["image_mean"], data["image_std"], data["resize"]) == (CLIP.mean, CLIP.std, "shorter_crop")
    assert (data["interpolation"], data["resize_ratio"]) == ("bicubic", 1.0)


def test_a_models_own_classifier_and_mlp_width_are_recorded_only_where_known() -> None:
    with_classifier = dataclasses.replace(INFO, num_classes=1000)
    assert list(with_classifier.as_dict()) == [*KEYS, "num_classes"]
    assert BackboneInfo.from_dict(json.loads(json.dumps(with_classifier.as_dict()))) == with_classifier
    assert dataclasses.replace(INFO, test_time_registers=1).identity == "/m/clip with 1 test-time register"
    with_mlp = dataclasses.replace(with_classifier, mlp_size=128)
    assert list(with_mlp.as_dict()) == [*KEYS, "num_classes", "mlp_size"]
    assert BackboneInfo.from_dict(json.loads(json.dumps(with_mlp.as_dict()))) == with_mlp


def test_from_dict_reads_back_what_as_dict_wrote_and_defaults_to_dinov2() -> None:
    assert BackboneInfo.from_dict(json.loads(json.dumps(INFO.as_dict()))) == INFO
    earlier = {key: value for key, value in INFO.as_dict().items() if key in KEYS[:10]}
    read = BackboneInfo.from_dict({**earlier, "dropped_key": 1})  # before families: no preparation
    assert read.preprocessing == DINOV2_EVALUATION and read.family == "dinov2"
