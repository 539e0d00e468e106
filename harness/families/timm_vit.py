"""timm's VisionTransformer (DeiT III and every timm ViT with a [CLS] token)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from timm.layers import AttentionPoolLatent, LayerScale, PatchEmbed
from timm.layers.attention import Attention as TimmAttention
from timm.models.vision_transformer import Block as TimmBlock
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from common.preparation import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from harness.families.base import (
    AttentionView,
    BlockView,
    Family,
    GammaScale,
    PoolView,
    UnitScale,
    mean_view,
    stated_preparation,
)
from harness.tokens import TokenLayout

log = logging.getLogger(__name__)


class _FusedPart(nn.Module):
    """q, k or v of a fused `qkv` projection (timm; k or v of an attention pool's `kv`, `parts` 2): its
    rows of the weight, then the per-head norm the model applies to it (timm's q_norm / k_norm;
    identity by default). Forward hooks go on the fused projection and see this part of its output,
    so they fire in the model's own pass."""

    def __init__(self, qkv: nn.Linear, part: int, heads: int, norm: nn.Module, parts: int = 3) -> None:
        super().__init__()
        self.qkv, self.norm, self.heads = qkv, norm, heads
        width = qkv.out_features // parts
        self.rows = slice(part * width, (part + 1) * width)

    def _finish(self, projected: Tensor) -> Tensor:
        per_head = projected.unflatten(-1, (self.heads, -1))
        return self.norm(per_head).flatten(-2)

    def forward(self, inputs: Tensor) -> Tensor:
        bias = None if self.qkv.bias is None else self.qkv.bias[self.rows]
        return self._finish(nn.functional.linear(inputs, self.qkv.weight[self.rows], bias))

    def register_forward_hook(self, hook: Any, **kwargs: Any) -> Any:
        def on_fused(module: nn.Module, inputs: Any, output: Tensor) -> Any:
            return hook(self, inputs, self._finish(output[..., self.rows]))

        return self.qkv.register_forward_hook(on_fused, **kwargs)


class TimmFamily(Family):
    """timm's `VisionTransformer` (DeiT III, timm's ViTs, DINOv2 / CLIP in timm's layout): fused `qkv`
    (q and k after the model's q_norm / k_norm), layer scale `ls1`/`ls2` where present, registers
    (`reg_token`) after [CLS]; `norm_pre` is the sequence entering the first block; the readout is
    `fc_norm(norm(x))` of the [CLS] row, the model's pre-logits output with `global_pool='token'`;
    with `global_pool='map'` (timm's SigLIP) its `AttentionPoolLatent` on `norm(x)`, then `fc_norm`
    (a "map" readout; no [CLS] token needed). Position embeddings are resized as the model does it
    (`dynamic_img_size`); images are prepared as the model's pretrained config says."""

    name = "timm"
    embeddings_normalise = True  # `embeddings` is its pre-norm
    model_types: ClassVar[tuple[type[nn.Module], ...]] = (VisionTransformer,)
    preprocessing = Preprocessing(  # timm's default: ImageNet, crop_pct 0.875, bicubic
        IMAGENET_MEAN, IMAGENET_STD, resize="shorter_crop", interpolation="bicubic", resize_ratio=1 / 0.875
    )
    reads_processor_config = False  # the model carries its own (`pretrained_cfg`)
    own_pos_interpolation = "timm"  # timm's resample_abs_pos_embed

    def pos_interpolation(self, asked: str | None, as_released: bool) -> str:
        """timm's resize (bicubic with antialiasing), or for DeiT III DeiT's own ("original": bicubic
        to the exact grid without antialiasing, as its `main.py` at another `--input-size`;
        `harness.positions.DeiTResizeVisionTransformer`) when asked, and by default for an original
        DeiT III `.pth` (`as_released`: the authors' weights, the authors' rule)."""
        architecture = str((getattr(self.model, "pretrained_cfg", None) or {}).get("architecture", ""))
        if architecture.startswith("deit3") and (asked == "original" or (asked is None and as_released)):
            return "original"
        return super().pos_interpolation(asked, as_released)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        problem = self.unsupported(model)
        if problem:
            raise ValueError(f"{type(model).__name__} ({problem}) is not a supported ViT")
        tower: Any = model
        pool = tower.attn_pool
        averaged = pool is None and tower.global_pool == "avg"
        self.readout = "map" if pool is not None else "mean" if averaged else "cls"
        # a [CLS] readout: fc_norm(norm(x)) of the [CLS] row; a pool reads norm(x), fc_norm follows it
        self._final_norm: nn.Module = (
            tower.norm if pool is not None or averaged else nn.Sequential(tower.norm, tower.fc_norm)
        )
        self._pool = None
        if pool is not None:
            self._pool = timm_pool_view(pool, tower.fc_norm)
        elif averaged:  # the mean of the patch tokens (timm leaves the prefix out), then fc_norm
            self._pool = mean_view(
                tower.norm, tower.fc_norm, tower.num_prefix_tokens, _width_parameter(tower)
            )

    @staticmethod
    def unsupported(model: Any) -> str:
        """What keeps the decomposition from this timm model ("" when nothing does)."""
        if problem := pooling_problem(model, model.cls_token is not None):
            return problem
        if type(model.patch_embed) is not PatchEmbed:  # a hybrid's CNN stem: its stride is no patch size
            return f"a {type(model.patch_embed).__name__} patch embedding"
        if len(set(model.patch_embed.patch_size)) != 1:
            return f"{'x'.join(map(str, model.patch_embed.patch_size))} patches"
        if getattr(model, "dist_token", None) is not None:
            return "a distillation token"
        if model.num_prefix_tokens != int(model.cls_token is not None) + model.num_reg_tokens:
            return f"{model.num_prefix_tokens} prefix tokens"
        return blocks_problem(model.blocks)

    def preparation(self, processor_config: Mapping[str, Any] | None = None) -> Preprocessing:
        """As the model's pretrained config says (over timm's default where it is silent): mean/std,
        interpolation, `crop_pct` (the resize ratio is 1 / crop_pct), `crop_mode` ("center": the
        shorter side, then the crop; "squash": a square, then the crop)."""
        config = getattr(self.model, "pretrained_cfg", None) or {}
        settings = stated_preparation(config)
        if "crop_pct" in config:  # timm: resize the shorter side to size / crop_pct, then crop
            settings["resize_ratio"] = 1 / float(config["crop_pct"])
        mode = config.get("crop_mode", "center")
        if mode == "squash":  # a square of size / crop_pct, then the crop
            settings["resize"] = "square_crop"
        elif mode != "center":  # "border" (pad to a square): not one of the transforms here
            log.warning("timm crop_mode %r is prepared as 'center' (shorter side, then a crop)", mode)
        return replace(self.preprocessing, **settings)

    def architecture(self) -> dict[str, Any]:
        model = self.model
        return {
            "hidden_size": model.embed_dim,
            "num_layers": len(model.blocks),
            "num_heads": model.blocks[0].attn.num_heads,
            "num_registers": self.prefix()[1],
            "patch_size": self.patch_sides()[0],
            "swiglu": type(model.blocks[0].mlp).__name__ != "Mlp",
            "projection_dim": 0,
            "num_distillation": 0,
            "mlp_size": self.mlp_size(),
            "num_cls": self.prefix()[0],
        }

    def fixed_resolution(self) -> int | None:
        """The training size, unless the model resizes its grid (`dynamic_img_size`: timm names and
        folders are loaded with it; a model built without it reads its own size only)."""
        if self.model.dynamic_img_size:
            return None
        return int(self.model.patch_embed.img_size[0])

    def prefix(self) -> tuple[int, int]:
        """Its [CLS] tokens (0 or 1) and registers, in that order before the patches."""
        return int(self.model.cls_token is not None), self.model.num_reg_tokens

    def patch_sides(self) -> tuple[int, int]:
        """The patch's height and width in pixels."""
        height, width = self.model.patch_embed.patch_size
        return int(height), int(width)

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.blocks)

    def view(self, block: Any) -> Any:
        attention = block.attn
        heads = attention.num_heads
        projections = [
            _FusedPart(attention.qkv, part, heads, norm)
            for part, norm in enumerate((attention.q_norm, attention.k_norm, nn.Identity()))
        ]
        query, key, value = projections
        view = AttentionView(query, key, value, attention.proj, heads, attention.head_dim, attention.scale)
        scales = [
            GammaScale(scale) if isinstance(scale, LayerScale) else UnitScale(attention.proj)
            for scale in (block.ls1, block.ls2)
        ]
        return BlockView(block.norm1, view, scales[0], block.norm2, block.mlp, scales[1])

    def pool_view(self) -> PoolView | None:
        return self._pool

    @property
    def embeddings(self) -> nn.Module:
        return self.model.norm_pre

    @property
    def final_norm(self) -> nn.Module:
        return self._final_norm

    def embed(self, pixel_values: Tensor) -> Tensor:
        model = self.model
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(pixel_values))))

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)

    def own_classifier(self) -> nn.Linear | None:
        """timm's `head` on the pre-logits output (a model with classes: DeiT III's ImageNet head)."""
        head = self.model.get_classifier()
        return head if isinstance(head, nn.Linear) else None

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.model.blocks(tokens)


