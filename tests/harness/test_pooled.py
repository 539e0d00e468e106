"""Models read by an attention-pooling head (the "map" readout): transformers' SigLIP and AIMv2, and
timm's ViTs with `global_pool='map'`. The pool is recomputed here from its own modules, written from the
description (a learned latent attends over the final-normed tokens, then x + MLP(norm(x))), and
the decomposition is checked against it and against the model's own pooled output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import Tensor, nn
from torch.testing import assert_close
from transformers import (
    Aimv2Config,
    Aimv2Model,
    Aimv2TextConfig,
    Aimv2VisionConfig,
    Aimv2VisionModel,
    SiglipConfig,
    SiglipModel,
    SiglipTextConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from harness import DecomposingBackbone, with_test_time_registers
from harness.extras import Intervention
from tests.conftest import scaled
from tests.harness.pools import pool_reference


def tiny_siglip(layers: int = 2) -> SiglipVisionModel:
    torch.manual_seed(0)
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        image_size=32, patch_size=8,
    )  # fmt: skip
    return SiglipVisionModel(config).eval()


def tiny_aimv2(native: bool = False) -> Aimv2VisionModel:
    """A random AIMv2 tower (a learned position table of 32 px, or sine-cosine positions: `native`),
    its head's latent and projections off their init."""
    torch.manual_seed(0)
    config = Aimv2VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, qkv_bias=True, is_native=native,
    )  # fmt: skip
    model = Aimv2VisionModel(config).eval()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def tiny_timm_map(**options: Any) -> nn.Module:
    """A timm ViT pooled by `AttentionPoolLatent` (SigLIP in timm: no [CLS]); `options` add a [CLS],
    registers, layer scale (the pool then reads every token: `pool_include_prefix`)."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2,
        num_heads=4, dynamic_img_size=True, num_classes=0, global_pool="map",
        **({"class_token": False} | options),
    )  # fmt: skip
    with torch.no_grad():  # the pool's biases and latent off their init, so every term is visible
        for parameter in model.attn_pool.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


WITH_PREFIX = {"class_token": True, "reg_tokens": 2, "pool_include_prefix": True, "init_values": 0.5}

MODELS: dict[str, Callable[[], nn.Module]] = {
    "siglip": tiny_siglip,
    "aimv2": tiny_aimv2,
    "aimv2_native": lambda: tiny_aimv2(native=True),
    "timm": tiny_timm_map,
    "timm_cls_registers": lambda: tiny_timm_map(**WITH_PREFIX),
}


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("side", [32, 48])
@torch.no_grad()
def test_the_pool_decomposes_exactly_into_its_token_groups(family: str, side: int) -> None:
    backbone = DecomposingBackbone.from_model(MODELS[family]())
    info = backbone.info
    assert info.readout == "map" and info.num_cls == (1 if family == "timm_cls_registers" else 0)
    if backbone.family.fixed_resolution() not in (None, side):
        pytest.skip("a learned position table of 32 px: other sizes are refused")
    pixels = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(side))
    decomposition = backbone(pixels)
    own = backbone.family.pooled(pixels)
    assert_close(decomposition["output/full"], own, **scaled(own))
    assert decomposition.pooler_error < 1e-5 * own.abs().max()
    # no residual around a pool: no skip variant; the groups are the model's
    assert not [name for name in decomposition if name.endswith("/skip")]
    assert set(decomposition.variants) == set(info.variant_names())
    tokens, weights, attended = pool_reference(backbone, pixels)
    layout = backbone.layout_for(pixels)
    assert tokens.shape[1] == layout.num_tokens
    assert_close(decomposition["attention/full"], attended, **scaled(attended))
    bias = backbone.read_view.attention.o_proj.bias
    groups = layout.groups
    summed = sum(decomposition[f"attention/{group}"] - bias for group in groups) + bias
    assert_close(summed, attended, **scaled(attended))
    for group in ("cls", "register", "patch"):  # the shares are the pool's own attention weights
        expected = weights[:, :, layout.slice(group)].sum(dim=-1).mean(dim=1)
        assert_close(decomposition[f"split/{group}"], expected, rtol=1e-5, atol=1e-6)
    patches = weights[:, :, layout.slice("patch")].mean(dim=1).view(-1, layout.grid_height, layout.grid_width)
    assert_close(decomposition["map/attention"], patches, rtol=1e-5, atol=1e-6)
    if family == "timm_cls_registers":  # every group's term is there and moves the output
        for group in ("cls", "register"):
            assert (decomposition[f"output/{group}"] - decomposition["output/full"]).abs().max() > 1e-3


@torch.no_grad()
def test_a_whole_siglip_is_read_through_its_image_tower() -> None:
    tower = tiny_siglip().config
    text = SiglipTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    whole = SiglipModel(SiglipConfig(vision_config=tower.to_dict(), text_config=text.to_dict())).eval()
    backbone = DecomposingBackbone.from_model(whole)
    pixels = torch.randn(2, 3, 32, 32)
    expected = whole.get_image_features(pixel_values=pixels)
    expected = getattr(expected, "pooler_output", expected)
    assert_close(backbone(pixels)["output/full"], expected, **scaled(expected))


@torch.no_grad()
def test_a_whole_aimv2_has_its_image_embedding_as_the_projection_readout() -> None:
    tower = tiny_aimv2().config
    text = Aimv2TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    config = Aimv2Config(vision_config=tower.to_dict(), text_config=text.to_dict(), projection_dim=16)
    whole = Aimv2Model(config).eval()
    backbone = DecomposingBackbone.from_model(whole)
    assert backbone.info.projection_dim == 16
    pixels = torch.randn(2, 3, 32, 32)
    expected = whole.get_image_features(pixel_values=pixels)
    expected = getattr(expected, "pooler_output", expected)
    assert_close(backbone(pixels)["projection/full"], expected, **scaled(expected))
    with pytest.raises(ValueError, match="reads 32 x 32 images only"):
        backbone(torch.randn(1, 3, 48, 48))


def test_a_siglip_without_its_pooling_head_is_refused() -> None:
    config = tiny_siglip().config
    config.vision_use_head = False
    with pytest.raises(ValueError, match="no attention-pooling head"):
        DecomposingBackbone.from_model(SiglipVisionModel(config))


@torch.no_grad()
def test_model_level_zero_on_a_pooled_model_is_its_own_forward_with_those_rows_zeroed() -> None:
    backbone = DecomposingBackbone.from_model(tiny_timm_map(**WITH_PREFIX))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    layout = backbone.layout_for(pixels)
    for target in ("patch", "register", "cls"):
        intervention = Intervention((target,), (2,), "zero")
        got = backbone(pixels, extras=[intervention]).pass_of(intervention.name)["output/full"]
        rows = layout.slice(target)

        def zeroed(module: nn.Module, inputs: tuple[Tensor, ...], rows: slice = rows) -> tuple[Tensor, ...]:
            edited = inputs[0].clone()
            edited[:, rows] = 0
            return (edited, *inputs[1:])

        handle = backbone.family.blocks[1].register_forward_pre_hook(zeroed)
        try:
            expected = backbone.family.pooled(pixels)
        finally:
            handle.remove()
        assert_close(got, expected, **scaled(expected))


def test_what_reads_the_cls_row_is_refused_on_a_pooled_model() -> None:
    from harness.extras import AttributionMaps, Depth

    siglip = DecomposingBackbone.from_model(tiny_siglip())
    pixels = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="has none"):
        siglip(pixels, extras=[Depth((1,))])
    with pytest.raises(ValueError, match="attention-pooling head"):
        siglip(pixels, extras=[Intervention(("patch",), (2,), "zero", "readout")])
    with pytest.raises(ValueError, match="attention-pooling head"):
        siglip(pixels, extras=[Intervention(("patch",), (2,), "knockout")])
    with pytest.raises(ValueError, match="attention-pooling head"):
        siglip(pixels, extras=[AttributionMaps(("rollout",))])


@torch.no_grad()
def test_test_time_registers_on_a_model_without_cls_start_the_sequence() -> None:
    model = tiny_siglip()
    added = with_test_time_registers(model, {1: [3, 7]}, count=1)
    backbone = DecomposingBackbone.from_model(added)
    assert backbone.info.num_registers == 1 and backbone.info.num_cls == 0
    pixels = torch.randn(2, 3, 32, 32)
    decomposition = backbone(pixels)
    own = backbone.family.pooled(pixels)
    assert decomposition.pooler_error < 1e-5 * own.abs().max()
    assert "attention/register" in decomposition and decomposition["split/register"].min() > 0


def siglip_folder(root: Path, whole: bool = False) -> Path:
    model = tiny_siglip(layers=3)
    if whole:
        text = SiglipTextConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
        ).to_dict()
        config = SiglipConfig(vision_config=model.config.to_dict(), text_config=text)
        model = SiglipModel(config)
    model.save_pretrained(root)
    return root


@pytest.mark.parametrize("whole", [False, True])
def test_the_command_line_runs_a_saved_siglip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], whole: bool
) -> None:
    from cls_decoupling.cli import evaluate
    from tests.conftest import write_photos

    folder = siglip_folder(tmp_path / "siglip", whole)
    write_photos(tmp_path / "photos", 4)
    capsys.readouterr()  # what saving printed
    common = ["--backbone", str(folder), "--data", "folder", "--data-dir", str(tmp_path / "photos"),
              "--batch-size", "2", "--num-workers", "0", "--resolution", "32"]  # fmt: skip
    refused = {
        "layerwise": ["--probe", "layerwise"],
        "layers": ["--probe", "split", "--layers", "all"],
        "readout": ["--probe", "interventions", "--intervene", "patch@last:zero:readout"],
        "rollout": ["--probe", "attribution", "--maps", "rollout"],
    }
    for name, options in refused.items():
        assert evaluate.main([*common, *options, "--output", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # after the loader's progress bar
        assert last.startswith("error:") and "Traceback" not in err, (name, err)
        assert not (tmp_path / name / "results.json").exists()
    assert (
        evaluate.main([*common, "--probe", "all", "--save-features", "--output", str(tmp_path / "run")]) == 0
    )
    replayed = ["--from-features", str(tmp_path / "run"), "--output", str(tmp_path / "replayed")]
    assert evaluate.main(replayed) == 0  # `all` without the probes that read [CLS] rows, as the run
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    backbone = results["backbone"]
    assert backbone["family"] == "siglip" and backbone["readout"] == "map" and backbone["num_cls"] == 0
    assert results["run"]["max_pooler_error"] < 1e-4
    assert "cka/output/patch" in results["results"] and not any("skip" in key for key in results["results"])
    assert not any(key.startswith("layerwise/") for key in results["results"])


def tiny_timm_mean(**options: Any) -> nn.Module:
    """A timm ViT pooled by the mean of its patch tokens (`global_pool='avg'`, then `fc_norm`)."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2,
        num_heads=4, dynamic_img_size=True, num_classes=0, global_pool="avg", **options,
    )  # fmt: skip
    with torch.no_grad():
        model.fc_norm.bias.add_(0.3 * torch.randn_like(model.fc_norm.bias))
    return model.eval()


