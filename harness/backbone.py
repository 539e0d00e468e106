"""A frozen DINOv2 model that returns the `Decomposition` of its [CLS] output in one forward pass."""

from __future__ import annotations

import types
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Dinov2Model, Dinov2WithRegistersModel

from harness.decomposition import HIDDEN_CLS, HIDDEN_CLS_COSINE, Decomposition, HFBlock, decompose_last_block
from harness.tokens import TokenLayout

HFDinov2 = Dinov2Model | Dinov2WithRegistersModel


@dataclass(frozen=True)
class BackboneInfo:
    """What a loaded backbone is and where it came from (recorded in results.json).

    Attributes:
        name: what the user asked for (torch.hub name, HF id, path or `random:...`).
        source: "hub", "folder", "checkpoint" or "random".
        location: the HF id or file path the weights came from ("" for random weights).
        random_weights: True for test models; their numbers mean nothing.
        pos_interpolation: how the position grid is resized ("original": as the torch.hub models;
            "hf": as transformers; `harness.positions`).
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

    @property
    def identity(self) -> str:
        """What the weights are, however they were named: HF id, absolute path, or the name."""
        return self.location or self.name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DecomposingBackbone(nn.Module):
    """Frozen DINOv2 (HF `Dinov2Model` / `Dinov2WithRegistersModel`) that decomposes its [CLS] output.

    The model runs once per call with its own fast attention (SDPA). Forward hooks keep the
    last block's input, key and value projections, and the [CLS] row after every block; only
    the last block's [CLS] query row is recomputed.

    Args:
        model: an HF DINOv2 model with the q_proj/k_proj/v_proj/o_proj attention layout.
        info: what the model is, for results.json.

    Calling it on `pixel_values` (batch, 3, height, width) returns a `Decomposition`.
    """

    def __init__(self, model: HFDinov2, info: BackboneInfo) -> None:
        super().__init__()
        self.model: HFDinov2 = model.eval().requires_grad_(False)
        self.info = info
        # filled by forward hooks during the model's own pass (no output_hidden_states: the
        # intermediate sequences are freed as usual; only [CLS] rows and the last block stay)
        self._recording = False
        self._captured: dict[str, Tensor] = {}
        self._cls_rows: list[Tensor] = []
        self.compiled: str | None = None  # the torch.compile backend of the blocks (compile_blocks)
        self.model.embeddings.register_forward_hook(self._keep_cls_row)
        for layer in self.model.encoder.layer:
            layer.register_forward_hook(self._keep_cls_row)
        self.last_block.register_forward_pre_hook(self._keep_block_input)
        attention = self.last_block.attention
        attention.k_proj.register_forward_hook(self._keep_keys)
        attention.v_proj.register_forward_hook(self._keep_values)

    @property
    def last_block(self) -> HFBlock:
        return self.model.encoder.layer[-1]

    @property
    def patch_size(self) -> int:
        return self.info.patch_size

    def compile_blocks(self, backend: str = "inductor") -> None:
        """Run every block but the last under `torch.compile` (`backend`), off by default.

        One compiled function serves all those blocks (their parameters are its inputs, so it is
        traced once, plus once more when the batch size first changes); hooks stay outside it, so
        the [CLS] rows are recorded as before, and the last block, whose projections the
        decomposition reads, runs eagerly: the decomposition and its check against the pooled
        output are unchanged.
        """
        blocks = list(self.model.encoder.layer)[:-1]
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
        self._recording = True
        try:
            return self.model(pixel_values=pixel_values).pooler_output
        finally:
            self._recording = False

    @torch.no_grad()
    def forward(self, pixel_values: Tensor) -> Decomposition:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be (batch, 3, height, width), got {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        layout = TokenLayout.for_image(height, width, self.patch_size, self.info.num_registers)
        pooled = self._run_model(pixel_values).float()
        tensors = decompose_last_block(
            self.last_block,
            self.model.layernorm,
            block_input=self._captured.pop("block_input"),
            keys=self._captured.pop("keys"),
            values=self._captured.pop("values"),
            layout=layout,
        )
        # embeddings, then the output of every block: (batch, layers + 1, hidden)
        tensors[HIDDEN_CLS] = torch.stack(self._cls_rows, dim=1).float()
        tensors[HIDDEN_CLS_COSINE] = nn.functional.cosine_similarity(
            tensors[HIDDEN_CLS].double(), tensors[HIDDEN_CLS][:, -1:].double(), dim=-1
        ).float()
        self._cls_rows.clear()
        pooler_error = (tensors["output/full"] - pooled).abs().max()
        return Decomposition(tensors, layout, pooler_error)
