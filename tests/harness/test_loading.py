"""Backbone names, folders and failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from transformers import (
    BeitConfig,
    BeitModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

from common.preparation import Preprocessing
from harness import HUB_MODELS, RANDOM_MODELS, UnknownBackboneError, load_backbone, resolve_backbone
from tests.conftest import tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("registers", [0, 4], ids=["plain", "registers"])
def test_save_pretrained_folder_round_trip(registers: int, tmp_path: Path) -> None:
    model = tiny_model(registers, swiglu=bool(registers))
    model.save_pretrained(tmp_path / "model")
    backbone = load_backbone(tmp_path / "model")
    assert backbone.info.source == "folder" and backbone.info.num_registers == registers
    assert backbone.model.config._attn_implementation == "sdpa"
    assert not backbone.model.training
    assert not any(p.requires_grad for p in backbone.parameters())
    pixels = torch.randn(2, 3, 32, 32)
    assert_close(
        backbone(pixels)["output/full"], model(pixel_values=pixels).pooler_output, atol=1e-5, rtol=1e-5
    )


def test_random_models_have_the_released_architectures() -> None:
    backbone = load_backbone("random:dinov2_vits14_reg")
    info = backbone.info
    assert (info.hidden_size, info.num_layers, info.num_heads, info.num_registers) == (384, 12, 6, 4)
    assert info.random_weights and info.patch_size == 14
    assert len(RANDOM_MODELS) == 10 and "random:tiny" in RANDOM_MODELS
    again = load_backbone("random:dinov2_vits14_reg")
    assert torch.equal(backbone.model.embeddings.cls_token, again.model.embeddings.cls_token)  # seeded


def test_unknown_name_lists_names_and_closest_match() -> None:
    with pytest.raises(UnknownBackboneError, match="Did you mean 'dinov2_vitg14_reg'") as error:
        load_backbone("dinov2_vitg14_regs")
    for name in HUB_MODELS:
        assert name in str(error.value)
    with pytest.raises(UnknownBackboneError, match="unknown backbone 'random:huge'"):
        load_backbone("random:huge")


def test_unsupported_folder_and_non_checkpoint_file_are_refused(tmp_path: Path) -> None:
    BeitModel(  # relative positions inside its attention: out of scope
        BeitConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "beit")
    with pytest.raises(UnknownBackboneError, match=r"BeitModel is not a supported ViT \(Dinov2Model"):
        load_backbone(tmp_path / "beit")
    SiglipVisionModel(  # no [CLS] token and no pooling head: nothing reads its output
        SiglipVisionConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            vision_use_head=False,
        )
    ).save_pretrained(tmp_path / "siglip")
    with pytest.raises(UnknownBackboneError, match=r"no attention-pooling head"):
        load_backbone(tmp_path / "siglip")
    (tmp_path / "unknown").mkdir()
    (tmp_path / "unknown" / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(UnknownBackboneError, match=r"is not a model transformers can load: Unrecognized"):
        load_backbone(tmp_path / "unknown")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(UnknownBackboneError, match=r"not a \.pth checkpoint"):
        load_backbone(tmp_path / "weights.bin")


def test_a_vit_folder_loads_with_its_own_preprocessing(tmp_path: Path) -> None:
    """A transformers ViT folder is the vit family, prepared as its processor config says (or as
    transformers' ViTImageProcessor by default); DINOv2's position resize is refused for it."""
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       image_size=56, patch_size=14)  # fmt: skip
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    backbone = load_backbone(tmp_path / "vit")
    info = backbone.info
    assert (info.family, info.num_registers, info.patch_size, info.pos_interpolation) == ("vit", 0, 14, "hf")
    assert info.preprocessing == Preprocessing((0.5,) * 3, (0.5,) * 3, "square", "bilinear", 1.0)
    processor = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
                 "do_center_crop": True}  # fmt: skip
    (tmp_path / "vit" / "preprocessor_config.json").write_text(json.dumps(processor))
    preprocessing = load_backbone(tmp_path / "vit").info.preprocessing
    assert (preprocessing.mean, preprocessing.resize, preprocessing.interpolation) == (
        (0.485, 0.456, 0.406),
        "shorter_crop",
        "bicubic",
    )
    assert load_backbone(tmp_path / "vit", pos_interpolation="original").info.pos_interpolation == "original"


def test_a_clip_folder_takes_its_processors_resize(tmp_path: Path) -> None:
    """CLIP's processor resizes the shorter side to the crop size (ratio 1, not DINOv2's 256 / 224)."""
    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=32, image_size=56, patch_size=14)  # fmt: skip
    CLIPVisionModel(config).save_pretrained(tmp_path / "clip")
    processor = {"image_mean": [0.48145466, 0.4578275, 0.40821073],
                 "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "do_center_crop": True,
                 "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}  # fmt: skip
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps(processor))
    info = load_backbone(tmp_path / "clip").info
    preprocessing = info.preprocessing
    assert (info.family, preprocessing.resize, preprocessing.resize_ratio, preprocessing.interpolation) == (
        "clip",
        "shorter_crop",
        1.0,
        "bicubic",
    )
    assert preprocessing.std == (0.26862954, 0.26130258, 0.27577711)


def test_a_dinov3_folder_and_the_dinov3_short_names(tmp_path: Path) -> None:
    """A DINOv3 folder is the dinov3 family with its registers and gated MLP; the short names of the
    released DINOv3 models point at their HF ids; DINOv2's position resize is refused (RoPE)."""
    config = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=32, image_size=32, patch_size=16, num_register_tokens=4,
                             use_gated_mlp=True)  # fmt: skip
    DINOv3ViTModel(config).save_pretrained(tmp_path / "dinov3")
    info = load_backbone(tmp_path / "dinov3").info
    assert (info.family, info.num_registers, info.patch_size, info.swiglu) == ("dinov3", 4, 16, True)
    assert (info.pos_interpolation, info.preprocessing.resize, info.preprocessing.interpolation) == (
        "hf",
        "square",
        "bilinear",
    )
    with pytest.raises(UnknownBackboneError, match="is a dinov3 model"):
        load_backbone(tmp_path / "dinov3", pos_interpolation="original")
    assert resolve_backbone("dinov3_vitb16") == ("hub", "facebook/dinov3-vitb16-pretrain-lvd1689m")
    assert resolve_backbone("dinov3_vit7b16_sat") == ("hub", "facebook/dinov3-vit7b16-pretrain-sat493m")