def averaged_models() -> dict[str, Callable[[], nn.Module]]:
    from tests.harness.test_eva import tiny_eva
    from tests.harness.test_naflex import tiny_naflex

    return {
        "timm": tiny_timm_mean,
        "timm_registers": lambda: tiny_timm_mean(reg_tokens=2),
        "timm_no_cls": lambda: tiny_timm_mean(class_token=False),
        "eva": tiny_eva,  # EVA-02's own default
        "naflex": lambda: tiny_naflex("naflexvit_base_patch16_gap"),
    }


@pytest.mark.parametrize("family", averaged_models())
@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
@torch.no_grad()
def test_a_model_pooled_by_the_patch_mean_decomposes_into_its_patches(
    family: str, size: tuple[int, int]
) -> None:
    model = averaged_models()[family]()
    backbone = DecomposingBackbone.from_model(model)
    assert backbone.info.readout == "mean"
    assert set(backbone.info.variant_names()) == {
        f"{readout}/{variant}"
        for readout in ("attention", "output")
        for variant in ("full", "patch", "patch_renorm")
    }  # only the patches are averaged: no [CLS], register or skip part
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[1]))
    decomposition = backbone(pixels)
    own = model.forward_head(model.forward_features(pixels), pre_logits=True)
    assert_close(decomposition["output/full"], own, **scaled(own))
    layout = backbone.layout_for(pixels)
    tokens = model.forward_features(pixels)  # the final-normed tokens, written out: their patches' mean
    mean = tokens[:, layout.slice("patch")].mean(dim=1)
    assert_close(decomposition["attention/full"], mean, **scaled(mean))
    assert_close(decomposition["split/patch"], torch.ones(2))
    # the artifact patches' share of a mean is their count over the patches
    split = backbone.with_artifacts(float(backbone.capture(pixels).penultimate.norm(dim=-1).median()))(pixels)
    assert_close(split["split/artifact"], split["artifact/count"] / layout.num_patches)


def test_a_mean_that_takes_the_prefix_in_is_refused() -> None:
    with pytest.raises(ValueError, match="a mean that takes the prefix tokens in"):
        DecomposingBackbone.from_model(tiny_timm_mean(pool_include_prefix=True))