def _width_parameter(model: Any) -> Tensor:
    """A parameter of the model's width (the mean readout's identity takes its size, device, dtype)."""
    return model.blocks[-1].attn.proj.weight[0]


def blocks_problem(blocks: Any) -> str:
    """What keeps the decomposition from a timm model's blocks ("" when nothing does): each must be
    timm's pre-norm `Block` with its `Attention`, nothing between the attention and its projection."""
    for block in blocks:
        if type(block) is not TimmBlock or type(block.attn) is not TimmAttention:
            return f"{type(block).__name__} blocks with {type(block.attn).__name__}, not pre-norm Block"
        if not isinstance(block.attn.norm, nn.Identity) or block.attn.gate is not None:
            return "a norm or gate between attention and its output projection"
    return ""


def pooling_problem(model: Any, has_cls: bool) -> str:
    """What keeps the decomposition from a timm model's pooling ("" when nothing does): the [CLS]
    token (which it must have), an attention pool over every token (`unsupported_pool`), or the mean
    of the patches (`global_pool='avg'`, the prefix left out, as timm does by default). A model
    without `pool_include_prefix` (EVA) pools every token and averages the patches."""
    pool = model.global_pool
    if pool not in ("token", "map", "avg"):
        return f"its output pools with {pool!r}, not the [CLS] token, a pool or the mean"
    if model.attn_pool is not None:
        if model.num_prefix_tokens and not getattr(model, "pool_include_prefix", True):
            return "an attention pool that leaves the prefix tokens out"
        return unsupported_pool(model.attn_pool)
    if pool == "avg":
        takes_prefix = model.num_prefix_tokens and getattr(model, "pool_include_prefix", False)
        return "a mean that takes the prefix tokens in" if takes_prefix else ""
    return "" if has_cls else "no [CLS] token"


