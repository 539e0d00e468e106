"""DINOv2 (with and without registers), as transformers holds it: the reference family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import (
    Dinov2ForImageClassification,
    Dinov2Model,
    Dinov2WithRegistersForImageClassification,
    Dinov2WithRegistersModel,
    PretrainedConfig,
)

from common.preparation import DINOV2_EVALUATION
from harness.choices import RANDOM_PREFIX
from harness.families.base import Family, LoadAs
from harness.tokens import TokenLayout

RELEASED_HEADS = "https://dl.fbaipublicfiles.com/dinov2"
"""Where DINOv2's hub code downloads its released linear heads from (`_DINOV2_BASE_URL`)."""


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
    classifiers: ClassVar[Mapping[str, tuple[type[nn.Module], str, str]]] = {
        "Dinov2ForImageClassification": (Dinov2ForImageClassification, "dinov2", "classifier"),
        "Dinov2WithRegistersForImageClassification": (
            Dinov2WithRegistersForImageClassification, "dinov2_with_registers", "classifier",
        ),
    }  # fmt: skip
    """A classifier checkpoint's architecture -> (its class, the backbone's attribute, its classifier's:
    on DINOv2's one-block linear input, [CLS] and the patch mean)."""

    @classmethod
    def released_head(cls, names: Sequence[str], blocks: int) -> str | None:
        """The linear head DINOv2's hub code (`hub/classifiers.py`) downloads for a released backbone
        named by its short name, hub id, `random:` name or `.pth` (`dinov2_vits14_reg4_pretrain.pth`):
        `{RELEASED_HEADS}/dinov2_vits14/dinov2_vits14_reg4_linear4_head.pth` for 4 blocks,
        `..._linear_head.pth` for 1."""
        hub_ids = {hub_id: short for short, hub_id in cls.short_names.items()}
        for name in names:
            stem = Path(name.removeprefix(RANDOM_PREFIX)).name.removesuffix(".pth").removesuffix("_pretrain")
            short = hub_ids.get(name) or stem.replace("_reg4", "_reg")
            if short in cls.short_names:
                base = short.removesuffix("_reg")
                full = base + ("_reg4" if short.endswith("_reg") else "")
                return f"{RELEASED_HEADS}/{base}/{full}_linear{'4' if blocks == 4 else ''}_head.pth"
        return None

    @classmethod
    def load_as(cls, config: PretrainedConfig) -> LoadAs | None:
        """A classifier checkpoint whole, its classifier kept: it reads the final-normed [CLS] joined
        with the mean of the final-normed patch tokens (registers left out), the one-block input of
        DINOv2's released heads, so `--head model` reads it as one (`LinearHead.of_classifier`)."""
        architecture = (getattr(config, "architectures", None) or [""])[0]
        if architecture in cls.classifiers:
            model_class, inner, classifier = cls.classifiers[architecture]
            return LoadAs(model_class, inner=inner, classifier=classifier)
        return None

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
