"""One small adapter per ViT family: everything that differs between families lives in its adapter
(docs/design.md#backbones). On the model: where its blocks, embeddings, final norm and [CLS] readout
are, and a view of each block under the names the decomposition reads. Around the model: its short
names, how transformers loads its checkpoints, how it resizes its position grid, and how its images
are prepared (its default, and whether a checkpoint's processor config overrides it).

A block view exposes `norm1`, `attention.{q_proj, k_proj, v_proj, o_proj, num_attention_heads,
head_dim, scaling}`, `layer_scale1` / `layer_scale2` (with `lambda1`), `norm2` and `mlp`, each the
family's own module where it has one (so hooks on the view's projections fire in the model's own
pass); families without layer scale get a unit scale.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from timm.layers import LayerScale, PatchEmbed
from timm.layers.attention import Attention as TimmAttention
from timm.models.vision_transformer import Block as TimmBlock
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from transformers import (
    AutoModel,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    DeiTModel,
    Dinov2Model,
    Dinov2WithRegistersModel,
    DINOv3ViTModel,
    PretrainedConfig,
    ViTModel,
)

from cls_decoupling.preparation import DINOV2_EVALUATION, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from harness.processors import processor_preprocessing
from harness.tokens import TokenLayout

log = logging.getLogger(__name__)


class UnitScale(nn.Module):
    """Layer scale of a family without one: gamma = 1 (no parameters: runs in its input's dtype)."""

    def __init__(self, like: nn.Linear) -> None:
        super().__init__()
        self._like = [like]  # a reference, not a child: its size, device and dtype

    @property
    def lambda1(self) -> Tensor:
        weight = self._like[0].weight
        return torch.ones(weight.shape[0], device=weight.device, dtype=weight.dtype)

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs


@dataclass(frozen=True)
class LoadAs:
    """How transformers loads a checkpoint: the class whose `from_pretrained` reads it, and the extra
    arguments that call takes."""

    model_class: Any  # a PreTrainedModel class, or AutoModel
    arguments: Mapping[str, Any] = field(default_factory=dict)


class Family(ABC):
    """How one family's model maps onto the decomposition, and what else only the family knows.

    Attributes:
        name: the family's name (results.json `backbone.family`).
        model: the HF (or timm) model.
    """

    name: ClassVar[str]
    model_types: ClassVar[tuple[type[nn.Module], ...]]
    short_names: ClassVar[Mapping[str, str]] = {}
    """Short names of the family's released checkpoints (torch.hub's where it has them) -> HF id."""
    preprocessing: ClassVar[Preprocessing]
    """The family's default image preparation."""
    reads_processor_config: ClassVar[bool] = True
    """Whether a checkpoint's `preprocessor_config.json` (a folder's, or the hub's) overrides
    `preprocessing` (`preparation`)."""
    own_pos_interpolation: ClassVar[str] = "hf"
    """How the model resizes its position grid itself, as results.json records it."""

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model  # a model of one of `model_types`

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        """How transformers should load a checkpoint whose config is `config`, where this family
        needs more than `AutoModel` with no extra arguments; None otherwise (also for a checkpoint of
        another family)."""
        return None

    def preparation(self, processor_config: Mapping[str, Any] | None = None) -> Preprocessing:
        """How this model's images are prepared: the checkpoint's processor config read over the
        family's default where the family reads one (`reads_processor_config`) and one is given;
        else the default.

        Raises:
            ValueError: the processor config's mean / std are not 3 numbers each.
        """
        if processor_config is None or not self.reads_processor_config:
            return self.preprocessing
        return processor_preprocessing(processor_config, self.preprocessing)

    def pos_interpolation(self, asked: str | None, as_released: bool) -> str:
        """How the position grid is resized for other image sizes (results.json
        `backbone.pos_interpolation`): the model's own resize (`own_pos_interpolation`).

        Args:
            asked: what the user asked for (`--pos-interpolation`), None for the family's default.
            as_released: the weights were named as their original release names them (a torch.hub
                short name, an original `.pth`) or are a random model of a released architecture.

        Raises:
            ValueError: `asked` is DINOv2's original resize, which no other family has.
        """
        if asked == "original":
            raise ValueError(
                f"--pos-interpolation original is DINOv2's; it is a {self.name} model (its own resize)"
            )
        return self.own_pos_interpolation

    def architecture(self) -> dict[str, Any]:
        """The `BackboneInfo` fields that describe the architecture: hidden_size, num_layers,
        num_heads, num_registers, patch_size, swiglu (a gated MLP); read from an HF config."""
        config = self.model.config
        return {
            "hidden_size": config.hidden_size,
            "num_layers": config.num_hidden_layers,
            "num_heads": config.num_attention_heads,
            "num_registers": getattr(config, "num_register_tokens", 0),
            "patch_size": int(config.patch_size),  # square patches
            "swiglu": getattr(config, "use_swiglu_ffn", False) or getattr(config, "use_gated_mlp", False),
            "projection_dim": self.projection.out_features if self.projection is not None else 0,
            "num_distillation": 0,
        }

    @property
    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """The blocks the model runs, in order (forward hooks go on these)."""

    @abstractmethod
    def view(self, block: Any) -> Any:
        """`block` under the decomposition's names (see the module docstring)."""

    @property
    def embeddings(self) -> nn.Module:
        """The module whose output is the token sequence entering the first block (transformers'
        `embeddings` unless a family says otherwise)."""
        return self.model.embeddings

    @property
    def projection(self) -> nn.Module | None:
        """A linear map of the pooled output into a joint space (CLIP's `visual_projection`), read
        as the `projection` readout; None for most families."""
        return None

    @property
    def final_norm(self) -> nn.Module:
        """The norm after the last block, whose [CLS] row is the pooled output (transformers'
        `layernorm` unless a family says otherwise)."""
        return self.model.layernorm

    @abstractmethod
    def embed(self, pixel_values: Tensor) -> Tensor:
        """The token sequence entering the first block (batch, tokens, hidden)."""

    @abstractmethod
    def pooled(self, pixel_values: Tensor) -> Tensor:
        """The model's own forward pass; its pooled [CLS] output (batch, hidden)."""

    @abstractmethod
    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        """Every block on a token sequence: the last block's output, before the final norm.

        Args:
            tokens: (batch, tokens, hidden), [CLS] and registers first.
            layout: the token layout of the image the sequence came from.
            patches: (batch, kept) which patches of `layout`'s grid the sequence's patch tokens are,
                when some were deleted (None: all of them, in order). Only families whose blocks
                read positions (RoPE) need it.
        """

    def attention_keys(self, keys: Tensor, layout: TokenLayout) -> Tensor:
        """The keys as the softmax sees them (batch, tokens, hidden), from a block's key projections:
        the projections themselves, unless the family rotates them (RoPE)."""
        return keys


class Dinov2Family(Family):
    """HF `Dinov2Model` / `Dinov2WithRegistersModel`: its blocks already carry the names. Its images
    are prepared with the paper's evaluation transform at every resolution, whatever a checkpoint's
    processor config says; its position grid is resized as the original release does it
    (`harness.positions`) for the released weights, as transformers does it otherwise."""

    name = "dinov2"
    model_types = (Dinov2Model, Dinov2WithRegistersModel)
    short_names: ClassVar[Mapping[str, str]] = {
        "dinov2_vits14": "facebook/dinov2-small",
        "dinov2_vitb14": "facebook/dinov2-base",
        "dinov2_vitl14": "facebook/dinov2-large",
        "dinov2_vitg14": "facebook/dinov2-giant",
        "dinov2_vits14_reg": "facebook/dinov2-with-registers-small",
        "dinov2_vitb14_reg": "facebook/dinov2-with-registers-base",
        "dinov2_vitl14_reg": "facebook/dinov2-with-registers-large",
        "dinov2_vitg14_reg": "facebook/dinov2-with-registers-giant",
    }
    preprocessing = DINOV2_EVALUATION
    reads_processor_config = False

    def pos_interpolation(self, asked: str | None, as_released: bool) -> str:
        """ "original" for the released weights and "hf" for the others, unless asked otherwise."""
        if asked is not None:
            return asked
        return "original" if as_released else "hf"

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.encoder.layer)

    def view(self, block: Any) -> Any:
        return block

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.model.embeddings(pixel_values)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.model.encoder(tokens).last_hidden_state


