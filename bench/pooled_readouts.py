"""Per family and readout, on tiny random models built in code: the pooler error (max |output/full -
the model's own pooled output|) relative to that output's scale, at two square resolutions; with
`--timing`, what a decomposing call costs against the model's own forward, in the same process, on
base-sized random models of each readout (SigLIP-B/16 `map`, timm ViT-B/16 `mean`, DINOv2-B/14 `cls`;
224 px, batch 8, no_grad, CPU float32), and with the artifact split.

    python bench/pooled_readouts.py [--timing] [--repeats 5]

The models are the tests' (`tests/harness/test_family_knowledge.py` MODELS, `test_pooled.py` and
`test_eva.py` for the attention-pooled ones); float32 on CPU. open_clip and AIMv2 with a learned
position table read their own image size only, so they have one resolution.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import against_call, paired_times
from harness import DecomposingBackbone, load_backbone
from tests.harness.test_eva import tiny_eva
from tests.harness.test_family_knowledge import MODELS
from tests.harness.test_pooled import WITH_PREFIX, tiny_aimv2, tiny_timm_map


def pooler_errors() -> None:
    """The table of pooler errors per family and readout."""
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


def base_models() -> dict[str, Callable[[], nn.Module]]:
    """Random base-sized models of each readout (no download)."""

    def siglip() -> nn.Module:
        return SiglipVisionModel(SiglipVisionConfig(image_size=224, patch_size=16)).eval()

    def timm_mean() -> nn.Module:
        return timm.create_model(
            "vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="avg"
        ).eval()

    def dinov2() -> nn.Module:
        return load_backbone("random:dinov2_vitb14").model

    return {"siglip_b16 (map)": siglip, "timm_vitb16 (mean)": timm_mean, "dinov2_b14 (cls)": dinov2}


def timed(backbone: DecomposingBackbone, repeats: int) -> dict[str, list[float]]:
    """A decomposing call, the model's own forward and a call with the artifact split, alternating."""
    side = 224 if backbone.info.patch_size == 16 else 224 // 14 * 14
    pixels = torch.randn(8, 3, side, side)
    split = backbone.with_artifacts(1.0)
    with torch.no_grad():
        return paired_times(
            {
                "call": lambda: backbone(pixels),
                "own forward": lambda: backbone.family.pooled(pixels),
                "artifact split": lambda: split(pixels),
            },
            repeats,
        )


def timing(repeats: int) -> None:
    """Per base-sized model: the call against the model's own forward, in the same process."""
    for name, make in base_models().items():
        torch.manual_seed(0)
        print(against_call(name, timed(DecomposingBackbone.from_model(make()), repeats)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    pooler_errors()
    if arguments.timing:
        timing(arguments.repeats)


if __name__ == "__main__":
    main()
