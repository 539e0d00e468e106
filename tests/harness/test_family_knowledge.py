"""What each family adapter knows besides its blocks (harness.families): its short names, how
transformers loads its checkpoints, how it resizes its position grid, and how its images are prepared.
`load_backbone` and `DecomposingBackbone.from_model` ask the adapter for each of these."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch import nn
from transformers import (
    AutoModel,
    CLIPConfig,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    DeiTConfig,
    Dinov2Config,
    PretrainedConfig,
    ViTConfig,
)

from common.preparation import DINOV2_EVALUATION, Preprocessing
from harness import HUB_MODELS, DecomposingBackbone, resolve_backbone
from harness.families import FAMILIES, Family, LoadAs, family_for, load_as, short_names
from tests.conftest import tiny_model
from tests.harness.test_eva import tiny_eva
from tests.harness.test_families import tiny_clip, tiny_deit, tiny_dinov3, tiny_timm, tiny_vit
from tests.harness.test_naflex import tiny_naflex
from tests.harness.test_openclip import tiny_tower
from tests.harness.test_pooled import tiny_aimv2, tiny_siglip

MODELS: dict[str, Callable[[], nn.Module]] = {
    "dinov2": lambda: tiny_model(registers=0),
    "dinov3": tiny_dinov3,
    "vit": tiny_vit,
    "deit": tiny_deit,
    "clip": tiny_clip,
    "timm": tiny_timm,
    "open_clip": lambda: tiny_tower(),
    "siglip": tiny_siglip,
    "aimv2": tiny_aimv2,
    "eva": lambda: tiny_eva(global_pool="token"),
    "naflex": tiny_naflex,
}
"""A tiny random model of every family."""


@pytest.fixture(scope="module")
def families() -> dict[str, Family]:
    return {name: family_for(make()) for name, make in MODELS.items()}


def test_every_family_has_a_tiny_model_here() -> None:
    assert {family.name for family in FAMILIES} == set(MODELS)


def test_short_names_are_their_familys_and_point_at_its_hub_ids() -> None:
    assert short_names() == HUB_MODELS
    assert sum(len(family.short_names) for family in FAMILIES) == len(HUB_MODELS)  # no name twice
    owners = {name: family.name for family in FAMILIES for name in family.short_names}
    families = {"dinov2", "dinov3", "clip", "open_clip", "siglip", "aimv2", "eva", "naflex"}
    assert {owners[name] for name in HUB_MODELS} == families
    assert owners["dinov2_vitg14_reg"] == "dinov2" and owners["clip_vitb16"] == "clip"
    for name, hub_id in HUB_MODELS.items():  # open_clip's and timm's: loaded by their own library
        library, _, location = hub_id.partition(":")
        own = library in ("open_clip", "timm")
        assert resolve_backbone(name) == ((library, location) if own else ("hub", hub_id))


def whole_clip() -> PretrainedConfig:
    tower = CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return CLIPConfig(vision_config=tower.to_dict(), projection_dim=24, architectures=["CLIPModel"])


NO_POOLER = {"add_pooling_layer": False}


@pytest.mark.parametrize(
    ("config", "model_class", "arguments", "left_out"),
    [
        pytest.param(ViTConfig(), AutoModel, NO_POOLER, ("pooler.",), id="vit-no-pooler"),
        pytest.param(DeiTConfig(), AutoModel, NO_POOLER, ("pooler.",), id="deit-no-pooler"),
        pytest.param(CLIPVisionConfig(architectures=["CLIPVisionModelWithProjection"]),
                     CLIPVisionModelWithProjection, {}, (), id="clip-tower-with-projection"),
        pytest.param(CLIPVisionConfig(architectures=["CLIPVisionModel"]), AutoModel, {}, (), id="clip-tower"),
        pytest.param(Dinov2Config(architectures=["Dinov2Model"]), AutoModel, {}, (), id="dinov2"),
    ],
)  # fmt: skip
def test_each_family_says_how_transformers_loads_its_checkpoints(
    config: PretrainedConfig, model_class: type, arguments: dict[str, object], left_out: tuple[str, ...]
) -> None:
    """The class, its arguments and the checkpoint tensors the model leaves out on purpose."""
    assert load_as(config) == LoadAs(model_class, arguments, left_out)


def test_a_whole_clip_loads_as_its_tower_with_the_whole_models_projection() -> None:
    how = load_as(whole_clip())
    assert how.model_class is CLIPVisionModelWithProjection
    assert how.left_out == ("text_model.", "text_projection.", "logit_scale")
    tower = how.arguments["config"]
    assert isinstance(tower, CLIPVisionConfig) and (tower.hidden_size, tower.projection_dim) == (32, 24)


POSITIONS = [
    # family, asked, as released, recorded (or the error's words)
    ("dinov2", None, True, "original"),
    ("dinov2", None, False, "hf"),
    ("dinov2", "hf", True, "hf"),
    ("dinov2", "original", False, "original"),
    ("dinov3", None, True, "hf"),
    ("vit", "hf", False, "hf"),
    ("deit", None, False, "hf"),
    ("clip", None, True, "hf"),
    ("timm", None, False, "timm"),
    ("timm", "hf", False, "timm"),  # the model's own resize, whatever is asked
    ("dinov3", "original", True, ValueError),
    ("vit", "original", False, "original"),  # DINO v1's own resize, asked for
    ("vit", None, False, "hf"),  # not a DINO v1 release (harness/families/vit.py: DINO_V1)
    ("deit", "original", False, ValueError),
    ("timm", "original", False, ValueError),
]


POSITION_IDS = [
    f"{family}-{asked}-{'released' if released else 'other'}" for family, asked, released, _ in POSITIONS
]


@pytest.mark.parametrize(("family", "asked", "released", "recorded"), POSITIONS, ids=POSITION_IDS)
def test_each_family_says_how_its_positions_are_resized(
    families: dict[str, Family], family: str, asked: str | None, released: bool, recorded: object
) -> None:
    if recorded is ValueError:
        with pytest.raises(
            ValueError,
            match=f"original is the resize of DINOv2, DINO v1 and DeiT III; it is a {family} model",
        ):
            families[family].pos_interpolation(asked, released)
    else:
        assert families[family].pos_interpolation(asked, released) == recorded


PROCESSOR = {
    "image_mean": [0.1, 0.2, 0.3],
    "image_std": [0.4, 0.5, 0.6],
    "resample": 2,
    "do_center_crop": False,
}
"""A processor config: these means, a square bilinear resize."""
FROM_PROCESSOR = Preprocessing((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "square", "bilinear", 1.0)


@pytest.mark.parametrize("family", MODELS)
def test_each_family_says_how_its_images_are_prepared(families: dict[str, Family], family: str) -> None:
    """DINOv2 keeps the paper's transform and timm its pretrained config whatever a processor config
    says, open_clip its preprocess_cfg; the other families read the checkpoint's processor config over
    their default."""
    adapter = families[family]
    carried = {
        name: adapter.preparation() for name in ("timm", "eva", "naflex", "open_clip")
    }  # the model carries its own
    expected = {"dinov2": DINOV2_EVALUATION, **carried}.get(family, FROM_PROCESSOR)
    assert adapter.preparation(PROCESSOR) == expected
    assert adapter.reads_processor_config == (family not in ("dinov2", "timm", "eva", "naflex", "open_clip"))
    if family not in carried:  # without a processor config: the family's default
        assert adapter.preparation() == adapter.preprocessing


@pytest.mark.parametrize("family", MODELS)
def test_from_model_asks_the_family(family: str) -> None:
    model = MODELS[family]()
    info = DecomposingBackbone.from_model(model).info
    adapter = family_for(model)
    assert (info.family, info.source) == (family, "memory")
    assert info.pos_interpolation == adapter.pos_interpolation(None, as_released=False)
    assert info.preprocessing == adapter.preparation()
