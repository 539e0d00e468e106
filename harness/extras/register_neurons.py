"""Register neurons (Jiang et al. 2025, "Vision Transformers Don't Need Trained Registers";
docs/design.md#register-neurons): the MLP neurons that make a model's high-norm tokens.

Per image, the outliers are the tokens whose norm in the output of the detection block exceeds a
threshold ([CLS] included, as the authors count it). Each neuron of the blocks up to `max_block`
scores the mean of its absolute activation (after the non-linearity: the input of the MLP's output
projection) over the image's outliers. Over a set of images, a neuron's score is the mean of its
per-image scores over the images that have outliers, and the register neurons are the `top_k` of
every scored block's neurons ranked together. With `sparse`, a neuron scores 0 in an image unless it
is below 0.5 on at least half of the tokens (the filter of the authors' notebook; off by default, as
the paper describes the rule without it).

`RegisterNeurons` (an extra) gives, per image, `register_neurons/scores` (images, max_block, mlp
width) and `register_neurons/outliers` (images, tokens, 1 at an outlier). The outliers come from the
clean pass; the scores from one more pass (the scored blocks run before the detection block).
`NeuronScores` adds them up over images (exact across ranks) and ranks them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L  # noqa: N812
import torch
from torch import Tensor
from torchmetrics import Metric

from harness.backbone import Call, DecomposingBackbone, Extra, ExtraResult
from harness.info import BackboneInfo
from harness.records import EvaluatedImages
from harness.taps import BlockParts, Tap
from harness.tokens import TokenLayout

REGISTER_NEURONS_PREFIX = "register_neurons/"
SPARSE_BELOW = 0.5
"""The sparsity filter's activation level: a neuron passes when below it on half the tokens or more."""


@dataclass(frozen=True)
class Published:
    """The authors' search settings for one model (their `configs/*.yaml`; layers 0-based there)."""

    names: tuple[str, ...]
    threshold: float
    detection_from_end: int  # 1: the last block, 2: the second-to-last
    max_block: int  # 1-based
    top_k: int


_OPENCLIP_B16 = (
    "openclip_vitb16_laion2b",
    "hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    "ViT-B-16@laion2b_s34b_b88k",
)
PUBLISHED: tuple[Published, ...] = (
    Published(("dinov2_vitl14", "facebook/dinov2-large"), 150.0, 2, 18, 50),
    Published(_OPENCLIP_B16, 30.0, 1, 6, 10),
    Published(("clip_vitb16", "openai/clip-vit-base-patch16", "ViT-B-16@openai"), 30.0, 1, 6, 10),
)
"""The authors' configs (layers 0-based there, 1-based here). DINOv2-L (configs/dinov2_large.yaml):
norm 150 at the second-to-last block, the top 50 neurons of blocks up to 18. OpenCLIP ViT-B/16
LAION-2B and OpenAI's ViT-B/16 (configs/openclip_base.yaml, openai_clip_base.yaml): norm 30 at the
last block, the top 10 neurons of blocks up to 6."""


def published_for(info: BackboneInfo) -> Published | None:
    """The authors' settings for the model `info` describes (by its name or HF id), if they publish any."""
    return next((found for found in PUBLISHED if {info.name, info.location} & set(found.names)), None)


DEFAULT_TOP_K = 50
"""Register neurons kept where the authors publish no number for the model."""


def top_k_for(info: BackboneInfo, asked: int | None = None) -> int:
    """Register neurons kept: `asked`, else the authors' number for the model, else `DEFAULT_TOP_K`."""
    published = published_for(info)
    return asked or (published.top_k if published else DEFAULT_TOP_K)


