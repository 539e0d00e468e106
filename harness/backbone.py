"""A frozen ViT (any family of `harness.families`) that returns the `Decomposition` of its [CLS]
output in one forward pass."""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from transformers import Dinov2Model, Dinov2WithRegistersModel

from common.hashing import uniform_hash
from common.preparation import DINOV2_EVALUATION, Preprocessing
from harness.attribution import ClassScores, class_scores_of, explained_classes, scored_maps
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
from harness.families import Family, family_for
from harness.hooks import OnBlockEnd, keeping, removed_after, tapped
from harness.interventions import (
    Intervention,
    ReferenceStatistics,
    rebuilding_cls,
    recording,
    replacing_rows,
)
from harness.positions import resizes_as_original
from harness.tokens import TokenLayout

HFDinov2 = Dinov2Model | Dinov2WithRegistersModel


def _passing_through(*args: Any, **kwargs: Any) -> Any:
    """A block's forward that returns its input (the blocks before an intervention's first block)."""
    return args[0] if args else kwargs["hidden_states"]


_INTERVENED_KINDS = ("attention", "output", "projection", "split", "map", "penultimate", "hidden")
"""What a pass under an intervention reports: its last block's variants, splits, attention map and
penultimate token, and the [CLS] after every block (the clean pass's before its first block); not
the per-layer decompositions."""


