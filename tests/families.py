"""One random model of every family, saved the way a user would have it (a save_pretrained folder, a
folder in timm's hub layout, an original .pth): for the cross-family tests and bench/family_sweep.py."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models import save_for_hf
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPModel,
    DeiTConfig,
    DeiTModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    ViTConfig,
    ViTModel,
)

from tests.conftest import tiny_model

FAMILY_FOLDERS: dict[str, str] = {
    "dinov2_reg": "dinov2", "dinov3": "dinov3", "clip": "clip", "vit": "vit", "deit": "deit",
    "deit3": "timm", "dino.pth": "dino",
}  # fmt: skip
"""The saved name of each model -> the family its results.json records."""


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """Biases, tokens and layer scales moved off their init (0 / 1 / tiny), so every family's groups
    contribute something; seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("bias", "lambda1", "gamma")) or "token" in name:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(0.5 * noise)
    return model.eval()


def save_family_models(
    root: Path, hidden: int = 64, layers: int = 2, heads: int = 1, patch: int = 14, image: int = 56
) -> dict[str, Path]:
    """Save one random model per family under `root`; name (`FAMILY_FOLDERS`) -> the path to load.

    `hidden` / `heads` must give 64-wide heads (an original .pth's heads are read as width / 64).
    """
    root.mkdir(parents=True, exist_ok=True)
    mlp = 4 * hidden
    common = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": mlp, "patch_size": patch, "image_size": image}  # fmt: skip
    paths = {name: root / name for name in FAMILY_FOLDERS}
    dinov2 = tiny_model(registers=4, hidden=hidden, layers=layers, heads=heads, patch=patch, image=image)
    dinov2.save_pretrained(paths["dinov2_reg"])
    torch.manual_seed(1)
    dinov3 = DINOv3ViTModel(DINOv3ViTConfig(**common, num_register_tokens=4, layerscale_value=0.5))
    perturbed(dinov3, 1).save_pretrained(paths["dinov3"])
    torch.manual_seed(2)
    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    clip = CLIPModel(CLIPConfig(vision_config=common, text_config=text, projection_dim=hidden // 2))
    perturbed(clip, 2).save_pretrained(paths["clip"])
    torch.manual_seed(3)
    vit = ViTModel(ViTConfig(**common), add_pooling_layer=False)
    perturbed(vit, 3).save_pretrained(paths["vit"])
    torch.manual_seed(6)
    deit = DeiTModel(DeiTConfig(**common), add_pooling_layer=False)  # distilled: [CLS], distillation, patches
    perturbed(deit, 6).save_pretrained(paths["deit"])
    shape = {"depth": layers, "embed_dim": hidden, "num_heads": heads, "img_size": image, "patch_size": patch}
    torch.manual_seed(4)
    deit3 = perturbed(timm.create_model("deit3_small_patch16_224.fb_in22k_ft_in1k", **shape), 4)
    save_for_hf(deit3, str(paths["deit3"]), model_args=shape, safe_serialization=True)
    torch.manual_seed(5)  # DINO v1's layout is timm's ViT without layer scale, heads of 64
    dino = perturbed(timm.create_model("vit_small_patch16_224", **shape, num_classes=0), 5)
    torch.save(dino.state_dict(), paths["dino.pth"])
    return paths
