"""Linear classifier heads on frozen features: trained by train_probe.py, saved with what they fit."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from common.errors import UserError
from harness.decomposition import LINEAR_INPUT_CLS, LINEAR_INPUT_PATCH_MEAN

if TYPE_CHECKING:
    from harness.info import BackboneInfo


class HeadMismatchError(UserError):
    """A head trained for another backbone, feature or class list than the run it is used in."""


RELEASED_KEYS = ("weight", "bias")
"""The keys of a linear head released with DINOv2 (the state dict of an `nn.Linear`)."""
RELEASED_BLOCKS = (1, 4)
"""The blocks whose [CLS] rows DINOv2's released heads read (`_linear_head.pth`, `_linear4_head.pth`)."""


FETCH_TIMEOUT = 30.0
"""Seconds a released head's download may wait for an answer."""


def fetch_released_head(info: BackboneInfo, blocks: int) -> Path:
    """The linear head on `blocks` blocks the authors released for the backbone `info` describes,
    from torch.hub's cache (`$TORCH_HOME/hub/checkpoints`, where their hub code keeps it) or
    downloaded there from where their hub code downloads it.

    Raises:
        UserError: a backbone its authors released no such head for, or a download that failed.
    """
    from harness.families import FAMILIES

    families = [family for family in FAMILIES if family.name == info.family]
    url = families[0].released_head((info.name, info.location), blocks) if families else None
    if url is None:
        raise UserError(
            f"no linear head was released for {info.name!r}: the released DINOv2 backbones have them "
            "(name one by its short name, hub id or .pth), or pass a head file"
        )
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    waited = socket.getdefaulttimeout()
    socket.setdefaulttimeout(FETCH_TIMEOUT)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as error:  # DNS, refused, timeout, HTTP: each is one line
        raise UserError(
            f"cannot fetch the released head {url} ({type(error).__name__}: {error}); download it "
            f"where it is reachable into {cached.parent}, or pass the file to --head"
        ) from None
    finally:
        socket.setdefaulttimeout(waited)
    return cached


def joined_input(entries: Mapping[str, Tensor], cls_row: Tensor, blocks: int) -> Tensor:
    """DINOv2's linear input (`_LinearClassifierWrapper`) with `cls_row` (batch, hidden) as the last
    block's final-normed [CLS]: the final-normed [CLS] of the `blocks` - 1 blocks before it, `cls_row`
    and the patch mean, from the decomposition's `linear_input/*` entries of the same images (tiled
    where `cls_row` holds k x batch rows, image i at rows i, batch + i, ...)."""
    earlier = entries[LINEAR_INPUT_CLS][:, -blocks:-1].flatten(1)
    mean = entries[LINEAR_INPUT_PATCH_MEAN]
    repeats, rest = divmod(cls_row.shape[0], mean.shape[0])
    if rest:
        raise ValueError(f"{cls_row.shape[0]} rows are not a whole number of the {mean.shape[0]} images")
    return torch.cat([earlier.repeat(repeats, 1), cls_row, mean.repeat(repeats, 1)], dim=1)


class ReleasedScores(nn.Module):
    """The class scores of a head released with DINOv2 on pooled [CLS] outputs, the rest of its input
    (the earlier blocks' [CLS], the patch mean) each image's own from the call's decomposition
    (`bind`: `harness.extras.scores.ImageBoundScores`)."""

    def __init__(self, head: LinearHead, blocks: int) -> None:
        super().__init__()
        self.classifier, self.blocks = head.classifier(), blocks

    def bind(self, decomposition: Mapping[str, Tensor]) -> Callable[[Tensor], Tensor]:
        entries = {name: decomposition[name].detach() for name in (LINEAR_INPUT_CLS, LINEAR_INPUT_PATCH_MEAN)}

        def scores(pooled: Tensor) -> Tensor:
            inputs = joined_input(entries, pooled, self.blocks)
            return self.classifier(inputs.to(self.classifier.weight.dtype))

        return scores

    def forward(self, pooled: Tensor) -> Tensor:
        raise TypeError("a released head's class scores read each image's patch mean: bind them to a call")


