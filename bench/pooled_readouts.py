"""Per family and readout, on tiny random models built in code: the pooler error (max |output/full -
the model's own pooled output|) relative to that output's scale, at two square resolutions.

    python bench/pooled_readouts.py

The models are the tests' (`tests/harness/test_family_knowledge.py` MODELS, and
`tests/harness/test_pooled.py` for timm's attention-pooled ViTs); float32 on CPU. open_clip reads
its own image size only (its position grid is not resized), so it has one resolution.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import DecomposingBackbone
from tests.harness.test_family_knowledge import MODELS
from tests.harness.test_pooled import WITH_PREFIX, tiny_timm_map


def main() -> None:
    models = dict(MODELS)
    models["timm (map, no [CLS])"] = tiny_timm_map
    models["timm (map, [CLS] + 2 registers)"] = lambda: tiny_timm_map(**WITH_PREFIX)
    print("| family | readout | groups | resolution | pooler error / scale |")
    print("|---|---|---|---|---|")
    for name, make in models.items():
        backbone = DecomposingBackbone.from_model(make())
        info, patch = backbone.info, backbone.info.patch_size
        fixed = backbone.family.fixed_resolution()
        sides = (fixed,) if fixed is not None else (4 * patch, 6 * patch)
        for side in sides:
            pixels = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(side))
            with torch.no_grad():
                decomposition = backbone(pixels)
            scale = decomposition["output/full"].abs().max()
            relative = float(decomposition.pooler_error / scale)
            print(f"| {name} | {info.readout} | {', '.join(info.groups)} | {side} | {relative:.1e} |")


if __name__ == "__main__":
    main()