@pytest.mark.parametrize(
    "hub_env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline", "unreachable"],
)
def test_unreachable_hub_is_one_clear_line(tmp_path: Path, hub_env: dict[str, str]) -> None:
    env = {**os.environ, **hub_env, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--backbone", "dinov2_vits14", "--output", str(tmp_path / "run")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot load 'dinov2_vits14' (facebook/dinov2-small)")
    assert "local folder" in lines[0] and "Traceback" not in result.stderr


def test_cached_hub_weights_load_without_any_network(tmp_path: Path) -> None:
    """A hub id whose weights are in the HF cache loads with the hub unreachable and not offline."""
    snapshot = tmp_path / "hf" / "hub" / "models--tester--tiny-dinov2" / "snapshots" / ("0" * 40)
    tiny_model(registers=4, hidden=32, heads=2, patch=14, image=56).save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    hub = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env = {**os.environ, **hub, "PYTHONPATH": str(REPO)}
    code = """
import sys
attempts = []
sys.addaudithook(lambda event, args: attempts.append(event) if event.startswith("socket.") else None)
from harness.loading import load_backbone
info = load_backbone("tester/tiny-dinov2").info
print(info.source, info.location, info.num_registers, len(attempts))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["hub", "tester/tiny-dinov2", "4", "0"]  # no socket was even opened


def tiny_timm_folder(
    folder: Path, architecture: str = "deit3_small_patch16_224.fb_in22k_ft_in1k"
) -> nn.Module:
    """A random timm model of `architecture` shrunk to 2 blocks of width 32, saved in timm's hub layout."""
    import timm
    from timm.models import save_for_hf

    arguments = {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 32}
    torch.manual_seed(0)
    model = timm.create_model(architecture, pretrained=False, **arguments).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("gamma"):
                parameter.fill_(0.5)  # DeiT III's init (1e-6) would hide the blocks
    save_for_hf(model, str(folder), model_args=arguments, safe_serialization=True)
    return model