def unsupported_pool(pool: Any) -> str:
    """What keeps the decomposition from a timm attention pool ("" when nothing does): one latent
    query read as the pooled output, with a query projection and an MLP after it."""
    if type(pool) is not AttentionPoolLatent:
        return f"a {type(pool).__name__} attention pool"
    if pool.latent_len != 1 or pool.pool != "token" or pool.pos_embed is not None:
        return "an attention pool of several latents or with positions of its own"
    if pool.mlp is None or not isinstance(pool.q, nn.Linear):
        return "an attention pool without a query projection or an MLP"
    return ""


def timm_pool_view(pool: Any, after: nn.Module) -> PoolView:
    """timm's `AttentionPoolLatent` under the decomposition's names: its `q` (then `q_norm`), the two
    parts of its `kv` (k then `k_norm`), `proj`, then x + mlp(norm(x)), then `after` (fc_norm)."""
    heads = pool.num_heads
    query = _FusedPart(pool.q, 0, heads, pool.q_norm, parts=1)
    key, value = (
        _FusedPart(pool.kv, part, heads, norm, parts=2)
        for part, norm in enumerate((pool.k_norm, nn.Identity()))
    )
    view = AttentionView(query, key, value, pool.proj, heads, pool.head_dim, pool.scale)
    return PoolView(pool, pool.latent.reshape(-1), view, pool.norm, pool.mlp, after)
