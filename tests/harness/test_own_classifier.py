"""A classifier checkpoint (an ImageNet ViT, a distilled DeiT, timm's DeiT III with its head) loads,
and its classifier on the [CLS] output is kept as the backbone's own (`DecomposingBackbone.classifier`,
`--head model`): its logits on `output/full` are the model's own; a DINOv2 classifier, which reads the
patch mean beside [CLS], loads as its backbone without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import Tensor, nn
from torch.testing import assert_close
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2Config,
    Dinov2ForImageClassification,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
    Dinov2WithRegistersModel,
    ViTConfig,
    ViTForImageClassification,
)

from harness import DecomposingBackbone, LinearHead, load_backbone
from tests.harness.test_loading import tiny_timm_folder

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
CLASSES = 5


def pixels(size: int = 32) -> Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def own_logits(model: nn.Module, images: Tensor) -> Tensor:
    """What the classifier checkpoint itself gives: the [CLS] head's logits (DeiT with a teacher
    averages them with the distillation head's; `cls_logits` is the [CLS] head alone)."""
    with torch.no_grad():
        output = model(pixel_values=images)
    return output.cls_logits if hasattr(output, "cls_logits") else output.logits


def with_moved_biases(model: nn.Module) -> nn.Module:
    """The classifier's bias and the tokens moved off their zero init, so a head left at random or a
    missing bias would show."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "classifier" in name or "token" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator))
    return model.eval()


HF_CLASSIFIERS = {
    "vit": lambda: ViTForImageClassification(
        ViTConfig(**SMALL, image_size=32, patch_size=8, num_labels=CLASSES)
    ),
    "deit_with_teacher": lambda: DeiTForImageClassificationWithTeacher(
        DeiTConfig(**SMALL, image_size=32, patch_size=8, num_labels=CLASSES)
    ),
    "deit": lambda: DeiTForImageClassification(
        DeiTConfig(**SMALL, image_size=32, patch_size=8, num_labels=CLASSES)
    ),
}


@pytest.mark.parametrize("kind", HF_CLASSIFIERS, ids=list(HF_CLASSIFIERS))
def test_an_hf_classifier_checkpoint_keeps_its_classifier(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = with_moved_biases(HF_CLASSIFIERS[kind]())
    model.save_pretrained(tmp_path / kind)
    backbone = load_backbone(tmp_path / kind)
    assert backbone.info.num_classes == CLASSES and backbone.info.random_weights is False
    assert backbone.classifier is not None and not backbone.classifier.weight.requires_grad
    images = pixels()
    expected = own_logits(model, images)
    with torch.no_grad():
        logits = backbone.classifier(backbone(images)["output/full"])
    assert_close(logits, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_a_timm_models_head_is_its_own_classifier(tmp_path: Path) -> None:
    model = tiny_timm_folder(tmp_path / "deit3")
    backbone = load_backbone(tmp_path / "deit3")
    assert backbone.info.num_classes == model.num_classes == 1000
    images = pixels()
    with torch.no_grad():
        expected = model(images)
        logits = backbone.classifier(backbone(images)["output/full"])
    assert_close(logits, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    shape = {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 32}
    headless = timm.create_model("deit3_small_patch16_224", pretrained=False, num_classes=0, **shape)
    from_memory = DecomposingBackbone.from_model(headless)
    assert from_memory.classifier is None and from_memory.info.num_classes == 0


@pytest.mark.parametrize("registers", [0, 4])
def test_a_dinov2_classifier_keeps_its_head_on_the_joined_input(registers: int, tmp_path: Path) -> None:
    """Dinov2ForImageClassification's classifier reads [CLS] and the patch mean (registers left out):
    kept, and read as a released DINOv2 head (`--head model`), its scores on `output/full` are the
    checkpoint's own logits; the backbone is the same as a plain Dinov2Model's."""
    torch.manual_seed(0)
    common = {**SMALL, "image_size": 28, "patch_size": 14, "num_labels": CLASSES}
    if registers:
        config = Dinov2WithRegistersConfig(**common, num_register_tokens=registers)
        model = with_moved_biases(Dinov2WithRegistersForImageClassification(config))
        reference = Dinov2WithRegistersModel(config).eval()
        reference.load_state_dict(model.dinov2_with_registers.state_dict())
    else:
        config = Dinov2Config(**common)
        model = with_moved_biases(Dinov2ForImageClassification(config))
        reference = Dinov2Model(config).eval()
        reference.load_state_dict(model.dinov2.state_dict())
    model.save_pretrained(tmp_path / "dinov2")
    backbone = load_backbone(tmp_path / "dinov2")
    assert backbone.classifier is not None and backbone.info.num_classes == CLASSES
    images = pixels(28)
    with torch.no_grad():
        expected = reference(pixel_values=images).pooler_output
        decomposition = backbone(images)
        logits = model.eval()(pixel_values=images).logits
    assert_close(decomposition["output/full"], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    head = LinearHead.of_classifier(backbone.classifier, "dinov2", 28, "hf", backbone.info.hidden_size)
    assert head.released and head.blocks(backbone.info.hidden_size) == 1
    scores = head.class_scores(backbone.info.hidden_size).bind(decomposition)(decomposition["output/full"])
    assert_close(scores, logits, rtol=1e-4, atol=1e-5 * logits.abs().max().item())
    assert DecomposingBackbone.from_model(model).classifier is model.classifier  # in memory too
