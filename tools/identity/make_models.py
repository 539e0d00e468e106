"""Tiny saved models for the identity runs: an HF CLIP folder (with preprocessor_config), a timm folder."""

import sys
from pathlib import Path

import timm
import torch
from timm.models._hub import save_for_hf
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
cfg = CLIPVisionConfig(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)
CLIPVisionModel(cfg).save_pretrained(out / "clip")
CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
    out / "clip"
)
m = timm.create_model(
    "vit_tiny_patch16_224",
    pretrained=False,
    depth=2,
    reg_tokens=1,
    num_classes=0,
    dynamic_img_size=True,
    img_size=32,
)
save_for_hf(m, out / "timm")
