"""What a loaded backbone is and where it came from: `BackboneInfo`, recorded in results.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from common.preparation import DINOV2_EVALUATION, Preprocessing
from harness.decomposition import split_names, variant_names
from harness.tokens import TokenLayout, present_groups

READOUTS = ("cls", "map", "mean")
"""How a model's pooled output is read: the [CLS] row of its last block (through the final norm), an
attention-pooling head over its final tokens (MAP: SigLIP, PE-core), or the mean of its final patch
tokens (timm's `global_pool='avg'`); docs/design.md#readouts."""


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
        mlp_size: the width of the blocks' MLP (its neurons; 0 in results written before it was
            recorded).
        test_time_registers: how many of `num_registers` are test-time registers (extra tokens fed by
            register neurons, `harness.test_time_registers`; 0 for a model without).
        num_cls: 1, or 0 for a model without a [CLS] token (SigLIP: pooled by attention).
        readout: how the pooled output is read (`READOUTS`): "cls", "map" (an attention-pooling
            head, which has no residual: no skip variant) or "mean" (the patch tokens' mean: only
            patch variants).
        artifact_threshold: the patches whose norm in the last block's input exceeds it are the
            `artifact` group (`harness.decomposition.ARTIFACT_GROUPS`); 0: no such split.
        readout_heads: the heads of what reads the pooled output where they are not `num_heads` (a
            pooling head of its own width: PE-core's 8 over 16-head blocks; the patch mean: 1); 0:
            the blocks' heads.
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
    mlp_size: int = 0  # the MLP's width (its neurons); 0: not recorded
    test_time_registers: int = 0  # of num_registers, those added at test time (harness.test_time_registers)
    num_cls: int = 1  # 0: no [CLS] token (SigLIP)
    readout: str = "cls"  # "cls", "map" or "mean" (READOUTS)
    artifact_threshold: float = 0.0  # > 0: the patches above this norm are the artifact group
    readout_heads: int = 0  # the pooling head's heads where not num_heads; 0: the blocks'

    def __post_init__(self) -> None:
        if self.readout not in READOUTS or self.num_cls not in (0, 1):
            raise ValueError(f"readout {self.readout!r} ({self.num_cls} [CLS] tokens): not one of {READOUTS}")
        if self.num_cls == 0 and self.readout == "cls":
            raise ValueError("a model without a [CLS] token cannot be read from its [CLS] row")
        if not self.artifact_threshold >= 0:  # NaN too
            raise ValueError(f"artifact threshold {self.artifact_threshold}: give a norm above 0")

    @property
    def heads_read(self) -> int:
        """The heads of what reads the pooled output (the last block's, or a pooling head's)."""
        return self.readout_heads or self.num_heads

    @property
    def has_skip(self) -> bool:
        """Whether the readout has a residual (the [CLS] row's skip stream); an attention pool has none."""
        return self.readout == "cls"

    @property
    def groups(self) -> tuple[str, ...]:
        """The token groups the model has (`harness.tokens.present_groups`)."""
        return present_groups(self.num_registers, self.num_distillation, self.num_cls)

    def layout(self, height: int, width: int) -> TokenLayout:
        """The token positions of a `height` x `width` image."""
        return TokenLayout.for_image(
            height, width, self.patch_size, self.num_registers, self.num_distillation, self.num_cls
        )

    def variant_names(self) -> tuple[str, ...]:
        """Every `{readout}/{variant}` the model's decomposition has (`variant_names`)."""
        averaged = self.readout == "mean"  # the patches' mean: no [CLS] or register part
        return variant_names(
            0 if averaged else self.num_registers, self.projection_dim > 0, self.num_distillation,
            0 if averaged else self.num_cls, self.has_skip, self.artifact_threshold > 0,
        )  # fmt: skip

    def split_names(self) -> tuple[str, ...]:
        """`split/{group}` of every group the readout's attention is split over (`split_names`)."""
        return split_names(self.num_distillation, self.artifact_threshold > 0)

    @property
    def identity(self) -> str:
        """What the weights are, however they were named: HF id, absolute path, or the name; with
        test-time registers, said (a head trained on the model without them does not fit)."""
        weights = self.location or self.name
        added = self.test_time_registers
        return f"{weights} with {added} test-time register{'s' if added > 1 else ''}" if added else weights

    def as_dict(self) -> dict[str, Any]:
        """results.json's `backbone`: the fields in order, `preprocessing` as its flat keys;
        `num_classes` only for a model with a classifier of its own and `mlp_size` only where known
        (`_WHERE_KNOWN`: files stay as they were written before these were recorded); `num_cls` and
        `readout` only for a model pooled otherwise than by its [CLS] row."""
        data: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "preprocessing":
                data |= {key: getattr(self.preprocessing, name) for key, name in _PREPROCESSING_KEYS.items()}
            elif item.name in _WHERE_NOT_DEFAULT:
                if getattr(self, item.name) != _WHERE_NOT_DEFAULT[item.name]:
                    data[item.name] = getattr(self, item.name)
            elif item.name not in _WHERE_KNOWN or getattr(self, item.name):
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


_WHERE_KNOWN = ("num_classes", "mlp_size", "test_time_registers", "artifact_threshold", "readout_heads")
"""Fields written only where they are not 0."""
_WHERE_NOT_DEFAULT = {"num_cls": 1, "readout": "cls"}
"""Fields written only where they differ from the default (every [CLS] model's file stays as it was)."""
_PREPROCESSING_KEYS = {
    "image_mean": "mean",
    "image_std": "std",
    "resize": "resize",
    "interpolation": "interpolation",
    "resize_ratio": "resize_ratio",
}
"""results.json's key -> the `Preprocessing` field it holds, in results.json's order."""
