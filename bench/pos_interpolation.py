"""How far transformers' position-grid resize is from the original DINOv2 one, and how close ours is.

    python bench/pos_interpolation.py [--std 1.0]

A tiny no-register DINOv2 on the released 37 x 37 grid (position table drawn with `--std`; trained
tables are O(1), the HF init's is 0.02) saved as an original .pth; at 224, 336, 518 and 224x308 px,
the max |output/full| difference of this tool's original resize and of transformers' resize to a
forward whose position table is resized by the independent numpy bicubic of
tests/harness/test_positions.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import load_backbone
from tests.conftest import tiny_model
from tests.harness.test_checkpoint import to_original_format
from tests.harness.test_positions import PATCH, SIDE, with_reference_positions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--std", type=float, default=1.0, help="std of the random position table")
    args = parser.parse_args()
    model = tiny_model(0, False, hidden=64, heads=1, layers=2, patch=PATCH, image=SIDE * PATCH)
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_(std=args.std, generator=torch.Generator().manual_seed(5))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dinov2_vits14_pretrain.pth"
        torch.save(to_original_format(model), path)
        original, hf = load_backbone(path), load_backbone(path, pos_interpolation="hf")
    reference_model = with_reference_positions(model)
    print(f"position table std {args.std}: max |output/full - reference|")
    print(f"{'size':>9} {'original':>10} {'hf':>10} {'output scale':>13}")
    for height, width in ((224, 224), (336, 336), (518, 518), (224, 308)):
        pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            reference = reference_model(pixel_values=pixels).pooler_output
        ours = (original(pixels)["output/full"] - reference).abs().max().item()
        theirs = (hf(pixels)["output/full"] - reference).abs().max().item()
        size = f"{height}x{width}" if height != width else str(height)
        print(f"{size:>9} {ours:>10.1e} {theirs:>10.1e} {reference.abs().max().item():>13.2f}")


if __name__ == "__main__":
    main()
