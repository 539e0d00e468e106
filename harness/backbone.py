"""A frozen ViT (any family of `harness.families`) that returns the `Decomposition` of its [CLS]
output in one forward pass."""

from __future__ import annotations

import functools
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Dinov2Model, Dinov2WithRegistersModel

from cls_decoupling.hashing import uniform_hash
from harness.decomposition import (
    ATTENTION_MAP,
    DELETION_FRACTIONS,
    DELETION_ORDERS,
    DELETION_PREFIX,
    DEPTH_PREFIX,
    HIDDEN_CLS,
    HIDDEN_CLS_COSINE,
    Decomposition,
    HFBlock,
    decompose_block,
    decompose_last_block,
    projection_readout,
)
from harness.families import Dinov2Family, Family, family_for
from harness.tokens import TokenLayout

HFDinov2 = Dinov2Model | Dinov2WithRegistersModel


@dataclass(frozen=True)
class ForwardOptions:
    """What one call of `DecomposingBackbone` computes besides the last block's decomposition.

    Attributes:
        layers: blocks (1-based) whose [CLS] update is also decomposed as they run (`depth/*`).
        deletion: shares of the patches removed in the deletion passes (`deletion/*`); () = none.
        deletion_seed: seed of the random deletion order.
    """

    layers: tuple[int, ...] = ()
    deletion: tuple[float, ...] = ()
    deletion_seed: int = 0

    def merged(self, other: ForwardOptions) -> ForwardOptions:
        """Everything either asks for (layers united; the deletion fractions and seed of whichever
        asks for deletion).

        >>> ForwardOptions(layers=(1, 3)).merged(ForwardOptions(layers=(2,), deletion=(0.5,)))
        ForwardOptions(layers=(1, 2, 3), deletion=(0.5,), deletion_seed=0)
        """
        deletion = other if other.deletion else self
        return ForwardOptions(
            tuple(sorted({*self.layers, *other.layers})), deletion.deletion, deletion.deletion_seed
        )