@dataclass(frozen=True)
class RegisterNeurons(Extra):
    """Each image's outliers at `detection_block` and its neurons' scores at blocks 1..`max_block`.

    >>> RegisterNeurons(150.0, 23, 18).name
    'register_neurons: norm > 150 at block 23, neurons of blocks 1-18'

    Args:
        threshold: the norm above which a token is an outlier.
        detection_block: the block (1-based) whose output norms are read.
        max_block: the last block whose neurons are scored.
        sparse: the authors' sparsity filter (see the module docstring).
    """

    threshold: float
    detection_block: int
    max_block: int
    sparse: bool = False

    @classmethod
    def for_model(
        cls, info: BackboneInfo, threshold: float | None = None, detection_block: int | None = None,
        max_block: int | None = None, sparse: bool = False,
    ) -> RegisterNeurons:  # fmt: skip
        """The search for the model `info` describes: each setting as given, else the authors' for it
        (`PUBLISHED`), else the second-to-last block and blocks up to three quarters of the depth.

        Raises:
            ValueError: no threshold given for a model the authors publish none for.
        """
        published = published_for(info)
        if threshold is None:
            if published is None:
                raise ValueError(
                    f"register neurons: the authors publish no norm threshold for {info.name}: give one "
                    "(their DINOv2-L uses 150, their OpenCLIP ViT-B/16 30)"
                )
            threshold = published.threshold
        layers = info.num_layers
        if detection_block is None:
            detection_block = layers + 1 - (published.detection_from_end if published else 2)
        if max_block is None:
            max_block = published.max_block if published else max(1, round(0.75 * layers))
        return cls(float(threshold), detection_block, max_block, sparse)

    @property
    def name(self) -> str:
        return (
            f"register_neurons: norm > {self.threshold:g} at block {self.detection_block}, "
            f"neurons of blocks 1-{self.max_block}"
        )

    def check(self, backbone: DecomposingBackbone) -> None:
        layers = backbone.info.num_layers
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"register neurons: the norm threshold must be positive, got {self.threshold}")
        for what, block in (("detection block", self.detection_block), ("last scored block", self.max_block)):
            if not 1 <= block <= layers:
                raise ValueError(f"register neurons: the {what} is {block}; the model has blocks 1..{layers}")

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        return {"outliers": _Outliers(self.detection_block, self.threshold)}

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        outliers = taps["outliers"]
        assert isinstance(outliers, _Outliers) and outliers.found is not None
        scoring = _Scoring(self.max_block, outliers.found, self.sparse)
        call.backbone.pooled(call.pixel_values, [scoring], replacing=False)
        scores = torch.stack([scoring.scores[block] for block in range(1, self.max_block + 1)], dim=1)
        return ExtraResult(
            {
                f"{REGISTER_NEURONS_PREFIX}scores": scores,
                f"{REGISTER_NEURONS_PREFIX}outliers": outliers.found.float(),
            }
        )


class _Outliers(Tap):
    """The tokens whose norm in one block's output exceeds the threshold: (images, tokens) bool."""

    def __init__(self, block: int, threshold: float) -> None:
        self.blocks, self.threshold = (block,), threshold
        self.found: Tensor | None = None

    def leave(self, parts: BlockParts) -> None:
        self.found = parts.output.float().norm(dim=-1) > self.threshold


class _Scoring(Tap):
    """Per image, each neuron's mean absolute activation over the image's outliers, at blocks
    1..`last` as they run (0 for an image without outliers): block -> (images, mlp width)."""

    reads = frozenset({"neurons"})

    def __init__(self, last: int, outliers: Tensor, sparse: bool) -> None:
        self.blocks = tuple(range(1, last + 1))
        self.outliers, self.sparse = outliers.float(), sparse
        self.scores: dict[int, Tensor] = {}

    def leave(self, parts: BlockParts) -> None:
        activations = parts.read("neurons").float()  # images, tokens, width
        counts = self.outliers.sum(dim=1, keepdim=True).clamp_min(1)
        scores = torch.einsum("it,itw->iw", self.outliers, activations.abs()) / counts
        if self.sparse:
            below = (activations < SPARSE_BELOW).sum(dim=1)
            scores = scores * (below >= 0.5 * activations.shape[1])
        self.scores[parts.number] = scores


@dataclass(frozen=True)
class RankedNeuron:
    """One register neuron: its block (1-based), its index in the MLP (0-based) and its score."""

    block: int
    neuron: int
    score: float