@dataclass(frozen=True)
class AttentionView:
    """An attention module under the decomposition's names (its own projection modules)."""

    q_proj: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module
    o_proj: nn.Module
    num_attention_heads: int
    head_dim: int
    scaling: float


@dataclass(frozen=True)
class BlockView:
    """A pre-norm block under the decomposition's names: x + ls1(attn(norm1(x))), then
    v + ls2(mlp(norm2(v)))."""

    norm1: nn.Module
    attention: AttentionView
    layer_scale1: nn.Module
    norm2: nn.Module
    mlp: nn.Module
    layer_scale2: nn.Module


def _attention_view(attention: Any, o_proj: nn.Module, heads: int, scaling: float) -> AttentionView:
    return AttentionView(attention.q_proj, attention.k_proj, attention.v_proj, o_proj,
                         heads, attention.head_dim, scaling)  # fmt: skip


class ViTFamily(Family):
    """transformers' `ViTModel` (ViT, DINO v1 in transformers' layout): no layer scale, no registers;
    the [CLS] readout is the final layer norm's [CLS] row (not ViT's dense + tanh pooler)."""

    name = "vit"
    model_types: ClassVar[tuple[type[nn.Module], ...]] = (ViTModel,)
    config_type: ClassVar[str] = "vit"  # `model_type` of its checkpoints' config
    preprocessing = Preprocessing(  # transformers' ViTImageProcessor
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="square", interpolation="bilinear", resize_ratio=1.0
    )

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        if config.model_type != cls.config_type:
            return None
        return LoadAs(AutoModel, {"add_pooling_layer": False})  # the tanh pooler: not the readout, not loaded

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.layers)

    def view(self, block: Any) -> Any:
        attention = block.attention
        unit = UnitScale(attention.o_proj)
        view = _attention_view(attention, attention.o_proj, attention.num_attention_heads, attention.scaling)
        return BlockView(block.layernorm_before, view, unit, block.layernorm_after, block.mlp, unit)

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.model.embeddings(pixel_values, interpolate_pos_encoding=True)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        output = self.model(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return output.last_hidden_state[:, 0]  # after the final layer norm

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        for block in self.model.layers:
            tokens = block(tokens)
        return tokens


class CLIPFamily(Family):
    """transformers' CLIP image tower (`CLIPVisionModel`, or `CLIPVisionModelWithProjection`, which
    also holds `visual_projection`): `pre_layrnorm` on the embeddings (the sequence entering the
    first block is after it), no layer scale, no registers; the readout is `post_layernorm` of the
    [CLS] row (the pooled output), and with the projection a third readout, `projection/{variant}`
    (the image embedding CLIP compares with text)."""

    name = "clip"
    model_types = (CLIPVisionModel, CLIPVisionModelWithProjection)
    preprocessing = Preprocessing(  # transformers' CLIPImageProcessor
        mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
        resize="shorter_crop", interpolation="bicubic", resize_ratio=1.0,
    )  # fmt: skip
    short_names: ClassVar[Mapping[str, str]] = {  # OpenAI's image towers
        "clip_vitb32": "openai/clip-vit-base-patch32",
        "clip_vitb16": "openai/clip-vit-base-patch16",
        "clip_vitl14": "openai/clip-vit-large-patch14",
        "clip_vitl14_336": "openai/clip-vit-large-patch14-336",
    }

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        """A whole CLIP (`CLIPModel`) as its image tower with the whole model's projection; a tower
        with its projection as it is."""
        architecture = (getattr(config, "architectures", None) or [""])[0]
        if architecture == "CLIPModel":
            tower = config.vision_config
            tower.projection_dim = config.projection_dim
            return LoadAs(CLIPVisionModelWithProjection, {"config": tower})
        if architecture == "CLIPVisionModelWithProjection":
            return LoadAs(CLIPVisionModelWithProjection)
        return None

    @property
    def tower(self) -> Any:
        """The vision transformer (embeddings, pre_layrnorm, encoder, post_layernorm)."""
        return getattr(self.model, "vision_model", self.model)

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.tower.encoder.layers)

    def view(self, block: Any) -> Any:
        attention = block.self_attn
        unit = UnitScale(attention.out_proj)
        view = _attention_view(attention, attention.out_proj, attention.num_heads, attention.scale)
        return BlockView(block.layer_norm1, view, unit, block.layer_norm2, block.mlp, unit)

    @property
    def embeddings(self) -> nn.Module:
        return self.tower.pre_layrnorm

    @property
    def final_norm(self) -> nn.Module:
        return self.tower.post_layernorm

    @property
    def projection(self) -> nn.Module | None:
        return getattr(self.model, "visual_projection", None)

    def embed(self, pixel_values: Tensor) -> Tensor:
        return self.tower.pre_layrnorm(self.tower.embeddings(pixel_values, interpolate_pos_encoding=True))

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.tower(pixel_values=pixel_values, interpolate_pos_encoding=True).pooler_output

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.tower.encoder(tokens).last_hidden_state


