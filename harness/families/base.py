"""What every family adapter is (`Family`), and the views of a block under the names the
decomposition reads (`BlockView`, `AttentionView`); docs/design.md#backbones."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import (
    PretrainedConfig,
)

from common.preparation import Preprocessing
from harness.processors import processor_preprocessing
from harness.tokens import TokenLayout

TEST_TIME_REGISTERS = "test_time_registers"
"""The attribute of a model with test-time registers (`harness.test_time_registers`) saying what it
carries: its extra tokens count as registers."""


class UnitScale(nn.Module):
    """Layer scale of a family without one: gamma = 1 (no parameters: runs in its input's dtype)."""

    def __init__(self, like: nn.Module) -> None:
        super().__init__()
        self._like: list[Any] = [like]  # a reference, not a child (a projection): its size, device and dtype

    @property
    def lambda1(self) -> Tensor:
        weight = self._like[0].weight
        return torch.ones(weight.shape[0], device=weight.device, dtype=weight.dtype)

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs


class GammaScale(nn.Module):
    """A layer scale that keeps its vector as `gamma` (timm's and open_clip's `LayerScale`) under the
    decomposition's name (`lambda1`); applied out of place."""

    def __init__(self, scale: nn.Module) -> None:
        super().__init__()
        self.scale = scale

    @property
    def lambda1(self) -> Tensor:
        gamma: Tensor = self.scale.gamma  # type: ignore[assignment]
        return gamma

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs * self.lambda1


@dataclass(frozen=True)
class LoadAs:
    """How transformers loads a checkpoint: the class whose `from_pretrained` reads it, the extra
    arguments that call takes, and the prefixes of the checkpoint's tensors that the loaded model
    leaves out on purpose (a pooler it does not build, a text tower, a classifier that reads more
    than the [CLS] output): every other tensor must fit. A classifier checkpoint loaded whole names
    the attribute of its wrapper that is the backbone (`inner`) and the one holding its classifier
    on the [CLS] readout (`classifier`), which the backbone keeps as its own head."""

    model_class: Any  # a PreTrainedModel class, or AutoModel
    arguments: Mapping[str, Any] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()
    inner: str | None = None  # e.g. "vit" of ViTForImageClassification; None: the model itself
    classifier: str | None = None  # e.g. "classifier"; None: no classifier kept


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
    processor_type: ClassVar[str] = ""
    """The transformers image processor its checkpoints use, for a processor config that names none
    (transformers would take it from the model's config.json)."""
    own_pos_interpolation: ClassVar[str] = "hf"
    """How the model resizes its position grid itself, as results.json records it."""
    reads_heads: ClassVar[bool] = True
    """Whether a hook sees the attention output before the output projection (the `heads` tap point:
    one-head interventions at model level); False where the attention runs it inside one call."""
    embeddings_normalise: ClassVar[bool] = False
    """Whether `embeddings` is a norm on the token sequence (CLIP's pre-norm, timm's `norm_pre`), so
    its input holds the tokens as the embedding made them; else its output does."""
    takes_extra_tokens: ClassVar[bool] = True
    """Whether tokens may be inserted after the prefix (test-time registers); False where the blocks
    find the patches by counting the prefix tokens from the start (EVA's RoPE)."""
    readout: str = "cls"
    """How its pooled output is read (`harness.info.READOUTS`): "cls", the final norm of the last
    block's [CLS] row; "map", an attention-pooling head over the final-normed tokens; "mean", the mean
    of the final-normed patch tokens (both through `pool_view`)."""

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model  # a model of one of `model_types`

    @classmethod
    def accepts(cls, model: nn.Module) -> bool:
        """Whether `model` is one of this family's (by default: an instance of `model_types`)."""
        return isinstance(model, cls.model_types)

    @classmethod
    def type_names(cls) -> tuple[str, ...]:
        """The model classes it reads, as the refusal of an unknown model lists them."""
        return tuple(t.__name__ for t in cls.model_types)

    def fixed_resolution(self) -> int | None:
        """The only image side the model reads, where it cannot resize its position grid; None: any."""
        return None

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        """How transformers should load a checkpoint whose config is `config`, where this family
        needs more than `AutoModel` with no extra arguments; None otherwise (also for a checkpoint of
        another family)."""
        return None

    @classmethod
    def released_head(cls, names: Sequence[str], blocks: int) -> str | None:
        """Where the authors released a linear classifier on `blocks` blocks for the checkpoint one of
        `names` names (a short name, hub id, `random:` name or file path), as their own hub code
        downloads it; None where they released none (the default) or no name is theirs."""
        return None

    def own_classifier(self) -> nn.Linear | None:
        """The classifier the model itself holds on its [CLS] readout (`pooled`), e.g. a timm model's
        `head`; None where it holds none (an HF classifier checkpoint's is kept by the loader:
        `LoadAs.classifier`)."""
        return None

    def preparation(self, processor_config: Mapping[str, Any] | None = None) -> Preprocessing:
        """How this model's images are prepared: the checkpoint's processor config read over the
        family's default where the family reads one (`reads_processor_config`) and one is given;
        else the default.

        Raises:
            ValueError: transformers cannot read the processor config, or its mean / std are not 3
                numbers each.
        """
        if processor_config is None or not self.reads_processor_config:
            return self.preprocessing
        return processor_preprocessing(processor_config, self.preprocessing, self.processor_type)

    def pos_interpolation(self, asked: str | None, as_released: bool) -> str:
        """How the position grid is resized for other image sizes (results.json
        `backbone.pos_interpolation`): the model's own resize (`own_pos_interpolation`).

        Args:
            asked: what the user asked for (`--pos-interpolation`), None for the family's default.
            as_released: the weights were named as their original release names them (a torch.hub
                short name, an original `.pth`) or are a random model of a released architecture.

        Raises:
            ValueError: `asked` is the authors' resize ("original"), which only DINOv2, DINO v1 (the
                vit family) and DeiT III (timm) offer.
        """
        if asked == "original":
            raise ValueError(
                "--pos-interpolation original is the resize of DINOv2, DINO v1 and DeiT III; "
                f"it is a {self.name} model (its own resize)"
            )
        return self.own_pos_interpolation

    def architecture(self) -> dict[str, Any]:
        """The `BackboneInfo` fields that describe the architecture: hidden_size, num_layers,
        num_heads, num_registers, patch_size, swiglu (a gated MLP), mlp_size; read from an HF config."""
        config = self.config
        return {
            "hidden_size": config.hidden_size,
            "num_layers": config.num_hidden_layers,
            "num_heads": config.num_attention_heads,
            "num_registers": getattr(config, "num_register_tokens", 0),
            "patch_size": int(config.patch_size),  # square patches
            "swiglu": getattr(config, "use_swiglu_ffn", False) or getattr(config, "use_gated_mlp", False),
            "projection_dim": self.projection.out_features if self.projection is not None else 0,
            "num_distillation": 0,
            "mlp_size": self.mlp_size(),
        }

    def described(self) -> dict[str, Any]:
        """`architecture` as the model runs, with its readout (`readout`, and `num_cls` 1 unless the
        architecture says 0): test-time registers it carries (`harness.test_time_registers`) counted
        among its registers, and recorded."""
        described = {"num_cls": 1, "readout": self.readout} | self.architecture()
        pool = self.pool_view()
        if pool is not None and pool.attention.num_attention_heads != described["num_heads"]:
            described["readout_heads"] = pool.attention.num_attention_heads
        added = getattr(self.model, TEST_TIME_REGISTERS, None)
        if added is not None:
            described |= {
                "num_registers": described["num_registers"] + added.count,
                "test_time_registers": added.count,
            }
        return described

    def pool_view(self) -> PoolView | None:
        """The pool under the decomposition's names: the attention-pooling head of a "map" readout,
        the token mean of a "mean" one (`mean_view`); None for a [CLS] readout."""
        return None

    def pool_of(self, sequence: Tensor) -> Tensor:
        """The pooled output from the last block's output (batch, tokens, hidden): the final norm of
        its [CLS] row, or the pooling head on the final-normed tokens and what follows it."""
        pool = self.pool_view()
        if pool is None:
            return self.final_norm(sequence[:, 0])
        tokens = self.final_norm(sequence)
        if pool.mean_from is not None:  # the token mean
            return pool.after(tokens[:, pool.mean_from :].mean(dim=1))
        return pool.after(pool.module(tokens))

    def hooked_blocks(self) -> set[int]:
        """The blocks (1-based) that carry hooks of their own inside: those of test-time registers'
        neurons. They run eagerly: a compiled block forward, traced once for every block, would not
        see hooks on one block's modules."""
        added = getattr(self.model, TEST_TIME_REGISTERS, None)
        return set() if added is None else set(added.neurons)

    def mlp_size(self) -> int:
        """The width of the blocks' MLP (its neurons: the input of its output projection)."""
        return int(mlp_output(self.view(self.blocks[0]).mlp).in_features)

    @property
    def config(self) -> Any:
        """The HF config that describes the architecture (the model's own, unless a family says)."""
        return self.model.config

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
        """The norm after the last block: of its [CLS] row, the pooled output; of every token, what
        an attention-pooling head reads (transformers' `layernorm` unless a family says otherwise)."""
        return self.model.layernorm

    @abstractmethod
    def embed(self, pixel_values: Tensor) -> Tensor:
        """The token sequence entering the first block (batch, tokens, hidden)."""

    @abstractmethod
    def pooled(self, pixel_values: Tensor) -> Tensor:
        """The model's own forward pass; its pooled output (batch, hidden)."""

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

    def attention_queries(self, queries: Tensor, layout: TokenLayout) -> Tensor:
        """The queries as the softmax sees them (batch, tokens, hidden), from a block's query
        projections: the projections themselves, unless the family rotates them (RoPE)."""
        return queries


class ImageTowerFamily(Family):
    """A family of transformers image towers, held alone or inside a two-tower model whose image tower
    is its `vision_model` (CLIP, SigLIP, AIMv2): the tower, its config and its blocks
    (`encoder.layers`) are read from there."""

    @property
    def tower(self) -> Any:
        """The image tower (a whole two-tower model's `vision_model`)."""
        return getattr(self.model, "vision_model", self.model)

    @property
    def config(self) -> Any:
        """The image tower's config (a whole model's `vision_config`)."""
        return self.tower.config

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return list(self.tower.encoder.layers)


def clip_layer_view(block: Any) -> BlockView:
    """A CLIP-style encoder layer (`self_attn` with q/k/v/out_proj, `layer_norm1` / `layer_norm2`,
    `mlp`, no layer scale: CLIP's and SigLIP's) under the decomposition's names."""
    attention = block.self_attn
    unit = UnitScale(attention.out_proj)
    view = attention_view(attention, attention.out_proj, attention.num_heads, attention.scale)
    return BlockView(block.layer_norm1, view, unit, block.layer_norm2, block.mlp, unit)


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


@dataclass(frozen=True)
class PoolView:
    """An attention-pooling head (MAP: SigLIP's, timm's `AttentionPoolLatent`) under the names of a
    block view, read as the block whose [CLS] query is the head's learned `latent`: over the tokens
    it reads (the final-normed output of the last block, `Family.final_norm`), a = o_proj(softmax(q
    k^T) v) with q = q_proj(latent), then v + mlp(norm2(v)), then `after` (timm's `fc_norm`). It has
    no residual: no skip (docs/design.md#readouts). `module` is the head itself (its input is what it
    reads; its output, then `after`, is the pooled output)."""

    module: nn.Module
    latent: Tensor  # (hidden,): the learned query before q_proj
    attention: AttentionView
    norm2: nn.Module
    mlp: nn.Module
    after: nn.Module
    norm1: nn.Module = field(default_factory=nn.Identity)  # the latent is not normed
    mean_from: int | None = None
    """For a model pooled by the token mean (`mean_view`): the first position averaged (the prefix
    before it left out); its weights are uniform there instead of a softmax, and `module` is the
    final norm, whose output it reads. None: an attention-pooling head."""

    @property
    def layer_scale1(self) -> UnitScale:
        return UnitScale(self.attention.o_proj)

    @property
    def layer_scale2(self) -> UnitScale:
        return UnitScale(self.attention.o_proj)


class _Eye(nn.Module):
    """The identity as a projection with a weight (the mean readout's W_o = I, no bias), in the
    dtype and on the device of `like`."""

    bias = None

    def __init__(self, like: Tensor) -> None:
        super().__init__()
        self._like = [like]  # a reference, not a child

    @property
    def weight(self) -> Tensor:
        like = self._like[0]
        return torch.eye(like.shape[-1], device=like.device, dtype=like.dtype)

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs


def mean_view(final_norm: nn.Module, after: nn.Module, first: int, like: Tensor) -> PoolView:
    """A model pooled by the mean of its final-normed tokens from position `first` on (timm's
    `global_pool='avg'`), then `after` (`fc_norm`), read as a pool: one head whose weights are
    uniform over those tokens, the tokens themselves as keys and values, W_o = I, no bias, no MLP.
    `like`: a parameter of the model's width (the identity's size, device and dtype)."""
    width = like.shape[-1]
    identity = _Eye(like)
    view = AttentionView(nn.Identity(), nn.Identity(), nn.Identity(), identity, 1, width, 1.0)
    return PoolView(final_norm, like.new_zeros(width), view, nn.Identity(), NoMLP(), after, mean_from=first)


class NoMLP(nn.Module):
    """No MLP after a pool's attention: adds nothing (v + 0 = v)."""

    def forward(self, inputs: Tensor) -> Tensor:
        return torch.zeros_like(inputs)


class InProjection(nn.Module):
    """q, k or v of torch's `nn.MultiheadAttention` (one fused `in_proj_weight`): its rows applied to
    the attention's input. torch runs the fused projection inside one call, so a forward hook on
    this part goes on `norm`, the module whose output the attention reads (a block's `ln_1`), and
    computes the part there: it fires in the model's own pass. Without `norm` it takes no hook."""

    def __init__(self, attention: nn.MultiheadAttention, part: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.attention, self.norm = attention, norm
        width = attention.embed_dim
        self.rows = slice(part * width, (part + 1) * width)

    def forward(self, inputs: Tensor) -> Tensor:
        bias = self.attention.in_proj_bias
        return nn.functional.linear(
            inputs, self.attention.in_proj_weight[self.rows], None if bias is None else bias[self.rows]
        )

    def register_forward_hook(self, hook: Any, **kwargs: Any) -> Any:
        if self.norm is None:
            raise ValueError("this projection runs inside torch's MultiheadAttention: no hook sees it")

        def on_norm(module: nn.Module, inputs: Any, output: Tensor) -> Any:
            hook(self, (output,), self(output))

        return self.norm.register_forward_hook(on_norm, **kwargs)


class OutProjection(nn.Module):
    """The output projection (`out_proj`) of torch's `nn.MultiheadAttention`, which torch applies
    inside one call: the decomposition reads its weight and bias; a hook before it would never fire,
    so asking for one is an error (`Family.reads_heads` is False)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    @property
    def bias(self) -> Tensor | None:
        return self.linear.bias

    def forward(self, inputs: Tensor) -> Tensor:
        return self.linear(inputs)

    def register_forward_pre_hook(self, hook: Any, **kwargs: Any) -> Any:
        raise ValueError(
            "torch's nn.MultiheadAttention applies its output projection inside one call: the heads' "
            "outputs before it cannot be read or replaced there"
        )


def multihead_view(attention: nn.MultiheadAttention, norm: nn.Module | None = None) -> AttentionView:
    """torch's `nn.MultiheadAttention` under the decomposition's names (`InProjection`,
    `OutProjection`; hooks on q, k, v go on `norm`, the module whose output it reads)."""
    heads = attention.num_heads
    head_dim = attention.embed_dim // heads
    q, k, v = (InProjection(attention, part, norm) for part in range(3))
    return AttentionView(q, k, v, OutProjection(attention.out_proj), heads, head_dim, head_dim**-0.5)


def stated_preparation(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `Preprocessing` fields a library's own preprocessing config states (timm's pretrained
    config, open_clip's `preprocess_cfg`): mean and std where it gives both, a bicubic or bilinear
    interpolation; the family reads its resize rule from the rest."""
    settings: dict[str, Any] = {}
    if "mean" in config and "std" in config:
        settings["mean"], settings["std"] = tuple(config["mean"]), tuple(config["std"])
    if config.get("interpolation") in ("bicubic", "bilinear"):
        settings["interpolation"] = config["interpolation"]
    return settings


MLP_OUTPUTS: tuple[str, ...] = ("fc2", "down_proj", "c_proj")
"""The names the families' MLPs give their output projection (transformers', timm's, open_clip's)."""


def mlp_output(mlp: nn.Module) -> nn.Linear:
    """`mlp`'s output projection (`MLP_OUTPUTS`), whose input is the MLP's neurons: their activations
    after the non-linearity (and the gate, in a gated MLP), (batch, tokens, mlp width).

    Raises:
        ValueError: the MLP has none of those names.
    """
    for name in MLP_OUTPUTS:
        if isinstance(layer := getattr(mlp, name, None), nn.Linear):
            return layer
    raise ValueError(f"{type(mlp).__name__} has no output projection named {' or '.join(MLP_OUTPUTS)}")


def attention_view(attention: Any, o_proj: nn.Module, heads: int, scaling: float) -> AttentionView:
    return AttentionView(attention.q_proj, attention.k_proj, attention.v_proj, o_proj,
                         heads, attention.head_dim, scaling)  # fmt: skip
