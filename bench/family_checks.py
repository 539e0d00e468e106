"""Per family, on a small random model saved as a user would have it: how far the decomposition is
from the model's own computation.

    python bench/family_checks.py [--hidden 64] [--layers 3] [--image 56] [--keep DIR]

Each model of tests/families.py is loaded with `load_backbone` (the real loading path) and run on
two non-square images (56 x 70 px, 14 px patches). Printed per family, float32 on CPU:

- `output`: max |output/full - the model's own pooled [CLS] output|, and that output's scale
  (max |.|); for CLIP also max |projection/full - its image embedding|;
- `split`: max over blocks, groups and images of |depth split - the model's own attention mass|,
  where the model's own [CLS] attention row comes from its eager attention (`output_attentions`;
  timm: the softmax its non-fused attention computes, read at `attn_drop`). The DINO `.pth` is
  compared with timm's ViT of the same weights instead (an independent implementation).

With `--keep DIR` the models stay in DIR, one per family, for a comparison run such as
`python evaluate.py --backbone DIR/* --data demo --layers all --output runs/families`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import DecomposingBackbone, load_backbone
from harness.decomposition import DEPTH_PREFIX
from harness.extras import Depth
from tests.families import FAMILY_FOLDERS, save_family_models


def own_attention_rows(backbone: DecomposingBackbone, pixels: Tensor) -> list[Tensor]:
    """The model's own [CLS] attention row of every block (batch, heads, tokens)."""
    model: Any = backbone.model
    if backbone.info.family == "timm":
        rows: list[Tensor] = []
        for block in model.blocks:
            block.attn.fused_attn = False
            block.attn.attn_drop.register_forward_hook(lambda m, i, o: rows.append(o[:, :, 0].detach()))
        model.forward_features(pixels)
        return rows
    model.set_attn_implementation("eager")
    tower = getattr(model, "vision_model", model)
    arguments = (
        {} if backbone.info.family in ("dinov2", "dino", "dinov3") else {"interpolate_pos_encoding": True}
    )
    return [a[:, :, 0] for a in tower(pixel_values=pixels, output_attentions=True, **arguments).attentions]


def timm_reference(path: Path, pixels: Tensor) -> Tensor:
    """timm's ViT with the weights of a DINO-layout `.pth` (same grid: nothing resized)."""
    import timm

    state = torch.load(path, weights_only=True)
    width, heads = state["cls_token"].shape[-1], state["cls_token"].shape[-1] // 64
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    patch = state["patch_embed.proj.weight"].shape[-1]
    side = round((state["pos_embed"].shape[1] - 1) ** 0.5) * patch
    model = timm.create_model("vit_small_patch16_224", depth=depth, embed_dim=width, num_heads=heads,
                              img_size=side, patch_size=patch, num_classes=0).eval()  # fmt: skip
    model.load_state_dict(state)
    return model(pixels)


@torch.no_grad()
def check(name: str, path: Path, image: int) -> str:
    backbone = load_backbone(path)
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, image, image) if name == "dino.pth" else (2, 3, 56, 70)  # the .pth reference: its grid
    pixels = torch.randn(shape, generator=generator)
    decomposition = backbone(pixels, extras=[Depth(tuple(range(1, backbone.info.num_layers + 1)))])
    own = timm_reference(path, pixels) if name == "dino.pth" else backbone.family.pooled(pixels)
    line = (
        f"| {name} | {backbone.info.family} | {(decomposition['output/full'] - own).abs().max():.1e} "
        f"| {own.abs().max():.2f} |"
    )
    if "projection/full" in decomposition:
        embeds = backbone.model(pixel_values=pixels, interpolate_pos_encoding=True).image_embeds
        line += f" {(decomposition['projection/full'] - embeds).abs().max():.1e} |"
    else:
        line += " |"
    layout = decomposition.layout
    worst = 0.0
    for column, row in enumerate(own_attention_rows(backbone, pixels)):
        for group in layout.groups:
            mass = row[:, :, layout.slice(group)].sum(-1).mean(1)
            got = decomposition[f"{DEPTH_PREFIX}split/{group}"][:, column]
            worst = max(worst, float((got - mass).abs().max()))
    return f"{line} {worst:.1e} | {', '.join(layout.groups)} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=64, help="width (a multiple of 64)")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--image", type=int, default=56, help="pretraining image size (14 px patches)")
    parser.add_argument("--keep", type=Path, help="save the models in this new folder, and keep them")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"{args.keep} exists; --keep takes a new folder")
    with tempfile.TemporaryDirectory() as temporary:
        folder, heads = args.keep or Path(temporary), args.hidden // 64
        paths = save_family_models(
            folder, hidden=args.hidden, layers=args.layers, heads=heads, image=args.image
        )
        print("| model | family | max abs output/full - own | own scale | projection/full - image embedding "
              "| max abs split - own attention mass | groups |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for name in FAMILY_FOLDERS:
            print(check(name, paths[name], args.image))


if __name__ == "__main__":
    main()