@dataclass(frozen=True)
class LinearHead:
    """Weights (classes, dims) and bias (classes,) of a linear classifier on one feature.

    Attributes:
        backbone: the `--backbone` the features came from.
        feature: the variant it was trained on (`output/full`).
        class_names: class of each output row.
        resolution: image size of the training features.
        learning_rate: the learning rate chosen on the validation part.
        validation_top1: top-1 accuracy of that choice on the validation part.
        pos_interpolation: how the backbone resized its position grid ("hf" for heads saved before
            the choice was recorded, when every HF-loaded backbone used transformers' resize).
        released: a linear head released with DINOv2 (`dinov2_vit*14[_reg4]_linear[4]_head.pth`, the
            state dict of `nn.Linear((1 + blocks) * hidden, 1000)`), which reads DINOv2's linear input
            (`blocks`) instead of the variant alone; trained by the authors, on ImageNet-1k's 1000
            classes in their sorted order.
    """

    weight: Tensor
    bias: Tensor
    backbone: str
    feature: str
    class_names: tuple[str, ...]
    resolution: int
    learning_rate: float
    validation_top1: float
    pos_interpolation: str = "hf"
    released: bool = False

    def blocks(self, hidden_size: int) -> int:
        """The [CLS] rows of the last blocks a released DINOv2 head reads (1 or 4; 0: a head on the
        variant alone), for a backbone of `hidden_size`.

        Raises:
            HeadMismatchError: a released head whose width is no DINOv2 input of that backbone.
        """
        if not self.released:
            return 0
        width = self.weight.shape[1]
        blocks = width // hidden_size - 1
        if width % hidden_size or blocks not in RELEASED_BLOCKS:
            raise HeadMismatchError(
                f"the DINOv2 head reads {width} features, not (1 + 1) or (1 + 4) x this backbone's "
                f"{hidden_size}: it was released for another model size"
            )
        return blocks

    def class_scores(self, hidden_size: int) -> nn.Module:
        """Its class scores of pooled outputs of a backbone of `hidden_size`: its classifier, or for a
        released DINOv2 head `ReleasedScores` (bound to each call's images)."""
        blocks = self.blocks(hidden_size)
        return ReleasedScores(self, blocks) if blocks else self.classifier()

    def classifier(self) -> nn.Linear:
        """The head as a frozen `nn.Linear` (features -> class logits)."""
        classifier = nn.Linear(self.weight.shape[1], self.weight.shape[0])
        classifier.weight.data.copy_(self.weight)
        classifier.bias.data.copy_(self.bias)
        return classifier.requires_grad_(False)

    @classmethod
    def of_classifier(
        cls, classifier: nn.Linear, backbone: str, resolution: int, pos_interpolation: str,
        hidden_size: int = 0,
    ) -> LinearHead:  # fmt: skip
        """A model's own classifier (`DecomposingBackbone.classifier`, `--head model`) as a head of
        this run: on `output/full`, or, twice the backbone's `hidden_size` wide, on DINOv2's one-block
        linear input (a `Dinov2ForImageClassification`'s: `released`); its classes are its output
        indices ("0", "1", ...; labels must be given in its order), trained by the model's authors (no
        learning rate or validation accuracy of this tool: NaN)."""
        released = bool(hidden_size) and classifier.in_features == 2 * hidden_size
        return cls._of_authors(
            classifier.weight, classifier.bias, released, backbone, resolution, pos_interpolation
        )

    @classmethod
    def of_released(cls, weight: Tensor, bias: Tensor) -> LinearHead:
        """A head released with DINOv2 (`released`): its classes are its output indices, ImageNet-1k's
        in sorted-wnid order (labels must be given in that order, as `--data imagenet` numbers them)."""
        return cls._of_authors(weight, bias, released=True)

    @classmethod
    def _of_authors(
        cls, weight: Tensor, bias: Tensor, released: bool, backbone: str = "", resolution: int = 0,
        pos_interpolation: str = "hf",
    ) -> LinearHead:  # fmt: skip
        """Weights trained by a model's authors: classes by output index, no learning rate or
        validation accuracy of this tool (NaN), on `output/full` (or DINOv2's input where `released`)."""
        weight, bias = (tensor.detach().float().cpu().clone() for tensor in (weight, bias))
        classes = tuple(str(index) for index in range(weight.shape[0]))
        nan = float("nan")
        return cls(
            weight, bias, backbone, "output/full", classes, resolution, nan, nan, pos_interpolation, released
        )

    def save(self, path: Path) -> None:
        record = asdict(self) | {"class_names": list(self.class_names)}
        torch.save(record, path)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        """The head `train_probe.py` saved at `path`, or a linear head released with DINOv2 (a state
        dict of `weight` and `bias` alone), read weights-only.

        Raises:
            UserError: anything else in the file (random bytes, an empty file, a bare tensor, a pickle
                that would run code), or a head whose weights are not finite numbers of one width.
        """
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(record, dict):
                raise TypeError(f"it holds a {type(record).__name__}, not a head's record")
            if set(record) == set(RELEASED_KEYS):
                head = cls.of_released(*(torch.as_tensor(record[key]) for key in RELEASED_KEYS))
            else:
                record["class_names"] = tuple(record["class_names"])
                head = cls(**record)
        except Exception as error:  # what torch.load and a wrong record raise varies: each is one line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(
                f"{path} is not a linear head saved by train_probe.py or released with DINOv2: {reason}"
            ) from None
        weight, bias = head.weight, head.bias
        if weight.ndim != 2 or bias.shape != (weight.shape[0],) or len(head.class_names) != weight.shape[0]:
            raise UserError(f"{path}: a head of {tuple(weight.shape)} weights, {tuple(bias.shape)} bias and "
                            f"{len(head.class_names)} classes does not fit together")  # fmt: skip
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise UserError(f"{path}: the head's weights hold NaN or infinite values")
        return head

    def check_compatible(
        self, backbone: str, class_names: tuple[str, ...], resolution: int, pos_interpolation: str,
        width: int | None = None,
    ) -> None:  # fmt: skip
        """Refuse a head trained for another backbone, class list, resolution, position resize or
        feature width (`width`: the features it will read, where known)."""
        if width is not None and self.weight.shape[1] != width:
            raise HeadMismatchError(
                f"the head reads {self.weight.shape[1]} features, this backbone's {self.feature} has {width}"
            )
        if backbone != self.backbone:
            raise HeadMismatchError(f"the head was trained on backbone {self.backbone!r}, not {backbone!r}")
        if class_names != self.class_names:
            raise HeadMismatchError(
                f"the head was trained on {len(self.class_names)} classes {list(self.class_names)[:5]}..., "
                f"this data has {len(class_names)} classes {list(class_names)[:5]}..."
            )
        if resolution != self.resolution:
            raise HeadMismatchError(
                f"the head was trained at {self.resolution} px, this run uses {resolution} px"
            )
        if pos_interpolation != self.pos_interpolation and resolution != 518:
            raise HeadMismatchError(
                f"the head was trained with --pos-interpolation {self.pos_interpolation}, this run uses "
                f"{pos_interpolation}: at {resolution} px their features differ"
            )


