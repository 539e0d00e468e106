"""open_clip's image towers (`open_clip.transformer.VisionTransformer`, or the `CLIP` holding one as
`.visual`): the OpenCLIP ViTs (LAION), OpenAI's CLIP in open_clip's layout, the models of the
test-time-registers paper. Imported only when such a model is given (`pip install open_clip_torch`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, cast

from torch import Tensor, nn

from common.preparation import Preprocessing
from harness.families.base import BlockView, Family, GammaScale, UnitScale, multihead_view, stated_preparation
from harness.tokens import TokenLayout

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_TOWERS = ("VisionTransformer",)
_HOLDERS = ("CLIP", "CustomTextCLIP")


class _Projection(nn.Module):
    """The tower's `proj` (a (width, output_dim) matrix, x @ proj) as a module: the `projection`
    readout (the image embedding before its normalisation)."""

    def __init__(self, tower: Any) -> None:
        super().__init__()
        self._tower: list[Any] = [tower]  # a reference, not a child

    @property
    def matrix(self) -> Tensor:
        proj: Tensor = self._tower[0].proj
        return proj

    @property
    def out_features(self) -> int:
        return int(self.matrix.shape[1])

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs @ self.matrix.to(inputs.dtype)


class OpenCLIPFamily(Family):
    """open_clip's `VisionTransformer` (or a `CLIP` / `CustomTextCLIP` whose `.visual` is one): pre-norm
    `ResidualAttentionBlock`s with torch's `nn.MultiheadAttention` (fused in-projection), layer scale
    `ls_1`/`ls_2` where present, no registers; `ln_pre` is the sequence entering the first block; the
    readout is `ln_post` of the [CLS] row (`pool_type='tok'`), and `proj` the `projection` readout.
    Its position grid is the model's own size: other resolutions are refused (`fixed_resolution`)."""

    name = "open_clip"
    short_names: ClassVar[Mapping[str, str]] = {  # LAION's OpenCLIP image towers (open_clip's hub layout)
        "openclip_vitb16_laion2b": "open_clip:hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
        "openclip_vitl14_laion2b": "open_clip:hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
        "openclip_vith14_laion2b": "open_clip:hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        "openclip_vitbigg14_laion2b": "open_clip:hf-hub:laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
    }
    model_types: ClassVar[tuple[type[nn.Module], ...]] = ()  # `accepts`: open_clip is imported only when used
    embeddings_normalise = True  # `embeddings` is its pre-norm (`ln_pre`)
    reads_heads = False  # torch's MultiheadAttention: no hook sees the heads before `out_proj`
    reads_processor_config = False
    own_pos_interpolation = "fixed"
    preprocessing = Preprocessing(  # open_clip's image transform for OpenAI's and most LAION weights
        OPENAI_MEAN, OPENAI_STD, resize="shorter_crop", interpolation="bicubic", resize_ratio=1.0
    )

    @classmethod
    def accepts(cls, model: nn.Module) -> bool:
        module = type(model).__module__
        return module.startswith("open_clip") and type(model).__name__ in (*_TOWERS, *_HOLDERS)

    @classmethod
    def type_names(cls) -> tuple[str, ...]:
        return ("open_clip VisionTransformer / CLIP",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        tower: Any = cast(Any, model).visual if type(model).__name__ in _HOLDERS else model
        self.tower = tower
        problem = self.unsupported(self.tower)
        if problem:
            raise ValueError(f"{type(model).__name__} ({problem}) is not a supported ViT")
        self._projection = _Projection(tower) if tower.proj is not None else None

    @staticmethod
    def unsupported(tower: Any) -> str:
        """What keeps the decomposition from this open_clip tower ("" when nothing does)."""
        if type(tower).__name__ not in _TOWERS:
            return f"a {type(tower).__name__} image tower, not a ViT"
        if tower.attn_pool is not None:
            return "an attention-pooling head"
        if tower.pool_type != "tok":
            return f"its output pools with {tower.pool_type!r}, not the [CLS] token"
        if not tower.transformer.batch_first:
            return "sequence-first blocks"
        for block in tower.transformer.resblocks:
            attention = getattr(block, "attn", None)
            if type(attention) is not nn.MultiheadAttention or hasattr(block, "ln_1_kv"):
                return f"{type(block).__name__} blocks, not ResidualAttentionBlock with nn.MultiheadAttention"
            if attention.bias_k is not None or attention.add_zero_attn or not attention._qkv_same_embed_dim:
                return "an attention with extra key / value rows or separate projections"
        return ""

    def preparation(self, processor_config: Mapping[str, Any] | None = None) -> Preprocessing:
        """As the tower's own `preprocess_cfg` says (open_clip sets it on a model it creates: mean,
        std, interpolation, resize mode; the crop is the resized side): "shortest" is the shorter
        side then a centre crop, "squash" the whole image to a square; else the default."""
        config = getattr(self.tower, "preprocess_cfg", None) or {}
        settings = stated_preparation(config)
        mode = config.get("resize_mode", "shortest")
        if mode == "squash":
            settings["resize"] = "square"
        elif mode != "shortest":  # "longest": pad to a square, not one of the transforms here
            log.warning(
                "open_clip resize_mode %r is prepared as 'shortest' (shorter side, then a crop)", mode
            )
        return replace(self.preprocessing, **settings)

    def architecture(self) -> dict[str, Any]:
        tower = self.tower
        blocks = tower.transformer.resblocks
        size = tower.conv1.kernel_size
        return {
            "hidden_size": tower.transformer.width,
            "num_layers": len(blocks),
            "num_heads": blocks[0].attn.num_heads,
            "num_registers": 0,
            "patch_size": int(size[0]),
            "swiglu": False,
            "projection_dim": self._projection.out_features if self._projection is not None else 0,
            "num_distillation": 0,
            "mlp_size": self.mlp_size(),
        }

    def fixed_resolution(self) -> int | None:
        """The only image size its position embedding fits (it does not resize it)."""
        size = self.tower.image_size
        return int(size[0] if isinstance(size, Sequence) else size)

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.tower.transformer.resblocks)

    def view(self, block: Any) -> Any:
        attention = block.attn
        view = multihead_view(attention, block.ln_1)
        scales = [
            GammaScale(scale) if hasattr(scale, "gamma") else UnitScale(attention.out_proj)
            for scale in (block.ls_1, block.ls_2)
        ]
        return BlockView(block.ln_1, view, scales[0], block.ln_2, block.mlp, scales[1])

    @property
    def embeddings(self) -> nn.Module:
        return self.tower.ln_pre

    @property
    def final_norm(self) -> nn.Module:
        return self.tower.ln_post

    @property
    def projection(self) -> nn.Module | None:
        return self._projection

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.tower._embeds(pixel_values)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        """The tower's own pass (`_embeds`, `transformer`, `_pool`, as its `forward` runs them) without
        its final `proj`: the [CLS] row after `ln_post`."""
        tower = self.tower
        pooled, _ = tower._pool(tower.transformer(tower._embeds(pixel_values)))
        return pooled

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.tower.transformer(tokens)


def timm_trunk(model: nn.Module) -> nn.Module | None:
    """The timm model inside an open_clip image tower built on one (`TimmModel`: open_clip's SigLIP
    and other timm towers), or inside a `CLIP` holding such a tower, where nothing follows it (no
    projection, no pool of open_clip's own): the tower's output is the trunk's. None for any other
    model.

    Raises:
        ValueError: a timm tower with a projection or pool of open_clip's own after its trunk.
    """
    visual: Any = cast(Any, model).visual if type(model).__name__ in _HOLDERS else model
    if type(visual).__name__ != "TimmModel" or not type(visual).__module__.startswith("open_clip"):
        return None
    trunk = visual.trunk
    if any(True for _ in visual.head.parameters()) or int(getattr(trunk, "num_classes", 0) or 0):
        raise ValueError(
            f"{type(model).__name__} (an open_clip timm tower with a projection or pool of its own after "
            "its trunk) is not a supported ViT"
        )
    return cast(nn.Module, trunk)
