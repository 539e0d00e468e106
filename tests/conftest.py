"""Tiny random-weight DINOv2 models and small images; nothing here downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from harness import BackboneInfo, DecomposingBackbone
from harness.families import family_for

ARCHITECTURES = [
    pytest.param(0, False, id="mlp"),
    pytest.param(4, False, id="mlp-registers"),
    pytest.param(0, True, id="swiglu"),
    pytest.param(4, True, id="swiglu-registers"),
]
"""(registers, swiglu) of every architecture family DINOv2 has."""


def scaled(expected: torch.Tensor) -> dict[str, float]:
    """`assert_close` tolerances scaled to the quantity: 1e-5 relative, and 1e-5 of its largest entry
    absolute (float32 rounding of sums computed by different kernels)."""
    return {"rtol": 1e-5, "atol": 1e-5 * expected.abs().max().item()}


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The single `error:` line of a failed command (and no traceback)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def tiny_model(
    registers: int = 0,
    swiglu: bool = False,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    patch: int = 4,
    image: int = 32,
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> nn.Module:
    """A seeded random HF DINOv2 whose layer scales and biases are not trivial (1.0 / 0.0)."""
    common = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=patch,
        image_size=image,
        use_swiglu_ffn=swiglu,
        layerscale_value=1.0,
        attn_implementation=attn_implementation,
    )
    config = (
        Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
        if registers
        else Dinov2Config(**common)
    )
    torch.manual_seed(seed)
    model = (Dinov2WithRegistersModel if registers else Dinov2Model)(config).eval()
    with torch.no_grad():  # random init leaves biases at 0 and layer scales at 1: perturb them
        for name, parameter in model.named_parameters():
            if name.endswith(("bias", "lambda1")) or "token" in name:
                parameter.add_(0.5 * torch.randn_like(parameter))
    return model


def wrap(model: nn.Module, name: str = "tiny-test") -> DecomposingBackbone:
    """A `DecomposingBackbone` around an HF model built in a test, frozen and in eval mode as
    `load_backbone` gives its models."""
    config = model.config
    info = BackboneInfo(
        name=name,
        source="random",
        location="",
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        num_registers=getattr(config, "num_register_tokens", 0),
        patch_size=config.patch_size,
        swiglu=config.use_swiglu_ffn,
        random_weights=True,
        mlp_size=family_for(model).mlp_size(),
    )
    return DecomposingBackbone(model.eval().requires_grad_(False), info)


@pytest.fixture
def pixels() -> torch.Tensor:
    """A batch of 3 non-square images (32 x 40 px, 8 x 10 patches of 4 px)."""
    return torch.randn(3, 3, 32, 40, generator=torch.Generator().manual_seed(1))


def write_photos(folder: Path, count: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[Path]:
    """`count` real JPEG/PNG files cut from scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - 200), rng.integers(0, photo.shape[1] - 200)
        crop = Image.fromarray(photo[top : top + 200, left : left + 200]).resize(size)
        path = folder / f"photo_{i:03d}.{'jpg' if i % 2 else 'png'}"
        crop.save(path)
        paths.append(path)
    return paths


def write_labelled_photos(folder: Path, per_class: int = 8) -> tuple[str, ...]:
    """Three classes, one sub-folder each, cut from three different photographs."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    sources = {"china": load_sample_images().images[0], "flower": load_sample_images().images[1]}
    sources["astronaut"] = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    for name, photo in sources.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            top, left = rng.integers(0, photo.shape[0] - 160), rng.integers(0, photo.shape[1] - 160)
            Image.fromarray(photo[top : top + 160, left : left + 160]).resize((64, 64)).save(
                folder / name / f"{i}.jpg"
            )
    return tuple(sorted(sources))


@pytest.fixture(scope="module")
def classifier_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random ViT classifier of 3 classes saved as a user would have it (`vit`) and labelled photos
    of those 3 classes (`val`), for the attribution probe's runs with `--head model`."""
    from tests.test_train_probe import own_classifier_model

    root = tmp_path_factory.mktemp("classifier")
    own_classifier_model(root / "vit", classes=3)
    write_labelled_photos(root / "val", per_class=2)
    return {"root": root, "vit": root / "vit", "val": root / "val"}