class LinearHeads(L.LightningModule):
    """One linear classifier per learning rate, trained together on the same batches.

    As in DINOv2's linear evaluation: SGD with momentum 0.9, a cosine learning-rate schedule
    over all steps, heads initialised with N(0, 0.01) weights and zero bias. The loss is the
    sum of every head's cross-entropy, so each head follows its own learning rate.

    `accuracies(features, labels)` scores every head, to choose the learning rate.

    Args:
        dims: feature size.
        num_classes: number of classes.
        learning_rates: one head per value.
        total_steps: optimiser steps of the whole run (for the cosine schedule).
        weight_decay: L2 penalty of SGD.
        seed: seed of the heads' initial weights (the same seed trains the same heads).
    """

    def __init__(
        self,
        dims: int,
        num_classes: int,
        learning_rates: Sequence[float],
        total_steps: int,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not learning_rates or min(learning_rates) <= 0:
            raise ValueError(f"learning rates must be positive, got {list(learning_rates)}")
        self.learning_rates = tuple(learning_rates)
        self.total_steps = max(1, total_steps)
        self.weight_decay = weight_decay
        self.heads = nn.ModuleList(nn.Linear(dims, num_classes) for _ in self.learning_rates)
        generator = torch.Generator().manual_seed(seed)
        for head in self.heads:
            nn.init.normal_(cast(nn.Linear, head).weight, std=0.01, generator=generator)
            nn.init.zeros_(cast(nn.Linear, head).bias)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        features, labels = batch
        losses = [nn.functional.cross_entropy(head(features), labels) for head in self.heads]
        loss = torch.stack(losses).sum()
        self.log("train/loss", loss / len(losses), prog_bar=True)
        return loss

    @torch.no_grad()
    def accuracies(self, features: Tensor, labels: Tensor) -> list[float]:
        """Top-1 accuracy of each head on (samples, dims) features, e.g. the validation part."""
        features = features.to(self.device)
        labels = labels.to(self.device)
        return [(head(features).argmax(dim=-1) == labels).double().mean().item() for head in self.heads]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        groups = [
            {"params": head.parameters(), "lr": lr}
            for head, lr in zip(self.heads, self.learning_rates, strict=True)
        ]
        optimizer = torch.optim.SGD(groups, momentum=0.9, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
