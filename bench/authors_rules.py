"""How far the ports' defaults are from the authors' own code, and how close the authors' rules are,
on random models shaped like the releases (issue 20's "before and after" numbers).

    PYTHONPATH=. python bench/authors_rules.py

Position grids (DINO v1 in transformers' layout, ViT-S/16; DeiT III in timm's, DeiT III-S): the
relative error max |output/full - reference| / max |reference| at 320 and 384 px, where the reference
runs the model's own blocks on tokens whose positions are resized by the authors' rule as the tests
write it from their descriptions (tests/harness/test_dino_v1_resize.py, test_deit3_resize.py).
Preparation (a 427 x 640 photo): the max pixel difference, in normalised units, between the port's
transform and the authors' (DeiT III fb_in1k: timm's crop 0.9 vs DeiT III's 1.0; DeiT: transformers'
squash vs DeiT's shorter side).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.models import save_for_hf
from torch import Tensor
from transformers import ViTConfig, ViTModel

from common.preparation import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from harness import load_backbone
from tests.harness.test_deit3_resize import deit_tokens
from tests.harness.test_dino_v1_resize import dino_embeddings

SIZES = (320, 384)
DEPTH = 4


def relative(ours: Tensor, reference: Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def dino_rows(folder: Path) -> list[str]:
    config = ViTConfig(hidden_size=384, num_hidden_layers=DEPTH, num_attention_heads=6,
                       intermediate_size=1536, image_size=224, patch_size=16)  # fmt: skip
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_()  # trained tables are O(1); the init's is 0.02
    model.save_pretrained(folder / "dino-vits16")
    rows = []
    for size in SIZES:
        pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            tokens = dino_embeddings(model, pixels)
            for block in model.layers:  # transformers' ViT blocks, as the model runs them
                tokens = block(tokens)
            reference = model.layernorm(tokens)[:, 0]
        backbones = {
            rule: load_backbone(folder / "dino-vits16", pos_interpolation=rule) for rule in ("hf", "original")
        }
        errors = {
            rule: relative(backbone(pixels)["output/full"], reference) for rule, backbone in backbones.items()
        }
        rows.append(f"| DINO v1 (vit family), {size} px | {errors['hf']:.1e} | {errors['original']:.1e} |")
    return rows


def deit3_rows(folder: Path) -> list[str]:
    arguments = {"depth": DEPTH}
    torch.manual_seed(0)
    model = timm.create_model("deit3_small_patch16_224.fb_in1k", pretrained=False, **arguments).eval()
    with torch.no_grad():
        model.pos_embed.normal_()
        for name, parameter in model.named_parameters():
            if name.endswith("gamma"):
                parameter.fill_(0.5)  # DeiT III's init (1e-6) would hide the blocks
    save_for_hf(model, str(folder / "deit3"), model_args=arguments, safe_serialization=True)
    rows = []
    for size in SIZES:
        pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        backbones = {
            rule: load_backbone(folder / "deit3", pos_interpolation=rule) for rule in (None, "original")
        }
        loaded = backbones["original"].model
        with torch.no_grad():
            reference = loaded.norm(loaded.blocks(deit_tokens(loaded, pixels)))[:, 0]
        errors = {
            rule: relative(backbone(pixels)["output/full"], reference) for rule, backbone in backbones.items()
        }
        rows.append(f"| DeiT III (timm family), {size} px | {errors[None]:.1e} | {errors['original']:.1e} |")
    return rows


def preparation_rows() -> list[str]:
    photo = Image.fromarray(load_sample_images().images[1])  # 427 x 640

    def difference(port: Preprocessing, authors: Preprocessing) -> float:
        return float((port.transform(224)(photo) - authors.transform(224)(photo)).abs().max())

    deit3_port = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "shorter_crop", "bicubic", 1 / 0.9)
    deit_port = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "square_crop", "bicubic", 256 / 224)
    deit3 = difference(deit3_port, deit3_port.chosen(crop_ratio=1.0))
    deit = difference(deit_port, deit_port.chosen("shorter", 0.875))
    return [
        f"| DeiT III fb_in1k: timm crop 0.9 vs `--crop-ratio 1.0` | {deit3:.2f} |",
        f"| DeiT: processor squash vs `--resize shorter --crop-ratio 0.875` | {deit:.2f} |",
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        print(
            "| model, size | port's default | authors' rule (`--pos-interpolation original`) |\n|---|---|---|"
        )
        for row in dino_rows(Path(folder)) + deit3_rows(Path(folder)):
            print(row)
    print("\n| preparation | max pixel difference (normalised) |\n|---|---|")
    for row in preparation_rows():
        print(row)


if __name__ == "__main__":
    main()