class DeiTFamily(ViTFamily):
    """transformers' `DeiTModel` (a distilled DeiT): ViT's blocks, with a distillation token right after
    [CLS], its own token group (`distillation` variants and split share). The readout is the final
    layer norm's [CLS] row (DeiT's classifier averages the [CLS] and distillation heads; the [CLS]
    output is what this tool decomposes)."""

    name = "deit"
    model_types = (DeiTModel,)
    config_type = "deit"
    preprocessing = Preprocessing(  # transformers' DeiTImageProcessor
        IMAGENET_MEAN, IMAGENET_STD, resize="square_crop", interpolation="bicubic", resize_ratio=256 / 224
    )

    def architecture(self) -> dict[str, Any]:
        return super().architecture() | {"num_distillation": 1}


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class Dinov3Family(Family):
    """transformers' `DINOv3ViTModel`: [CLS], registers, patches; layer scale; RoPE on the patch
    queries and keys only ([CLS] and registers unrotated), so the [CLS] query is the projection and
    the keys enter its softmax rotated, exactly as the model rotates them (`attention_keys`); values
    are never rotated. The readout is the final norm's [CLS] row (the pooled output)."""

    name = "dinov3"
    model_types = (DINOv3ViTModel,)
    preprocessing = Preprocessing(  # transformers' DINOv3ViTImageProcessorFast
        IMAGENET_MEAN, IMAGENET_STD, resize="square", interpolation="bilinear", resize_ratio=1.0
    )
    short_names: ClassVar[Mapping[str, str]] = {  # torch.hub's names
        **{
            f"dinov3_{size}": f"facebook/dinov3-{size}-pretrain-lvd1689m"
            for size in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16")
        },
        "dinov3_vitl16_sat": "facebook/dinov3-vitl16-pretrain-sat493m",
        "dinov3_vit7b16_sat": "facebook/dinov3-vit7b16-pretrain-sat493m",
    }

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.model.layer)

    def view(self, block: Any) -> Any:
        attention = block.attention
        view = _attention_view(attention, attention.o_proj, attention.num_heads, attention.scaling)
        return BlockView(block.norm1, view, block.layer_scale1, block.norm2, block.mlp, block.layer_scale2)

    @property
    def final_norm(self) -> nn.Module:
        return self.model.norm

    def embed(self, pixel_values: Tensor) -> Tensor:
        weight = self.model.embeddings.patch_embeddings.weight
        return self.model.embeddings(pixel_values.to(weight.dtype))

    def pooled(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    def rope(self, layout: TokenLayout, device: torch.device) -> tuple[Tensor, Tensor]:
        """The model's own (cos, sin) for `layout`'s patch grid, (patches, head_dim) each, in the
        weights' dtype (its RoPE module reads only the image's size, device and dtype)."""
        dtype = self.model.embeddings.patch_embeddings.weight.dtype
        patch = self.model.config.patch_size
        size = (1, 3, layout.grid_height * patch, layout.grid_width * patch)
        return self.model.rope_embeddings(torch.zeros((), device=device, dtype=dtype).expand(size))

    def attention_keys(self, keys: Tensor, layout: TokenLayout) -> Tensor:
        cos, sin = (part.float() for part in self.rope(layout, keys.device))
        batch, tokens, hidden = keys.shape
        per_head = keys.float().view(batch, tokens, -1, cos.shape[-1])  # batch, tokens, heads, head_dim
        prefix, patches = per_head.split((tokens - cos.shape[0], cos.shape[0]), dim=1)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # patches, 1, head_dim
        rotated = patches * cos + _rotate_half(patches) * sin
        return torch.cat((prefix, rotated), dim=1).view(batch, tokens, hidden)

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        cos, sin = self.rope(layout, tokens.device)
        if patches is not None:  # each row's own patches: (batch, 1, kept, head_dim) against its heads
            cos, sin = cos[patches].unsqueeze(1), sin[patches].unsqueeze(1)
        return self.model.model(tokens, position_embeddings=(cos, sin)).last_hidden_state


class _FusedPart(nn.Module):
    """q, k or v of a fused `qkv` projection (timm): its rows of the weight, then the per-head norm
    the model applies to it (timm's q_norm / k_norm; identity by default). Forward hooks go on the
    fused projection and see this part of its output, so they fire in the model's own pass."""

    def __init__(self, qkv: nn.Linear, part: int, heads: int, norm: nn.Module) -> None:
        super().__init__()
        self.qkv, self.norm, self.heads = qkv, norm, heads
        width = qkv.out_features // 3
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


class _Gamma(nn.Module):
    """timm's `LayerScale` (`gamma`) under the decomposition's name (`lambda1`)."""

    def __init__(self, scale: LayerScale) -> None:
        super().__init__()
        self.scale = scale

    @property
    def lambda1(self) -> Tensor:
        return self.scale.gamma

    def forward(self, inputs: Tensor) -> Tensor:
        return self.scale(inputs)


class TimmFamily(Family):
    """timm's `VisionTransformer` (DeiT III, timm's ViTs, DINOv2 / CLIP in timm's layout): fused `qkv`
    (q and k after the model's q_norm / k_norm), layer scale `ls1`/`ls2` where present, registers
    (`reg_token`) after [CLS]; `norm_pre` is the sequence entering the first block; the readout is
    `fc_norm(norm(x))` of the [CLS] row, the model's pre-logits output with `global_pool='token'`.
    Position embeddings are resized as the model does it (`dynamic_img_size`); images are prepared as
    the model's pretrained config says."""

    name = "timm"
    model_types = (VisionTransformer,)
    preprocessing = Preprocessing(  # timm's default: ImageNet, crop_pct 0.875, bicubic
        IMAGENET_MEAN, IMAGENET_STD, resize="shorter_crop", interpolation="bicubic", resize_ratio=1 / 0.875
    )
    reads_processor_config = False  # the model carries its own (`pretrained_cfg`)
    own_pos_interpolation = "timm"  # timm's resample_abs_pos_embed

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        problem = self.unsupported(model)
        if problem:
            raise ValueError(f"{type(model).__name__} ({problem}) is not a supported ViT")
        self._final_norm = nn.Sequential(self.model.norm, self.model.fc_norm)

    @staticmethod
    def unsupported(model: Any) -> str:
        """What keeps the decomposition from this timm model ("" when nothing does)."""
        if model.cls_token is None:
            return "no [CLS] token"
        if type(model.patch_embed) is not PatchEmbed:  # a hybrid's CNN stem: its stride is no patch size
            return f"a {type(model.patch_embed).__name__} patch embedding"
        if len(set(model.patch_embed.patch_size)) != 1:
            return f"{'x'.join(map(str, model.patch_embed.patch_size))} patches"
        if model.global_pool != "token" or model.attn_pool is not None:
            return f"its output pools with {model.global_pool!r}, not the [CLS] token"
        if getattr(model, "dist_token", None) is not None:
            return "a distillation token"
        if model.num_prefix_tokens != 1 + model.num_reg_tokens:
            return f"{model.num_prefix_tokens} prefix tokens"
        for block in model.blocks:
            if type(block) is not TimmBlock or type(block.attn) is not TimmAttention:
                return f"{type(block).__name__} blocks with {type(block.attn).__name__}, not pre-norm Block"
            if not isinstance(block.attn.norm, nn.Identity) or block.attn.gate is not None:
                return "a norm or gate between attention and its output projection"
        return ""

    def preparation(self, processor_config: Mapping[str, Any] | None = None) -> Preprocessing:
        """As the model's pretrained config says (over timm's default where it is silent): mean/std,
        interpolation, `crop_pct` (the resize ratio is 1 / crop_pct), `crop_mode` ("center": the
        shorter side, then the crop; "squash": a square, then the crop)."""
        config = getattr(self.model, "pretrained_cfg", None) or {}
        settings: dict[str, Any] = {}
        if "mean" in config and "std" in config:
            settings["mean"], settings["std"] = tuple(config["mean"]), tuple(config["std"])
        if config.get("interpolation") in ("bicubic", "bilinear"):
            settings["interpolation"] = config["interpolation"]
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
            "num_registers": model.num_reg_tokens,
            "patch_size": model.patch_embed.patch_size[0],
            "swiglu": type(model.blocks[0].mlp).__name__ != "Mlp",
            "projection_dim": 0,
            "num_distillation": 0,
        }

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
            _Gamma(scale) if isinstance(scale, LayerScale) else UnitScale(attention.proj)
            for scale in (block.ls1, block.ls2)
        ]
        return BlockView(block.norm1, view, scales[0], block.norm2, block.mlp, scales[1])

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

    def encode(self, tokens: Tensor, layout: TokenLayout, patches: Tensor | None = None) -> Tensor:
        return self.model.blocks(tokens)


FAMILIES: tuple[type[Family], ...] = (
    Dinov2Family, Dinov3Family, ViTFamily, DeiTFamily, CLIPFamily, TimmFamily,
)  # fmt: skip


def short_names() -> dict[str, str]:
    """Every family's short names (`Family.short_names`) -> HF id, in the order of `FAMILIES`."""
    return {name: hub_id for family in FAMILIES for name, hub_id in family.short_names.items()}


def load_as(config: PretrainedConfig) -> LoadAs:
    """How transformers loads a checkpoint whose config is `config`: as the family it belongs to says
    (`Family.load_as`), else with `AutoModel`."""
    found = (family.load_as(config) for family in FAMILIES)
    return next((how for how in found if how is not None), LoadAs(AutoModel))


def family_for(model: nn.Module) -> Family:
    """The adapter of `model`'s family.

    Raises:
        ValueError: no adapter knows the model (the message names the supported families).
    """
    for family in FAMILIES:
        if isinstance(model, family.model_types):
            return family(model)
    supported = ", ".join(t.__name__ for family in FAMILIES for t in family.model_types)
    raise ValueError(f"{type(model).__name__} is not a supported ViT ({supported})")