@dataclass(frozen=True)
class ForwardOptions:
    """What one call of `DecomposingBackbone` computes besides the last block's decomposition.

    Attributes:
        layers: blocks (1-based) whose [CLS] update is also decomposed as they run (`depth/*`).
        deletion: shares of the patches removed in the deletion passes (`deletion/*`); () = none.
        deletion_seed: seed of the random deletion order.
        interventions: passes under interventions (`intervened/*`, `harness.interventions`).
        attribution: the attribution maps and their scores (`attribution/*`, `maps/*`,
            `harness.attribution`).
    """

    layers: tuple[int, ...] = ()
    deletion: tuple[float, ...] = ()
    deletion_seed: int = 0
    interventions: tuple[Intervention, ...] = ()
    attribution: bool = False

    def merged(self, other: ForwardOptions) -> ForwardOptions:
        """Everything either asks for (layers and interventions united; the deletion fractions and
        seed of whichever asks for deletion).

        >>> merged = ForwardOptions(layers=(1, 3)).merged(ForwardOptions(layers=(2,), deletion=(0.5,)))
        >>> merged.layers, merged.deletion, merged.attribution
        ((1, 2, 3), (0.5,), False)
        """
        deletion = other if other.deletion or other.attribution else self  # whose seed the random orders use
        interventions = tuple(dict.fromkeys((*self.interventions, *other.interventions)))
        return ForwardOptions(
            tuple(sorted({*self.layers, *other.layers})),
            deletion.deletion,
            deletion.deletion_seed,
            interventions,
            self.attribution or other.attribution,
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
        preprocessing: how the model's images are prepared (its family's or its checkpoint's
            processor); results.json holds it as the flat keys image_mean, image_std, resize,
            interpolation, resize_ratio (`as_dict`).
        projection_dim: width of the `projection/{variant}` readout (CLIP's visual_projection), 0
            for models without a projection.
        num_distillation: distillation tokens right after [CLS] (1 for a distilled DeiT): their own
            token group.
        num_classes: classes of the model's own classifier on the [CLS] readout (an ImageNet
            ViT's, DeiT's [CLS] head, a timm model's `head`; `DecomposingBackbone.classifier`), 0
            for models without one.
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
    preprocessing: Preprocessing = DINOV2_EVALUATION
    projection_dim: int = 0  # width of the projection readout (CLIP's visual_projection); 0: none
    num_distillation: int = 0  # distillation tokens after [CLS] (a distilled DeiT: 1)
    num_classes: int = 0  # classes of the model's own classifier on output/full; 0: none

    @property
    def identity(self) -> str:
        """What the weights are, however they were named: HF id, absolute path, or the name."""
        return self.location or self.name

    def as_dict(self) -> dict[str, Any]:
        """results.json's `backbone`: the fields in order, `preprocessing` as its flat keys;
        `num_classes` only for a model with a classifier of its own (files of models without one stay
        as they were written before it was recorded)."""
        data: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "preprocessing":
                data |= {key: getattr(self.preprocessing, name) for key, name in _PREPROCESSING_KEYS.items()}
            elif item.name != "num_classes" or self.num_classes:
                data[item.name] = getattr(self, item.name)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneInfo:
        """The info `as_dict` wrote. Keys it does not know are left (results.json of earlier versions
        held a few more); missing preparation keys are DINOv2's evaluation (files written before
        the families recorded theirs).

        Raises:
            TypeError, ValueError: a required field is missing or a preparation value is invalid.
        """
        names = {item.name for item in fields(cls)}
        known = {key: value for key, value in data.items() if key in names and key != "preprocessing"}
        stored = {name: data[key] for key, name in _PREPROCESSING_KEYS.items() if key in data}
        return cls(**known, preprocessing=replace(DINOV2_EVALUATION, **stored))


_PREPROCESSING_KEYS = {
    "image_mean": "mean",
    "image_std": "std",
    "resize": "resize",
    "interpolation": "interpolation",
    "resize_ratio": "resize_ratio",
}
"""results.json's key -> the `Preprocessing` field it holds, in results.json's order."""


@dataclass(frozen=True)
class Capture:
    """What one pass of the model leaves for the decomposition: the seam between running the model
    (`DecomposingBackbone.capture`) and decomposing its [CLS] output (`DecomposingBackbone.decompose`).

    Attributes:
        layout: token positions of the batch.
        pooled: the model's own pooled [CLS] output (batch, hidden), float32.
        block_input: the last block's input x (batch, tokens, hidden), as the model ran it.
        keys: the last block's keys as its softmax sees them (rotated where the family uses RoPE).
        values: the last block's value projections (batch, tokens, hidden).
        cls_states: the [CLS] row after the embeddings and after every block (batch, layers + 1, hidden).
        depth: `depth/{quantity}` (batch, chosen blocks) of the blocks decomposed as they ran.
        depth_error: max abs difference between those blocks' [CLS] outputs and their rebuilt ones
            (None when no block was chosen).
        block_inputs: the input of each block asked for (1-based number -> (batch, tokens, hidden)):
            where an intervention's pass starts.
    """

    layout: TokenLayout
    pooled: Tensor
    block_input: Tensor
    keys: Tensor
    values: Tensor
    cls_states: Tensor
    depth: dict[str, Tensor]
    depth_error: Tensor | None
    block_inputs: Mapping[int, Tensor] = field(default_factory=dict)


class _Recorder:
    """The forward hooks of one call: they keep what `Capture` holds while the model runs, and are
    removed when the call ends (`attach` is a context manager)."""

    def __init__(
        self,
        backbone: DecomposingBackbone,
        layout: TokenLayout,
        layers: Sequence[int],
        inputs_of: Sequence[int] = (),
    ) -> None:
        self.backbone, self.layout, self.layers = backbone, layout, tuple(layers)
        self.inputs_of = tuple(sorted(set(inputs_of)))
        self.block_inputs: dict[int, Tensor] = {}
        self.last: dict[str, Tensor] = {}
        self.cls_rows: list[Tensor] = []
        self.depth_rows: list[dict[str, Tensor]] = []
        self.depth_errors: list[Tensor] = []

    @contextlib.contextmanager
    def attach(self) -> Iterator[None]:
        family, backbone = self.backbone.family, self.backbone
        last = backbone.last_block.attention
        handles = [
            family.embeddings.register_forward_hook(self._keep_cls_row),
            *(block.register_forward_hook(self._keep_cls_row) for block in family.blocks),
            family.blocks[-1].register_forward_pre_hook(keeping(self.last, "block_input")),
            last.k_proj.register_forward_hook(keeping(self.last, "keys")),
            last.v_proj.register_forward_hook(keeping(self.last, "values")),
            *(
                family.blocks[n - 1].register_forward_pre_hook(keeping(self.block_inputs, n))
                for n in self.inputs_of
            ),
        ]

        def decompose(number: int) -> OnBlockEnd:
            return functools.partial(self._decompose_depth, number)

        with removed_after(handles), tapped(backbone, self.layers, self.layout, decompose):
            yield

    def _keep_cls_row(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self.cls_rows.append(output[:, 0])

    def _decompose_depth(
        self, number: int, block_input: Tensor, keys: Tensor, values: Tensor, output: Tensor
    ) -> None:
        """Block `number` ended (`tapped`): its depth quantities."""
        quantities, rebuilt = decompose_block(
            self.backbone.view(number), block_input, keys, values, self.layout
        )
        self.depth_rows.append(quantities)
        self.depth_errors.append((rebuilt - output[:, 0].float()).abs().max())

    def capture(self, pooled: Tensor) -> Capture:
        depth: dict[str, Tensor] = {}
        if self.depth_rows:  # one row per chosen block, in the order the blocks ran (ascending)
            depth = {
                DEPTH_PREFIX + quantity: torch.stack([row[quantity] for row in self.depth_rows], dim=1)
                for quantity in self.depth_rows[0]
            }
        return Capture(
            layout=self.layout,
            pooled=pooled.float(),
            block_input=self.last["block_input"],
            keys=self.backbone.family.attention_keys(self.last["keys"], self.layout),
            values=self.last["values"],
            cls_states=torch.stack(self.cls_rows, dim=1).float(),  # embeddings, then every block
            depth=depth,
            depth_error=torch.stack(self.depth_errors).max() if self.depth_errors else None,
            block_inputs=dict(self.block_inputs),
        )


class DecomposingBackbone(nn.Module):
    """A ViT (DINOv2, or any family of `harness.families`) that decomposes its [CLS] output.

    Each call runs the model once with its own fast attention (SDPA). Forward hooks, registered for
    that call only, keep the last block's input, keys and values and the [CLS] row after every
    block; only the last block's [CLS] query row is recomputed. What else a call computes is chosen
    per call (`layers`, `deletion`): the backbone holds no switches.

    The wrapped model is left as it was: no hook outlives a call, its forward is never replaced
    outside a call, and its training and `requires_grad` flags are not changed (each call runs the
    model in eval mode and restores the flags it found). Gradients flow through the decomposition
    when the caller enables them (the command line runs under `torch.inference_mode`).

    Args:
        model: a model of a family `harness.families` knows (DINOv2, DINOv3, ViT, DeiT, CLIP, timm
            ViT); its adapter gives the blocks, norms, keys and readouts.
        info: what the model is, for results.json (`from_model` infers it).
        compile_backend: run every block that a call does not read (all but the last and the
            per-layer ones) under `torch.compile` with this backend during each call; None: eager.
        classifier: the model's own classifier on its [CLS] readout (`output/full` -> class
            logits), where it has one (`load_backbone` and `from_model` find it; `info.num_classes`
            records its classes); None: none. A `class_scores` for the attribution maps and the
            `--head model` of the command line.

    Calling it on `pixel_values` (batch, 3, height, width) returns a `Decomposition`.
    """

    def __init__(
        self,
        model: nn.Module,
        info: BackboneInfo,
        compile_backend: str | None = None,
        classifier: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.family: Family = family_for(model)  # where the blocks, norms and readout are
        self.classifier = classifier
        self.info = info
        self.compiled = compile_backend
        self._compiled_forward: Callable[..., Any] | None = None
        self._views: dict[int, HFBlock] = {}  # block number -> its family's view, made once

    @classmethod
    def from_model(
        cls, model: nn.Module, name: str | None = None, compile_backend: str | None = None
    ) -> DecomposingBackbone:
        """The decomposing backbone of an in-memory model of any supported family: its family,
        architecture, image preparation and position interpolation are read from the model.

        Args:
            model: e.g. a transformers `Dinov2Model` or a timm `VisionTransformer`; left as it was.
            name: what results record as the backbone's name (default: the model's class name).
            compile_backend: see the class.

        Raises:
            ValueError: no family adapter reads the model (the message names the supported ones).
        """
        family = family_for(model)
        classifier = family.own_classifier()
        info = BackboneInfo(
            name=name or type(model).__name__,
            source="memory",
            location="",
            **family.architecture(),
            random_weights=False,
            # what the model does: the authors' resize where its embeddings were switched to it
            pos_interpolation="original" if resizes_as_original(model) else family.own_pos_interpolation,
            family=family.name,
            preprocessing=family.preparation(),
            num_classes=0 if classifier is None else classifier.out_features,
        )
        return cls(model, info, compile_backend, classifier)

    def compiling(self, backend: str = "inductor") -> DecomposingBackbone:
        """A backbone over the same model whose calls run the blocks they do not read under
        `torch.compile` (`backend`); the results are those of the eager run, to rounding."""
        return type(self)(self.model, self.info, backend, self.classifier)

    @property
    def last_block(self) -> HFBlock:
        """The last block under the decomposition's names (its family's view)."""
        return self.view(self.info.num_layers)

    def view(self, number: int) -> HFBlock:
        """Block `number` (1-based) under the decomposition's names, made once (not per batch)."""
        if number not in self._views:
            self._views[number] = self.family.view(self.family.blocks[number - 1])
        return self._views[number]

    @property
    def patch_size(self) -> int:
        return self.info.patch_size

    def transform(self, resolution: int) -> Callable[[Image.Image], Tensor]:
        """The evaluation transform the command line feeds this backbone at `resolution` (its
        `info.preprocessing`): PIL image -> normalised (3, resolution, resolution) tensor.

        Raises:
            ValueError: `resolution` is not a positive multiple of the patch size.
        """
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
        """The token layout of a batch of images (checked: (batch, 3, H, W), sides multiples of the
        patch size)."""
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
        return TokenLayout.for_image(
            height, width, info.patch_size, info.num_registers, info.num_distillation
        )

    def _checked_layers(self, layers: Sequence[int]) -> tuple[int, ...]:
        count = self.info.num_layers
        if any(not 1 <= number <= count for number in layers):
            raise ValueError(f"layers are numbered 1..{count}, got {sorted(layers)}")
        return tuple(sorted(set(layers)))

    @contextlib.contextmanager
    def _running(self, eager: Sequence[int]) -> Iterator[None]:
        """The model in eval mode, its blocks but the last and `eager` compiled when asked, for the
        length of a call; the flags and forwards it had are restored afterwards."""
        training = [module for module in self.model.modules() if module.training]
        self.model.eval()
        patched: list[tuple[nn.Module, Any]] = []
        if self.compiled is not None:
            if self._compiled_forward is None:  # one compiled function for every block (traced once)
                self._compiled_forward = torch.compile(
                    type(self.family.blocks[0]).forward, backend=self.compiled
                )
            for number, block in enumerate(self.family.blocks, start=1):
                if number < self.info.num_layers and number not in eager:
                    patched.append((block, block.__dict__.get("forward")))
                    block.forward = types.MethodType(self._compiled_forward, block)
        try:
            yield
        finally:
            for block, own in patched:
                if own is None:
                    del block.forward
                else:
                    block.forward = own
            for module in training:
                module.training = True

    def capture(
        self, pixel_values: Tensor, layers: Sequence[int] = (), inputs_of: Sequence[int] = ()
    ) -> Capture:
        """Run the model once on `pixel_values` and keep what the decomposition reads, decomposing
        the [CLS] update of `layers` (1-based block numbers) as those blocks run, and keeping the
        inputs of the blocks `inputs_of`."""
        layout = self.layout_for(pixel_values)
        chosen = self._checked_layers(layers)
        recorder = _Recorder(self, layout, chosen, self._checked_layers(inputs_of))
        with self._running(eager=chosen), recorder.attach():
            pooled = self.family.pooled(pixel_values)
        return recorder.capture(pooled)

    def decompose(self, capture: Capture) -> Decomposition:
        """Every variant, split and per-image quantity of docs/design.md#the-decomposition from one
        capture, with the pooler error: the largest difference of the rebuilt outputs (the last
        block's and the per-layer ones) to the model's own."""
        tensors = decompose_last_block(
            self.last_block,
            self.family.final_norm,
            block_input=capture.block_input,
            keys=capture.keys,
            values=capture.values,
            layout=capture.layout,
        )
        if self.family.projection is not None:
            tensors |= projection_readout(self.family.projection, tensors)
        tensors[HIDDEN_CLS] = capture.cls_states
        tensors[HIDDEN_CLS_COSINE] = nn.functional.cosine_similarity(
            capture.cls_states.double(), capture.cls_states[:, -1:].double(), dim=-1
        ).float()
        tensors |= capture.depth
        pooler_error = (tensors["output/full"] - capture.pooled).abs().max()
        if capture.depth_error is not None:
            pooler_error = torch.maximum(pooler_error, capture.depth_error)
        return Decomposition(tensors, capture.layout, pooler_error)

    def forward(
        self,
        pixel_values: Tensor,
        indices: Tensor | None = None,
        *,
        layers: Sequence[int] = (),
        deletion: Sequence[float] = (),
        deletion_seed: int = 0,
        interventions: Sequence[Intervention] = (),
        reference: ReferenceStatistics | None = None,
        attribution: bool = False,
        class_scores: ClassScores | None = None,
    ) -> Decomposition:
        """The decomposition of one batch.

        Args:
            pixel_values: normalised images (batch, 3, height, width).
            indices: the images' dataset indices, which seed the random deletion order (default:
                0, 1, ...).
            layers: blocks (1-based) whose [CLS] update is also decomposed as they run (`depth/*`).
            deletion: shares of the patches to delete in the deletion passes (`deletion/*`, see
                `deletion_passes`); none by default.
            deletion_seed: seed of the random deletion order.
            interventions: each adds the decomposition of a pass under it, its names prefixed with
                `Intervention.prefix` (`harness.interventions`); one more pass each, from its first
                block on. With `deletion`, the deletion passes run under each intervention that
                allows them (`Intervention.allows_deletion`), ordered by its own attention map and
                compared with its own output.
            reference: the reference statistics the `mean`, `shuffle` and `noise` interventions read.
            attribution: add every attribution map and its scores (`harness.attribution.scored_maps`;
                gradient passes and 2 x 2 x fractions perturbation passes per map, 2 x fractions
                per head and 2 x fractions for the shared random control).
            class_scores: pooled outputs -> class scores (`harness.attribution.ClassScores`): the
                gradient maps explain the class they rank first, and the perturbation passes report
                its probability and the class each perturbed output is given.
        """
        if deletion and any(not 0 < f < 1 for f in deletion):
            raise ValueError(f"deletion fractions must lie in (0, 1), got {list(deletion)}")
        capture = self.capture(pixel_values, layers, inputs_of=[i.blocks[0] for i in interventions])
        decomposition = self.decompose(capture)
        if not deletion and not interventions and not attribution:
            return decomposition
        if indices is None:
            indices = torch.arange(pixel_values.shape[0], device=pixel_values.device)
        extra: dict[str, Tensor] = {}
        with self._running(eager=self._checked_layers(layers)):
            if deletion:
                extra |= self.deletion_passes(
                    pixel_values, decomposition[ATTENTION_MAP], capture.pooled, capture.layout, indices,
                    tuple(deletion), deletion_seed,
                )  # fmt: skip
        pooler_error = decomposition.pooler_error
        for intervention in interventions:
            intervened, error = self.intervened(capture, intervention, indices, reference)
            if deletion and intervention.allows_deletion:
                with (
                    self._running(eager=intervention.blocks),
                    # the deletion passes run the three orders as one batch: each image three times
                    replacing_rows(self, intervention, capture.layout, indices.repeat(3), reference),
                ):
                    intervened |= self.deletion_passes(
                        pixel_values, intervened[ATTENTION_MAP], intervened["output/full"], capture.layout,
                        indices, tuple(deletion), deletion_seed,
                    )  # fmt: skip
            extra |= {intervention.prefix + name: tensor for name, tensor in intervened.items()}
            if error is not None:  # the intervened pass's decomposition is checked as the clean one is
                pooler_error = torch.maximum(pooler_error, error)
        if attribution:
            extra |= scored_maps(self, pixel_values, indices, deletion_seed, class_scores)
        return Decomposition({**decomposition, **extra}, capture.layout, pooler_error)

    def intervened(
        self,
        capture: Capture,
        intervention: Intervention,
        indices: Tensor,
        reference: ReferenceStatistics | None = None,
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """What the pass under `intervention` reports, run from the input of its first block (kept by
        `capture(..., inputs_of=...)`; the blocks before it are not run again): the model's output
        `output/full` (and `projection/full`) and, unless the intervention rebuilds the last block's
        [CLS] row itself (readout level at the last block), its last block's decomposition: every
        variant, split and the attention map (names without the intervention's prefix); with that
        decomposition's pooler error (None without one)."""
        start = intervention.blocks[0]
        if start not in capture.block_inputs:
            raise ValueError(
                f"the capture holds no input of block {start}: capture(..., inputs_of=[{start}])"
            )
        layout = capture.layout
        apply = rebuilding_cls if intervention.level == "readout" else replacing_rows
        recorder = _Recorder(self, layout, ())
        with (
            self._running(eager=intervention.blocks),
            self._starting_at(start),
            # the replacement's hooks first: the recorder's then keep the inputs as the blocks get them
            apply(self, intervention, layout, indices, reference),
            recorder.attach(),
        ):
            last = self.family.encode(capture.block_inputs[start], layout)
            pooled = self.family.final_norm(last[:, 0]).float()
        output = {"output/full": pooled}
        if self.family.projection is not None:
            output |= projection_readout(self.family.projection, output)
        if intervention.reported_variants(self.info.num_layers) is not None:
            return output, None  # the last block's decomposition describes the [CLS] row before the rebuild
        captured = recorder.capture(pooled)  # its [CLS] rows: one per block (no embeddings hook fired)
        cls_states = torch.cat([capture.cls_states[:, :start], captured.cls_states[:, start - 1 :]], dim=1)
        decomposition = self.decompose(replace(captured, cls_states=cls_states))
        kept = {name: t for name, t in decomposition.items() if name.split("/")[0] in _INTERVENED_KINDS}
        return kept | output, decomposition.pooler_error

    def record_reference(
        self,
        pixel_values: Tensor,
        indices: Tensor,
        interventions: Sequence[Intervention],
        into: ReferenceStatistics,
    ) -> None:
        """One clean pass over reference images, adding to `into` what the interventions' `mean`,
        `shuffle` and `noise` read (`Intervention.reference_keys`)."""
        keys = {key for intervention in interventions for key in intervention.reference_keys()}
        if not keys:
            return
        layout = self.layout_for(pixel_values)
        blocks = sorted({key.block for key in keys})
        with self._running(eager=blocks), recording(self, keys, layout, indices, into):
            self.family.pooled(pixel_values)

    @contextlib.contextmanager
    def _starting_at(self, start: int) -> Iterator[None]:
        """The blocks before `start` pass their input through, for a pass that begins at block
        `start` (`family.encode` runs every block); restored afterwards."""
        patched = []
        for block in self.family.blocks[: start - 1]:
            patched.append((block, block.__dict__.get("forward")))
            block.forward = _passing_through
        try:
            yield
        finally:
            for block, own in reversed(patched):
                if own is None:
                    del block.forward
                else:
                    block.forward = own

    def deletion_passes(
        self, pixel_values: Tensor, attention_map: Tensor, pooled: Tensor, layout: TokenLayout,
        indices: Tensor, fractions: Sequence[float] = DELETION_FRACTIONS, seed: int = 0,
        insertion: bool = False, orders: Sequence[str] = DELETION_ORDERS,
        class_scores: ClassScores | None = None,
    ) -> dict[str, Tensor]:  # fmt: skip
        """How the pooled output changes when patches are deleted, per image: for each order of
        `orders` (`DELETION_ORDERS` by default) and fraction f, the round(f x patches) first patches of
        that order are removed from the sequence after the embeddings, which equals masking their
        keys in every layer (nothing attends to them, so nothing else depends on them), and the model
        runs again. With `insertion`, those patches are the only ones kept (with [CLS], distillation
        and registers): the insertion test of a map.

        Returns:
            `deletion/{order}` (batch, fractions): the cosine of each such pooled output to the full
            one. The random order hashes (seed, dataset index, patch), so an image deletes the same
            patches in any batch, on any rank. With `class_scores` (pooled outputs -> class scores,
            `harness.attribution.ClassScores`), also `deletion/{order}/probability` (batch,
            fractions): the softmax probability of the class the full output's scores rank first,
            and `deletion/{order}/predicted` (batch, fractions), the class each output's rank first.
        """
        patches = layout.slice("patch")
        count, first = patches.stop - patches.start, patches.start
        ranking = attention_map.flatten(1)
        keys = indices.long().unsqueeze(1) * count + torch.arange(count, device=indices.device)
        ordered = {
            "top": ranking.argsort(dim=1, descending=True, stable=True),
            "random": uniform_hash(keys, seed).argsort(dim=1, stable=True),
            "bottom": ranking.argsort(dim=1, stable=True),
        }
        if unknown := [order for order in orders if order not in ordered]:
            raise ValueError(f"unknown deletion orders {unknown}: choose from {list(DELETION_ORDERS)}")
        embeddings = self.family.embed(pixel_values)
        batch, _, hidden = embeddings.shape
        repeats = len(orders)
        # [CLS], distillation, registers
        leading = torch.arange(first, device=embeddings.device).expand(repeats * batch, first)
        by_order = torch.cat([ordered[order] for order in orders])  # orders x batch, patches
        repeated = embeddings.repeat(repeats, 1, 1)
        explained = explained_classes(class_scores, pooled)
        explained = None if explained is None else explained.repeat(repeats)
        measured: dict[str, list[Tensor]] = {"": [], "/probability": [], "/predicted": []}
        for fraction in fractions:
            chosen = round(fraction * count)
            kept = (by_order[:, :chosen] if insertion else by_order[:, chosen:]).sort(dim=1).values
            positions = torch.cat([leading, kept + first], dim=1)
            tokens = repeated.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden))
            output = self.family.final_norm(self.family.encode(tokens, layout, kept)[:, 0]).float()
            measured[""].append(nn.functional.cosine_similarity(output, pooled.repeat(repeats, 1), dim=-1))
            if class_scores is not None and explained is not None:
                scores = class_scores_of(class_scores, output)
                probabilities = scores.softmax(dim=-1).gather(1, explained.unsqueeze(1)).squeeze(1)
                measured["/probability"].append(probabilities)
                measured["/predicted"].append(scores.argmax(dim=-1))
        results: dict[str, Tensor] = {}
        for suffix, values in measured.items():
            if values:
                per_order = torch.stack(values, dim=1).split(batch)  # orders x (batch, fractions)
                results |= {
                    DELETION_PREFIX + order + suffix: v for order, v in zip(orders, per_order, strict=True)
                }
        return results
