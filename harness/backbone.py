"""A frozen ViT (any family of `harness.families`) that returns the `Decomposition` of its [CLS]
output in one forward pass, and the seam every other computation plugs into (docs/design.md#the-seam):
an `Extra` says which taps it reads in that pass and runs its own passes; the core knows no extra."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from harness.capture import Capture, ClsRows, LastBlock
from harness.decomposition import (
    HIDDEN_CLS,
    HIDDEN_CLS_COSINE,
    Decomposition,
    HFBlock,
    artifact_mask,
    decompose_last_block,
    highest_norm_token,
    linear_input,
    projection_readout,
)
from harness.families import Family, family_for, unwrapped
from harness.info import BackboneInfo
from harness.positions import resizes_as_original
from harness.running import compiled_blocks, evaluating, starting_at
from harness.taps import Tap, layout_rotation, read_inside, tapping
from harness.tokens import TokenLayout


@dataclass(frozen=True)
class Call:
    """One call of the backbone as its extras see it: the batch, its clean pass, and the taps every
    pass an extra runs must carry (an intervention's, for the extras run under it: `under`); `indices`
    is given whenever an extra draws (`Extra.draws_random`), `labels` whenever one reads them
    (`Extra.reads_labels`; -1 for an unlabelled image)."""

    backbone: DecomposingBackbone
    pixel_values: Tensor
    indices: Tensor | None
    capture: Capture
    decomposition: Decomposition
    under: tuple[Tap, ...] = ()
    labels: Tensor | None = None


@dataclass(frozen=True)
class ExtraResult:
    """What an extra adds to a call's `Decomposition`: entries under its own names, the
    decompositions of other passes by name (`Decomposition.passes`), and the largest difference of
    what it rebuilt to what the model computed (joins `pooler_error`; None: it rebuilt nothing)."""

    entries: Mapping[str, Tensor] = field(default_factory=dict)
    passes: Mapping[str, Decomposition] = field(default_factory=dict)
    error: Tensor | None = None


class Extra(ABC):
    """Something a call computes besides the decomposition (the per-layer decomposition, deletion
    passes, interventions, attribution maps: `harness.extras`). `check` refuses a model it cannot
    run on before anything runs; `taps` are read in the clean pass (fresh objects each call, handed
    back to `run`); `run` runs the extra's own passes and returns its results. Equal extras are one
    (`key`, `merged`: what `harness.HarnessModule` does with those its consumers ask for)."""

    @property
    def draws_random(self) -> bool:
        """Whether it draws seeded numbers per image (a call then needs the dataset indices)."""
        return False

    @property
    def reads_labels(self) -> bool:
        """Whether it reads the images' labels (a call then needs them: `Call.labels`)."""
        return False

    @property
    def key(self) -> Hashable:
        """What makes two extras one: by default, being equal."""
        return self

    def merged(self, other: Extra) -> Extra:
        """One extra doing what both ask (`other` has the same key)."""
        if other != self:
            raise ValueError(f"two consumers ask for {self.key} with different settings: {self} and {other}")
        return self

    def check(self, backbone: DecomposingBackbone) -> None:
        """Raise ValueError naming what `backbone` lacks for this extra; nothing by default."""
        return None

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        """The taps it reads in the clean pass, by its own names; none by default."""
        return {}

    @abstractmethod
    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        """Its results for `call`, given its `taps` after the clean pass."""


class DecomposingBackbone(nn.Module):
    """A ViT (DINOv2, or any family of `harness.families`) that decomposes its pooled output.

    Each call runs the model once (SDPA) with the taps the decomposition and the call's extras read,
    recomputing only the last block's [CLS] query row; what else it computes is the extras passed to
    it. The model is left as it was (no hook outlives a pass; its flags are restored: each call runs
    it, and rebuilds its readouts, in eval mode). Gradients flow when the caller enables them.

    Args:
        model: a model of a family `harness.families` knows (DINOv2, DINOv3, ViT, DeiT, CLIP, SigLIP,
            AIMv2, timm's ViT / Eva / NaFlexVit, open_clip); its adapter gives the blocks, norms, keys
            and readout (the [CLS] row, an attention-pooling head or the patch mean).
        info: what the model is, for results.json (`from_model` infers it).
        compile_backend: run every block a pass does not read inside (all but the last and the
            tapped ones) under `torch.compile` with this backend; None: eager.
        classifier: the model's own classifier on its [CLS] readout (`output/full` -> class logits),
            where it has one (`info.num_classes` records its classes); None: none.
    """

    def __init__(
        self, model: nn.Module, info: BackboneInfo, compile_backend: str | None = None,
        classifier: nn.Linear | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.family: Family = family_for(model)  # where the blocks, norms and readout are
        self.classifier = classifier
        self.info = info
        self.compiled = compile_backend
        self._compiled_forward: Callable[..., Any] | None = None
        self._views: dict[int, HFBlock] = {}  # block number -> its family's view, made once
        self._pool = self.family.pool_view()  # what pools the output, made once (None: the [CLS] row)

    @classmethod
    def from_model(
        cls, model: nn.Module, name: str | None = None, compile_backend: str | None = None
    ) -> DecomposingBackbone:
        """The decomposing backbone of an in-memory model of any supported family: its family,
        architecture, image preparation and position interpolation are read from the model.

        Raises:
            ValueError: no family adapter reads the model (the message names the supported ones), or
                its weights are not loaded (on the meta device).
        """
        if any(parameter.is_meta for parameter in model.parameters()):
            raise ValueError(
                f"{type(model).__name__}'s weights are on the meta device (not loaded): load them first "
                "(from_pretrained, or to_empty and load_state_dict)"
            )
        model, classifier = unwrapped(model)  # ViTForImageClassification: its ViT and its classifier
        family = family_for(model)
        classifier = classifier if classifier is not None else family.own_classifier()
        info = BackboneInfo(
            name=name or type(model).__name__,
            source="memory",
            location="",
            **family.described(),
            random_weights=False,
            # what the model does: the authors' resize where its embeddings were switched to it
            pos_interpolation="original" if resizes_as_original(model) else family.own_pos_interpolation,
            family=family.name,
            preprocessing=family.preparation(),
            num_classes=0 if classifier is None else classifier.out_features,
        )
        return cls(model, info, compile_backend, classifier)

    def compiling(self, backend: str = "inductor") -> DecomposingBackbone:
        """The same model, its unread blocks compiled with `backend` (the same results, to rounding)."""
        return type(self)(self.model, self.info, backend, self.classifier)

    def with_artifacts(self, threshold: float) -> DecomposingBackbone:
        """The same model with its patches split by norm (docs/design.md#artifacts): those whose L2
        norm in the last block's input exceeds `threshold` are the `artifact` group (recorded as
        `info.artifact_threshold`; 0: no split).

        Raises:
            ValueError: a negative or NaN threshold.
        """
        return type(self)(self.model, replace(self.info, artifact_threshold=float(threshold)), self.compiled,
                          self.classifier)  # fmt: skip

    @property
    def last_block(self) -> HFBlock:
        """The last block under the decomposition's names (its family's view)."""
        return self.view(self.info.num_layers)

    @property
    def read_view(self) -> HFBlock:
        """What reads the pooled output, under the decomposition's names: the last block (a [CLS]
        readout), or the pool (`PoolView`: an attention-pooling head, "map", or the patch mean, "mean")."""
        return self.last_block if self._pool is None else self._pool

    @property
    def after_readout(self) -> nn.Module:
        """What follows `read_view` to the pooled output: the final norm, or what follows the head."""
        return self.family.final_norm if self._pool is None else self._pool.after

    def view(self, number: int) -> HFBlock:
        """Block `number` (1-based) under the decomposition's names, made once (not per batch)."""
        if number not in self._views:
            self._views[number] = self.family.view(self.family.blocks[number - 1])
        return self._views[number]

    @property
    def patch_size(self) -> int:
        return self.info.patch_size

    def transform(self, resolution: int) -> Callable[[Image.Image], Tensor]:
        """The evaluation transform at `resolution` (`info.preprocessing`): PIL image -> normalised
        (3, resolution, resolution) tensor. Raises ValueError off a multiple of the patch size."""
        if resolution < 1 or resolution % self.patch_size:
            raise ValueError(
                f"resolution {resolution} is not a positive multiple of the patch size {self.patch_size}"
            )
        return self.info.preprocessing.transform(resolution)

    def train(self, mode: bool = True) -> DecomposingBackbone:
        """Only this wrapper's flag: the wrapped model keeps its own (each call runs it in eval mode)."""
        self.training = mode
        return self

    def layout_for(self, pixel_values: Tensor) -> TokenLayout:
        """The token layout of a batch (checked: (batch, 3, H, W), sides multiples of the patch)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be (batch, 3, height, width), got {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        fixed = self.family.fixed_resolution()
        if fixed is not None and (height, width) != (fixed, fixed):
            raise ValueError(
                f"{self.info.name} reads {fixed} x {fixed} images only (its position embedding is not "
                f"resized); got {height} x {width}"
            )
        return self.info.layout(height, width)

    def forward(
        self, pixel_values: Tensor, indices: Tensor | None = None, *, extras: Sequence[Extra] = (),
        labels: Tensor | None = None,
    ) -> Decomposition:  # fmt: skip
        """The decomposition of one batch, with what each extra adds (`ExtraResult`).

        Args:
            pixel_values: normalised images (batch, 3, height, width).
            indices: the images' dataset indices (batch,), which seed every per-image draw (random
                orders, partners, noise); required when an extra draws any (`Extra.draws_random`).
            extras: what else to compute (`harness.extras`), each checked against the model first.
            labels: the images' class indices (batch,; -1 unlabelled), for the extras that read them
                (`Extra.reads_labels`: the attribution maps explaining the label's class).
        """
        for extra in extras:
            extra.check(self)
        if indices is None and (drawing := {type(e).__name__: e for e in extras if e.draws_random}):
            raise ValueError(f"{', '.join(drawing)}: seeded by dataset index, pass the images' `indices`")
        if labels is None and (reading := [type(e).__name__ for e in extras if e.reads_labels]):
            raise ValueError(f"{', '.join(reading)}: reads the images' classes, pass their `labels`")
        with evaluating(self.model):
            layout = self.layout_for(pixel_values)
            taps = [extra.taps(self, layout) for extra in extras]
            capture = self.capture(pixel_values, [tap for own in taps for tap in own.values()])
            decomposition = self.decompose(capture)
            call = Call(self, pixel_values, indices, capture, decomposition, labels=labels)
            results = [extra.run(call, own) for extra, own in zip(extras, taps, strict=True)]
        return joined(decomposition, results)

    def capture(self, pixel_values: Tensor, taps: Sequence[Tap] = ()) -> Capture:
        """Run the model once on `pixel_values`, keeping what the decomposition reads, with `taps`
        (which may read, never replace: a clean pass)."""
        layout = self.layout_for(pixel_values)
        rows, last = self._core_taps(layout)
        with last.hooked():
            pooled = self.pooled(pixel_values, (*taps, *(rows or ()), last), replacing=False)
        return last.captured(pooled, layout, rows[0] if rows else None)

    def capture_from(self, tokens: Tensor, layout: TokenLayout, start: int, taps: Sequence[Tap]) -> Capture:
        """A pass from block `start` on `tokens` (its input) under `taps`, keeping what the
        decomposition reads (`cls_states` rows of the blocks before `start` hold `tokens`' row)."""
        rows, last = self._core_taps(layout)
        with last.hooked():
            pooled = self.pooled_from(tokens, layout, (*taps, *(rows or ()), last), start=start)
        return last.captured(pooled, layout, rows[0] if rows else None)

    def _core_taps(self, layout: TokenLayout) -> tuple[tuple[ClsRows] | None, LastBlock]:
        """The core's taps of a pass: the [CLS] rows (none without a [CLS] token) and the last block
        (with the pool's input, for a "map" or "mean" readout)."""
        rows = (ClsRows(self.info.num_layers),) if layout.num_cls else None
        return rows, LastBlock(self.info.num_layers, self._pool)

    def decompose(self, capture: Capture) -> Decomposition:
        """Every variant, split and per-image quantity of docs/design.md#the-decomposition from one
        capture, with the pooler error: the largest difference of output/full to the model's own."""
        threshold = self.info.artifact_threshold
        artifacts = artifact_mask(capture.penultimate, capture.layout, threshold) if threshold else None
        tensors = decompose_last_block(
            self.read_view, self.after_readout, block_input=capture.block_input,
            keys=capture.keys, values=capture.values, layout=capture.layout, artifacts=artifacts,
        )  # fmt: skip
        with torch.autocast(device_type=capture.penultimate.device.type, enabled=False):
            tensors |= highest_norm_token(self.last_block, capture.penultimate, capture.layout)
        if self.family.projection is not None:
            tensors |= projection_readout(self.family.projection, tensors)
        if (states := capture.cls_states) is not None:
            tensors[HIDDEN_CLS] = states
            tensors[HIDDEN_CLS_COSINE] = nn.functional.cosine_similarity(
                states.double(), states[:, -1:].double(), dim=-1
            ).float()
        tensors |= self.linear_input(capture)
        pooler_error = (tensors["output/full"] - capture.pooled).abs().max()
        return Decomposition(tensors, capture.layout, pooler_error)

    def linear_input(self, capture: Capture) -> dict[str, Tensor]:
        """What DINOv2's linear classifiers read beside the [CLS] output, from `capture`
        (`decomposition.linear_input`): the final-normed [CLS] rows of the last blocks and the
        final-normed patch mean; nothing for a pooled model."""
        if capture.block_output is None or capture.cls_states is None:
            return {}
        return linear_input(self.family.final_norm, capture.block_output, capture.cls_states, capture.layout)

    def pooled(self, pixel_values: Tensor, taps: Sequence[Tap] = (), replacing: bool = True) -> Tensor:
        """The model's own pass on `pixel_values` under `taps`: its pooled output, float32."""
        layout = self.layout_for(pixel_values)
        with self._passing(layout, taps, replacing):
            return self.family.pooled(pixel_values).float()

    def pooled_from(
        self, tokens: Tensor, layout: TokenLayout, taps: Sequence[Tap] = (), start: int = 1,
        patches: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """The blocks from `start` (1-based) on `tokens`, the input of that block (e.g. `embed`'s
        output for 1), under `taps`: the pooled output (`Family.pool_of`), float32. `patches`: which
        patches of `layout`'s grid the sequence holds, where some were removed (`Family.encode`)."""
        with self._passing(layout, taps), starting_at(self.family.blocks, start):
            return self.family.pool_of(self.family.encode(tokens, layout, patches)).float()

    def embed(self, pixel_values: Tensor) -> Tensor:
        """The token sequence entering the first block (batch, tokens, hidden)."""
        with evaluating(self.model):
            return self.family.embed(pixel_values)

    @contextlib.contextmanager
    def _passing(self, layout: TokenLayout, taps: Sequence[Tap], replacing: bool = True) -> Iterator[None]:
        """One pass in eval mode with `taps`, the blocks none reads inside compiled when asked."""
        if self.compiled is not None and self._compiled_forward is None:  # one function, traced once
            self._compiled_forward = torch.compile(type(self.family.blocks[0]).forward, backend=self.compiled)
        blocks = self.family.blocks
        with (
            evaluating(self.model),
            compiled_blocks(blocks, self._compiled_forward, read_inside(taps) | self.family.hooked_blocks()),
            tapping(blocks, self.view, layout_rotation(self.family, layout), taps, replacing),
        ):
            yield


def joined(decomposition: Decomposition, results: Sequence[ExtraResult]) -> Decomposition:
    """The call's decomposition with every extra's entries and passes, its error the largest."""
    entries, error = dict(decomposition), decomposition.pooler_error
    passes: dict[str, Decomposition] = {}
    for result in results:
        if clash := sorted(entries.keys() & result.entries.keys()):
            raise ValueError(f"two extras of one call write {clash[:3]}")
        entries |= result.entries
        passes |= result.passes
        if result.error is not None:
            error = torch.maximum(error, result.error)
    return Decomposition(entries, decomposition.layout, error, passes)