class NeuronScores(Metric):
    """Per-image neuron scores (`register_neurons/scores`) added up over the images that have
    outliers, with the outlier counts; `compute` gives the mean scores (blocks, mlp width), float64,
    and the counts. Sums reduce exactly across ranks."""

    full_state_update = False
    totals: Tensor
    with_outliers: Tensor
    images: Tensor
    outliers: Tensor

    def __init__(self, blocks: int, width: int) -> None:
        super().__init__()
        self.add_state("totals", torch.zeros(blocks, width, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("with_outliers", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("outliers", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, outliers: Tensor) -> None:
        """One batch: scores (images, blocks, width), outliers (images, tokens) 0 / 1."""
        counts = outliers.sum(dim=1)
        kept = counts > 0  # an image without outliers scores 0: its scores add nothing
        self.totals += (scores.double() * kept[:, None, None]).sum(dim=0)
        self.with_outliers += kept.sum()
        self.images += outliers.shape[0]
        self.outliers += counts.sum().long()

    def compute(self) -> dict[str, Tensor]:
        return {
            "scores": self.totals / self.with_outliers.clamp_min(1),
            "with_outliers": self.with_outliers,
            "images": self.images,
            "outliers": self.outliers,
        }


def ranked_neurons(scores: Tensor, top_k: int) -> list[RankedNeuron]:
    """The `top_k` neurons of mean `scores` (blocks, width; row b is block b + 1), every block ranked
    together, highest first (ties by block, then neuron); neurons that score 0 are none.

    >>> ranked_neurons(torch.tensor([[0.0, 3.0], [5.0, 1.0]]), 2)
    [RankedNeuron(block=2, neuron=0, score=5.0), RankedNeuron(block=1, neuron=1, score=3.0)]
    """
    flat = scores.flatten().double().cpu()
    order = torch.argsort(-flat, stable=True)[:top_k]
    width = scores.shape[1]
    return [
        RankedNeuron(int(i) // width + 1, int(i) % width, float(flat[i]))
        for i in order.tolist()
        if flat[i] > 0
    ]


def neurons_by_block(ranked: list[RankedNeuron]) -> dict[int, tuple[int, ...]]:
    """The ranked neurons as block -> its neurons, ascending (what `with_test_time_registers` takes).

    >>> neurons_by_block([RankedNeuron(2, 7, 1.0), RankedNeuron(1, 3, 0.5), RankedNeuron(2, 1, 0.2)])
    {1: (3,), 2: (1, 7)}
    """
    blocks: dict[int, list[int]] = {}
    for found in ranked:
        blocks.setdefault(found.block, []).append(found.neuron)
    return {block: tuple(sorted(blocks[block])) for block in sorted(blocks)}


class NeuronSearchModule(L.LightningModule):
    """The register-neuron search over a set of images (each image once: `EvaluatedImages`), its
    scores summed exactly across ranks (`NeuronScores`); after `trainer.test`, `ranked(top_k)`.

    Args:
        backbone: the decomposing backbone (frozen).
        search: the outlier rule and the blocks scored.
    """

    def __init__(self, backbone: DecomposingBackbone, search: RegisterNeurons) -> None:
        super().__init__()
        self.backbone, self.search = backbone, search
        self.scores = NeuronScores(search.max_block, backbone.info.mlp_size or backbone.family.mlp_size())
        self.images = EvaluatedImages()
        self.computed: dict[str, Tensor] = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["index"].numel():
            self.images.update(batch["index"])
            found = self.backbone(batch["pixels"], batch["index"], extras=[self.search])
            self.scores.update(
                found[f"{REGISTER_NEURONS_PREFIX}scores"], found[f"{REGISTER_NEURONS_PREFIX}outliers"]
            )

    def on_test_epoch_end(self) -> None:
        with warnings.catch_warnings():  # a rank that got no image never called update()
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method")
            self.computed = self.scores.compute() | {"distinct": self.images.compute()["distinct"]}

    def ranked(self, top_k: int) -> list[RankedNeuron]:
        return ranked_neurons(self.computed["scores"], top_k)

    def configure_optimizers(self) -> None:
        return None