def test_a_timm_folder_loads_with_its_pretrained_config(tmp_path: Path) -> None:
    """A folder in timm's hub layout (save_for_hf) is the timm family, prepared as its pretrained
    config says (DeiT III: crop_pct 1.0, bicubic), any image size (timm's own position resize);
    output/full equals the model's pre-logits output."""
    model = tiny_timm_folder(tmp_path / "deit3")
    backbone = load_backbone(tmp_path / "deit3")
    info = backbone.info
    assert (info.family, info.source, info.pos_interpolation) == ("timm", "folder", "timm")
    assert (info.hidden_size, info.num_layers, info.num_heads, info.patch_size) == (32, 2, 2, 16)
    preprocessing = info.preprocessing
    assert (preprocessing.resize, preprocessing.resize_ratio, preprocessing.interpolation) == (
        "shorter_crop",
        1.0,
        "bicubic",
    )
    import timm

    pixels = torch.randn(2, 3, 48, 64)
    dynamic = timm.create_model("deit3_small_patch16_224", depth=2, embed_dim=32, num_heads=2, img_size=32,
                                dynamic_img_size=True).eval()  # fmt: skip
    dynamic.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = dynamic.forward_head(dynamic.forward_features(pixels), pre_logits=True)
    decomposition = backbone(pixels)
    assert_close(decomposition["output/full"], expected, atol=1e-5 * float(expected.abs().max()), rtol=0)


def test_timm_names_are_checked_before_anything_loads() -> None:
    assert resolve_backbone("timm:deit3_base_patch16_224.fb_in22k_ft_in1k") == (
        "timm",
        "deit3_base_patch16_224.fb_in22k_ft_in1k",
    )
    assert resolve_backbone("timm/deit3_base_patch16_224.fb_in22k_ft_in1k") == (  # timm's hub copy
        "timm",
        "deit3_base_patch16_224.fb_in22k_ft_in1k",
    )
    with pytest.raises(UnknownBackboneError, match=r"Did you mean 'timm:deit3_base_patch16_224\."):
        load_backbone("timm:deit3_base_patch16")


