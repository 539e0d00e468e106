"""Per family and readout, on tiny random models built in code: the pooler error (max |output/full -
the model's own pooled output|) relative to that output's scale, at two square resolutions.

    python bench/pooled_readouts.py

The models are the tests' (`tests/harness/test_family_knowledge.py` MODELS, `test_pooled.py` and
`test_eva.py` for the attention-pooled ones); float32 on CPU. open_clip and AIMv2 with a learned
position table read their own image size only, so they have one resolution.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import DecomposingBackbone
from tests.harness.test_eva import tiny_eva
from tests.harness.test_family_knowledge import MODELS
from tests.harness.test_pooled import WITH_PREFIX, tiny_aimv2, tiny_timm_map


def main() -> None:
    models = dict(MODELS)
    models["timm (map, no [CLS])"] = tiny_timm_map
    models["timm (map, [CLS] + 2 registers)"] = lambda: tiny_timm_map(**WITH_PREFIX)
    models["aimv2 (native: sine-cosine positions)"] = lambda: tiny_aimv2(native=True)
    models["eva (PE-core: map, RoPE)"] = lambda: tiny_eva("vit_pe_core_tiny_patch16_384")
    models["eva (EVA-02, map)"] = lambda: tiny_eva(global_pool="map")
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