@dataclass(frozen=True)
class BackboneInfo:
    """What a loaded backbone is and where it came from (recorded in results.json).

    Attributes:
        name: what the user asked for (torch.hub name, HF id, path or `random:...`).
        source: "hub", "folder", "checkpoint" or "random".
        location: the HF id or file path the weights came from ("" for random weights).
        random_weights: True for test models; their numbers mean nothing.
        pos_interpolation: how the position grid is resized ("original": as the torch.hub models;
            "hf": as transformers; "timm": as timm; `harness.positions`).
        family: the adapter of `harness.families` ("dinov2", "dinov3", "vit", "clip", "timm"), or
            "dino" for a DINO v1 / iBOT checkpoint.
        image_mean, image_std, resize, interpolation, resize_ratio: how the family prepares images
            (its processor: normalisation, "shorter_crop" (the shorter side to resolution x
            resize_ratio, then a centre crop), "square" resize or "square_crop" (a square of
            resolution x resize_ratio, then a centre crop), "bicubic" or "bilinear").
        projection_dim: width of the `projection/{variant}` readout (CLIP's visual_projection), 0
            for models without a projection.
        num_distillation: distillation tokens right after [CLS] (1 for a distilled DeiT): their own
            token group.
    """

    name: str
    source: str
    location: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_registers: int
    patch_size: int
    swiglu: bool
    random_weights: bool
    pos_interpolation: str = "hf"
    family: str = "dinov2"
    # DINOv2's evaluation by default (results.json written before the families had none of these)
    image_mean: tuple[float, ...] = Dinov2Family.preprocessing["image_mean"]
    image_std: tuple[float, ...] = Dinov2Family.preprocessing["image_std"]
    resize: str = Dinov2Family.preprocessing["resize"]
    interpolation: str = Dinov2Family.preprocessing["interpolation"]
    resize_ratio: float = Dinov2Family.preprocessing["resize_ratio"]
    projection_dim: int = 0  # width of the projection readout (CLIP's visual_projection); 0: none
    num_distillation: int = 0  # distillation tokens after [CLS] (a distilled DeiT: 1)

    @property
    def identity(self) -> str:
        """What the weights are, however they were named: HF id, absolute path, or the name."""
        return self.location or self.name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DecomposingBackbone(nn.Module):
    """A frozen ViT (DINOv2, or any family of `harness.families`) that decomposes its [CLS] output.

    The model runs once per call with its own fast attention (SDPA). Forward hooks keep the
    last block's input, key and value projections, and the [CLS] row after every block; only
    the last block's [CLS] query row is recomputed.

    Args:
        model: a model of a family `harness.families` knows (DINOv2, DINOv3, ViT, DeiT, CLIP, timm
            ViT); its adapter gives the blocks, norms, keys and readouts.
        info: what the model is, for results.json.

    Calling it on `pixel_values` (batch, 3, height, width) returns a `Decomposition`.
    """

    def __init__(self, model: nn.Module, info: BackboneInfo) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.family: Family = family_for(model)  # where the blocks, norms and readout are
        self.info = info
        # filled by forward hooks during the model's own pass (no output_hidden_states: the
        # intermediate sequences are freed as usual; only [CLS] rows and the last block stay)
        self._recording = False
        self._captured: dict[str, Tensor] = {}
        self._cls_rows: list[Tensor] = []
        self.compiled: str | None = None  # the torch.compile backend of the blocks (compile_blocks)
        self.depth_layers: tuple[int, ...] = ()  # blocks decomposed as they run (decompose_layers)
        self._depth_handles: list[Any] = []
        self._views: dict[int, HFBlock] = {}  # block number -> its family's view, made once
        self._depth_captured: dict[tuple[int, str], Tensor] = {}
        self._depth_rows: list[dict[str, Tensor]] = []
        self._depth_errors: list[Tensor] = []
        self._layout: TokenLayout | None = None
        self.deletion_fractions: tuple[float, ...] = ()  # patches deleted per pass (enable_deletion)
        self.deletion_seed = 0
        self.family.embeddings.register_forward_hook(self._keep_cls_row)
        for layer in self.family.blocks:
            layer.register_forward_hook(self._keep_cls_row)
        self.family.blocks[-1].register_forward_pre_hook(self._keep_block_input)
        attention = self.last_block.attention
        attention.k_proj.register_forward_hook(self._keep_keys)
        attention.v_proj.register_forward_hook(self._keep_values)

    @property
    def last_block(self) -> HFBlock:
        """The last block under the decomposition's names (its family's view)."""
        return self._view(self.info.num_layers)

    def _view(self, number: int) -> HFBlock:
        """Block `number` (1-based) under the decomposition's names, made once (not per batch)."""
        if number not in self._views:
            self._views[number] = self.family.view(self.family.blocks[number - 1])
        return self._views[number]

    @property
    def patch_size(self) -> int:
        return self.info.patch_size

    def decompose_layers(self, layers: Sequence[int]) -> None:
        """Also decompose the [CLS] update of these blocks (1-based numbers) in every forward pass.

        Each chosen block's input, keys and values are taken by hooks as the block runs, turned at
        its end into the per-image `depth_quantities` (`decompose_block`) and dropped, so no two
        blocks' keys and values are held at once. The decomposition then holds `depth/{quantity}`
        (batch, len(layers)) in ascending block order, and its pooler error also covers each
        chosen block's [CLS] output rebuilt from the decomposition.
        """
        count = self.info.num_layers
        if any(not 1 <= number <= count for number in layers):
            raise ValueError(f"layers are numbered 1..{count}, got {sorted(layers)}")
        for handle in self._depth_handles:
            handle.remove()
        self._depth_handles = []
        self.depth_layers = tuple(sorted(set(layers)))
        for number in self.depth_layers:
            block = self.family.blocks[number - 1]
            view = self._view(number)
            keep = functools.partial(self._keep_depth, number)
            self._depth_handles += [
                block.register_forward_pre_hook(lambda module, inputs, keep=keep: keep("input", inputs[0])),
                view.attention.k_proj.register_forward_hook(
                    lambda m, i, output, keep=keep: keep("keys", output)
                ),
                view.attention.v_proj.register_forward_hook(
                    lambda m, i, output, keep=keep: keep("values", output)
                ),
                block.register_forward_hook(functools.partial(self._decompose_depth, number)),
            ]

    def enable_deletion(self, fractions: Sequence[float] = DELETION_FRACTIONS, seed: int = 0) -> None:
        """Also measure, per image, how the pooled output changes when patches are deleted: for each
        order of `DELETION_ORDERS` and fraction f, the round(f x patches) first patches of that order
        are removed from the sequence after the embeddings, which equals masking their keys in every
        layer (nothing attends to them, so nothing else depends on them), and the model runs again.
        The decomposition then holds `deletion/{order}` (batch, fractions): the cosine of each such
        pooled output to the full one. The random order hashes (seed, dataset index, patch), so
        an image deletes the same patches in any batch, on any rank.
        """
        if not fractions or any(not 0 < f < 1 for f in fractions):
            raise ValueError(f"deletion fractions must lie in (0, 1), got {list(fractions)}")
        self.deletion_fractions, self.deletion_seed = tuple(fractions), seed

    def _deletion(self, pixel_values: Tensor, attention_map: Tensor, pooled: Tensor,
                  layout: TokenLayout, indices: Tensor) -> dict[str, Tensor]:  # fmt: skip
        """`deletion/{order}` for one batch (see `enable_deletion`), with the hooks not recording."""
        patches = layout.slice("patch")
        count, first = patches.stop - patches.start, patches.start
        keys = indices.long().unsqueeze(1) * count + torch.arange(count, device=indices.device)
        orders = {
            "top": attention_map.flatten(1).argsort(dim=1, descending=True, stable=True),
            "random": uniform_hash(keys, self.deletion_seed).argsort(dim=1, stable=True),
            "bottom": attention_map.flatten(1).argsort(dim=1, stable=True),
        }
        embeddings = self.family.embed(pixel_values)
        batch, _, hidden = embeddings.shape
        leading = torch.arange(first, device=embeddings.device).expand(
            3 * batch, first
        )  # [CLS], distillation, registers
        by_order = torch.cat([orders[order] for order in DELETION_ORDERS])  # 3 batch, patches
        repeated = embeddings.repeat(3, 1, 1)
        cosines: list[Tensor] = []
        for fraction in self.deletion_fractions:
            kept = by_order[:, round(fraction * count) :].sort(dim=1).values  # patch numbers
            positions = torch.cat([leading, kept + first], dim=1)
            tokens = repeated.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden))
            output = self.family.final_norm(self.family.encode(tokens, layout, kept)[:, 0]).float()
            cosines.append(nn.functional.cosine_similarity(output, pooled.repeat(3, 1), dim=-1))
        per_order = torch.stack(cosines, dim=1).split(batch)  # 3 x (batch, fractions)
        return {DELETION_PREFIX + order: c for order, c in zip(DELETION_ORDERS, per_order, strict=True)}

    def _keep_depth(self, number: int, what: str, tensor: Tensor) -> None:
        if self._recording:
            self._depth_captured[(number, what)] = tensor

    def _decompose_depth(self, number: int, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if not self._recording or self._layout is None:
            return
        block_input, keys, values = (
            self._depth_captured.pop((number, what)) for what in ("input", "keys", "values")
        )
        keys = self.family.attention_keys(keys, self._layout)
        quantities, rebuilt = decompose_block(self._view(number), block_input, keys, values, self._layout)
        self._depth_rows.append(quantities)
        self._depth_errors.append((rebuilt - output[:, 0].float()).abs().max())

    def compile_blocks(self, backend: str = "inductor") -> None:
        """Run every block but the last under `torch.compile` (`backend`), off by default.

        One compiled function serves all those blocks (their parameters are its inputs, so it is
        traced once, plus once more when the batch size first changes); hooks stay outside it, so
        the [CLS] rows are recorded as before, and the last block, whose projections the
        decomposition reads, runs eagerly (so do the blocks of `decompose_layers`, whose projections
        are read too): the decomposition and its check against the pooled output are unchanged.
        """
        blocks = [
            block for number, block in enumerate(self.family.blocks, start=1)
            if number < self.info.num_layers and number not in self.depth_layers
        ]  # fmt: skip
        if not blocks:
            return
        compiled = torch.compile(type(blocks[0]).forward, backend=backend)
        for block in blocks:
            block.forward = types.MethodType(compiled, block)
        self.compiled = backend

    def train(self, mode: bool = True) -> DecomposingBackbone:
        """The backbone stays in eval mode (no dropout, no drop-path) whatever Lightning asks."""
        super().train(False)
        return self

    def _keep_cls_row(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self._recording:
            self._cls_rows.append(output[:, 0])

    def _keep_block_input(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if self._recording:
            self._captured["block_input"] = inputs[0]

    def _keep_keys(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self._recording:
            self._captured["keys"] = output

    def _keep_values(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self._recording:
            self._captured["values"] = output

    def _run_model(self, pixel_values: Tensor) -> Tensor:
        """The model's own forward pass, with the hooks recording; returns its pooled output."""
        self._captured.clear()
        self._cls_rows.clear()
        self._depth_captured.clear()
        self._depth_rows.clear()
        self._depth_errors.clear()
        self._recording = True
        try:
            return self.family.pooled(pixel_values)
        finally:
            self._recording = False

    @torch.no_grad()
    def forward(self, pixel_values: Tensor, indices: Tensor | None = None) -> Decomposition:
        """The decomposition of one batch; `indices` (the images' dataset indices) seed the random
        deletion order (default: 0, 1, ...)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be (batch, 3, height, width), got {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        info = self.info
        layout = TokenLayout.for_image(
            height, width, info.patch_size, info.num_registers, info.num_distillation
        )
        self._layout = layout
        pooled = self._run_model(pixel_values).float()
        tensors = decompose_last_block(
            self.last_block,
            self.family.final_norm,
            block_input=self._captured.pop("block_input"),
            keys=self.family.attention_keys(self._captured.pop("keys"), layout),
            values=self._captured.pop("values"),
            layout=layout,
        )
        if self.family.projection is not None:
            tensors |= projection_readout(self.family.projection, tensors)
        # embeddings, then the output of every block: (batch, layers + 1, hidden)
        tensors[HIDDEN_CLS] = torch.stack(self._cls_rows, dim=1).float()
        tensors[HIDDEN_CLS_COSINE] = nn.functional.cosine_similarity(
            tensors[HIDDEN_CLS].double(), tensors[HIDDEN_CLS][:, -1:].double(), dim=-1
        ).float()
        self._cls_rows.clear()
        pooler_error = (tensors["output/full"] - pooled).abs().max()
        if self._depth_rows:  # one row per chosen block, in the order the blocks ran (ascending)
            for quantity in self._depth_rows[0]:
                tensors[DEPTH_PREFIX + quantity] = torch.stack(
                    [row[quantity] for row in self._depth_rows], dim=1
                )
            pooler_error = torch.stack([pooler_error, *self._depth_errors]).max()
            self._depth_rows.clear()
            self._depth_errors.clear()
        if self.deletion_fractions:
            if indices is None:
                indices = torch.arange(pixel_values.shape[0], device=pixel_values.device)
            tensors |= self._deletion(pixel_values, tensors[ATTENTION_MAP], pooled, layout, indices)
        return Decomposition(tensors, layout, pooler_error)