def test_cached_timm_weights_load_without_any_network(tmp_path: Path) -> None:
    """`timm:<name>` whose weights are in the HF cache loads with the hub unreachable and not offline;
    without them, it is one line."""
    import timm
    from safetensors.torch import save_file

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    snapshot = (
        tmp_path / "hf" / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k" / "snapshots"
    )
    snapshot = snapshot / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.manual_seed(0)
    save_file(timm.create_model(name, pretrained=False).state_dict(), str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    hub = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env = {**os.environ, **hub, "PYTHONPATH": str(REPO)}
    code = f"""
import sys
attempts = []
sys.addaudithook(lambda event, args: attempts.append(event) if event.startswith("socket.") else None)
from harness.loading import load_backbone
info = load_backbone("timm:{name}").info
print(info.source, info.family, info.hidden_size, info.num_layers, len(attempts))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["timm", "timm", "192", "12", "0"]  # no socket was even opened
    uncached = "timm:deit3_small_patch16_224.fb_in22k_ft_in1k"
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--backbone", uncached, "--output", str(tmp_path / "run")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot load '{uncached}' (timm/deit3_small_patch16_224")


def test_a_deit_folder_squashes_to_a_square_then_crops(tmp_path: Path) -> None:
    """A distilled DeiT is the deit family with its distillation token; its processor resizes to a
    256 x 256 square and crops 224 (square_crop at 256 / 224), by default and from its config."""
    from transformers import DeiTConfig, DeiTModel

    config = DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        image_size=56, patch_size=14)  # fmt: skip
    DeiTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "deit")
    info = load_backbone(tmp_path / "deit").info
    assert (info.family, info.num_distillation) == ("deit", 1)
    assert (info.preprocessing.resize, info.preprocessing.resize_ratio) == ("square_crop", 256 / 224)
    processor = {"do_center_crop": True, "size": {"height": 288, "width": 288}, "resample": 3,
                 "crop_size": {"height": 224, "width": 224}}  # fmt: skip
    (tmp_path / "deit" / "preprocessor_config.json").write_text(json.dumps(processor))
    preprocessing = load_backbone(tmp_path / "deit").info.preprocessing
    assert (preprocessing.resize, preprocessing.resize_ratio, preprocessing.interpolation) == (
        "square_crop",
        288 / 224,
        "bicubic",
    )


def test_bad_timm_names_folders_and_processor_configs_are_one_line(tmp_path: Path) -> None:
    """An unknown timm tag, a timm model that is no ViT, a hybrid ViT, a truncated weight file, and a
    processor config that is not JSON or has the wrong mean / std: each one line, no traceback."""
    import timm
    from timm.models import save_for_hf

    with pytest.raises(
        UnknownBackboneError, match=r"timm has no pretrained model 'deit3_base_patch16_224\.fb_in22k'"
    ):
        load_backbone("timm:deit3_base_patch16_224.fb_in22k")
    save_for_hf(
        timm.create_model("resnet18", num_classes=2), str(tmp_path / "resnet"), safe_serialization=True
    )
    with pytest.raises(UnknownBackboneError, match=r"ResNet is not a supported ViT"):  # loads, then refused
        load_backbone(tmp_path / "resnet")
    hybrid = timm.create_model("vit_tiny_r_s16_p8_224", depth=1, num_classes=0)
    save_for_hf(hybrid, str(tmp_path / "hybrid"), model_args={"depth": 1}, safe_serialization=True)
    with pytest.raises(UnknownBackboneError, match="a HybridEmbed patch embedding"):
        load_backbone(tmp_path / "hybrid")
    tiny_timm_folder(tmp_path / "deit3")
    weights = tmp_path / "deit3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnknownBackboneError, match="timm cannot load it"):
        load_backbone(tmp_path / "deit3")
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=56, patch_size=14)  # fmt: skip
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    processor = tmp_path / "vit" / "preprocessor_config.json"
    processor.write_text("{not json")
    with pytest.raises(UnknownBackboneError, match="is not a readable processor config"):
        load_backbone(tmp_path / "vit")
    processor.write_text("[0.5, 0.5]")
    with pytest.raises(UnknownBackboneError, match="is not a readable processor config: not a JSON object"):
        load_backbone(tmp_path / "vit")
    processor.write_text(json.dumps({"image_mean": [0.5], "image_std": [0.5]}))
    with pytest.raises(UnknownBackboneError, match="must be 3 numbers each"):
        load_backbone(tmp_path / "vit")


def test_older_processor_configs_with_integer_sizes() -> None:
    """`size` / `crop_size` as plain numbers (older configs) read as transformers reads them: a
    square for ViT / DeiT processors, the shorter side for CLIP's."""
    from transformers import CLIPImageProcessor, DeiTImageProcessor

    from harness.processors import processor_preprocessing

    # how transformers itself reads the numbers
    assert dict(DeiTImageProcessor(size=256).size) == {"height": 256, "width": 256}
    assert dict(CLIPImageProcessor(size=224).size) == {"shortest_edge": 224}
    defaults = Preprocessing((0.5,) * 3, (0.5,) * 3, "square", "bilinear", 1.0)
    deit = {
        "image_processor_type": "DeiTImageProcessor",
        "do_center_crop": True,
        "size": 256,
        "crop_size": 224,
    }
    assert processor_preprocessing(deit, defaults).resize == "square_crop"
    assert processor_preprocessing(deit, defaults).resize_ratio == 256 / 224
    clip = {
        "image_processor_type": "CLIPImageProcessor",
        "do_center_crop": True,
        "size": 224,
        "crop_size": 224,
    }
    clip_preprocessing = processor_preprocessing(clip, defaults)
    assert (clip_preprocessing.resize, clip_preprocessing.resize_ratio) == ("shorter_crop", 1.0)
