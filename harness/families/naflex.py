"""timm's `NaFlexVit` with timm's plain blocks on whole images (RADIO v3: [CLS] and 7 registers;
timm's NaFlex SigLIP towers: an attention pool)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from timm.models.naflexvit import NaFlexVit
from torch import Tensor

from harness.families.timm_vit import TimmFamily, blocks_problem, pooling_problem


class NaFlexFamily(TimmFamily):
    """timm's `NaFlexVit` run on whole images (its NaFlex patch lists are not read): the embedding
    module `embeds` patchifies the image and resizes its position table to the grid (RADIO: stored on
    a 128 x 128 grid, resized keeping the aspect ratio), then `norm_pre`; pre-norm timm `Block`s,
    the same views as `TimmFamily`; [CLS] (where it has one) and registers (`reg_tokens`: RADIO's
    extra summary tokens) first. Read from the [CLS] row (`global_pool='token'`: `fc_norm(norm(x))`)
    or by its `AttentionPoolLatent` over every token. Refused: EVA blocks or RoPE (`rope_type`),
    a pool that leaves the prefix tokens out."""

    name = "naflex"
    model_types = (NaFlexVit,)
    short_names: ClassVar[Mapping[str, str]] = {  # NVIDIA's C-RADIOv3 image towers, in timm
        "radio_v3_b16": "timm:naflexvit_base_patch16_radio_v3.c_radio",
        "radio_v3_l16": "timm:naflexvit_large_patch16_radio_v3.c_radio",
        "radio_v3_h16": "timm:naflexvit_huge_patch16_radio_v3.c_radio",
        "radio_v3_g16": "timm:naflexvit_giant_patch16_radio_v3.c_radio",
    }

    @staticmethod
    def unsupported(model: Any) -> str:
        if problem := pooling_problem(model, model.has_class_token):
            return problem
        if model.rope is not None:
            return "a rotary position embedding"
        if len(set(model.embeds.patch_size)) != 1:
            return f"{'x'.join(map(str, model.embeds.patch_size))} patches"
        return blocks_problem(model.blocks)

    def fixed_resolution(self) -> int | None:
        return None  # its embedding resizes the position table to any grid

    def prefix(self) -> tuple[int, int]:
        return int(self.model.has_class_token), self.model.num_reg_tokens

    def patch_sides(self) -> tuple[int, int]:
        height, width = self.model.embeds.patch_size
        return int(height), int(width)

    def embed(self, pixel_values: Tensor) -> Tensor:
        embedded: Tensor = self.model._forward_embeds(pixel_values, None, None, None)["patches"]
        return embedded
