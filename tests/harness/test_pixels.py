"""Chefer et al.'s pixel-perturbation test (`--perturbation pixels`) against the protocol written out
here from its description (numpy bilinear upsampling, a stable numpy ranking of the pixels, black in
[0, 1] space then normalised, the model's own forward through `ViTForImageClassification`, top-1),
the area on hand numbers, and what each order removes first."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from transformers import ViTConfig, ViTForImageClassification

from common.preparation import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from harness import DecomposingBackbone
from harness.extras import AttributionMaps
from harness.extras.attribution import PIXEL_FRACTIONS, black_pixel, pixel_area, upsampled
from harness.extras.attribution.pixels import pixel_places

TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
CLASSES = 5


def tiny_classifier(
    preprocessing: Preprocessing | None = None,
) -> tuple[ViTForImageClassification, DecomposingBackbone]:
    """A seeded random ViT classifier (32 px, patch 4: an 8 x 8 grid) and its decomposing backbone, its
    images prepared with `preprocessing` (None: the ViT family's, mean = std = 0.5)."""
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=4, num_labels=CLASSES)  # fmt: skip
    model = ViTForImageClassification(config).eval().requires_grad_(False)
    with torch.no_grad():  # a classifier on the directions in which images and their blacked-out
        # copies differ (a random ViT gives every image nearly the same output), so the class moves
        generator = torch.Generator().manual_seed(1)
        images = torch.rand(64, 3, 32, 32, generator=generator)
        images *= torch.rand(64, 1, 32, 32, generator=generator) < torch.rand(
            64, 1, 1, 1, generator=generator
        )
        prepared = preprocessing or Preprocessing((0.5,) * 3, (0.5,) * 3)
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (prepared.mean, prepared.std))
        outputs = model.vit(pixel_values=(images - mean) / std).last_hidden_state[:, 0]
        centred = outputs - outputs.mean(dim=0)
        directions = torch.linalg.svd(centred, full_matrices=False).Vh[:CLASSES]
        spread = (centred @ directions.T).std(dim=0)
        model.classifier.weight.copy_(directions / spread[:, None])
        model.classifier.bias.copy_(-(outputs.mean(dim=0) @ directions.T) / spread)
    backbone = DecomposingBackbone.from_model(model)
    if preprocessing is not None:
        backbone = DecomposingBackbone(backbone.model, replace(backbone.info, preprocessing=preprocessing),
                                       classifier=backbone.classifier)  # fmt: skip
    return model, backbone


def bilinear(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (grid_h, grid_w) map to (height, width) by bilinear interpolation with half-pixel centres (each
    patch's value at its centre, clamped at the borders), written out in float64."""

    def weights(size: int, out: int) -> np.ndarray:
        source = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, size - 1)
        matrix = np.zeros((out, size))
        np.add.at(matrix, (np.arange(out), low), 1 - (source - low))
        np.add.at(matrix, (np.arange(out), high), source - low)
        return matrix

    return weights(grid.shape[0], height) @ grid.astype(np.float64) @ weights(grid.shape[1], width).T


def chefer_protocol(
    model: ViTForImageClassification, images: np.ndarray, maps: np.ndarray, mean: tuple[float, ...],
    std: tuple[float, ...], negative: bool,
) -> np.ndarray:  # fmt: skip
    """The class of each image (images in [0, 1], (n, 3, H, W)) with 10 ... 90 % of its pixels set to
    black in [0, 1] space in the order of its map (n, grid_h, grid_w): upsampled, ranked over the
    pixels (negated for the negative order, ties by position), the chosen pixels zeroed in all three
    channels, then normalised and classified by the model's own forward. (n, steps)."""
    count, _, height, width = images.shape
    normalise = lambda x: (x - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]  # noqa: E731
    classes = np.zeros((count, len(PIXEL_FRACTIONS)), dtype=np.int64)
    for image in range(count):
        relevance = bilinear(maps[image], height, width).reshape(-1)
        order = np.argsort(relevance if negative else -relevance, kind="stable")
        for step, fraction in enumerate(PIXEL_FRACTIONS):
            blacked = images[image].reshape(3, -1).copy()
            blacked[:, order[: int(height * width * fraction)]] = 0.0
            pixels = torch.from_numpy(normalise(blacked.reshape(3, height, width))).float()[None]
            with torch.no_grad():
                classes[image, step] = model(pixel_values=pixels).logits.argmax(dim=1).item()
    return classes


@pytest.mark.parametrize(
    "preprocessing",
    [
        None,
        Preprocessing(
            IMAGENET_MEAN, IMAGENET_STD, resize="square", interpolation="bilinear", resize_ratio=1.0
        ),
    ],
    ids=["mean=std=0.5 (theirs)", "imagenet per channel"],
)
def test_the_pixel_test_is_chefers_protocol_written_out(preprocessing: Preprocessing | None) -> None:
    """Every map's classes along both orders equal the protocol's; the random control is seeded by
    dataset index, whatever else is in the batch."""
    model, backbone = tiny_classifier(preprocessing)
    info = backbone.info.preprocessing
    generator = torch.Generator().manual_seed(3)
    unit = torch.rand(4, 3, 32, 32, generator=generator)  # images in [0, 1]
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    pixels = (unit - mean) / std
    scoring = AttributionMaps(("attention", "contribution"), class_scores=backbone.classifier,
                              perturbations=("pixels",))  # fmt: skip
    found = backbone(pixels, torch.arange(4), extras=[scoring])
    assert not [name for name in found if "/deletion" in name or "/insertion" in name]  # no token passes
    for name in ("attention", "contribution"):  # contribution is signed: negative removes its negatives
        maps = found[f"attribution/{name}"].numpy()
        for order in ("positive", "negative"):
            expected = chefer_protocol(model, unit.numpy(), maps, info.mean, info.std, order == "negative")
            assert found[f"maps/{name}/pixels/{order}/predicted"].tolist() == expected.tolist(), (name, order)
            assert len(np.unique(expected)) > 2  # the class does move as pixels go
    assert found[f"maps/{name}/pixels/positive/predicted"].shape == (4, len(PIXEL_FRACTIONS))
    alone = backbone(pixels[2:3], torch.tensor([2]), extras=[scoring])
    control = "maps/random/pixels/predicted"
    assert torch.equal(alone[control][0], found[control][2])


def test_upsampling_and_black_are_theirs() -> None:
    """The map to pixels as numpy's bilinear with half-pixel centres, F.interpolate's scale factor as
    theirs (x 16 from 14 x 14), and black as normalising 0."""
    grid = torch.rand(2, 14, 14, generator=torch.Generator().manual_seed(0))
    ours = upsampled(grid, 224, 224)
    expected = torch.from_numpy(np.stack([bilinear(g, 224, 224) for g in grid.numpy()])).float()
    assert_close(ours, expected, rtol=0, atol=1e-6)
    theirs = torch.nn.functional.interpolate(grid[:, None], scale_factor=16, mode="bilinear")[:, 0]
    assert torch.equal(ours, theirs)
    assert black_pixel(Preprocessing((0.5,) * 3, (0.5,) * 3)).tolist() == [-1.0, -1.0, -1.0]
    imagenet = black_pixel(Preprocessing(IMAGENET_MEAN, IMAGENET_STD))
    assert_close(imagenet, torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]))


def test_positive_removes_the_most_relevant_pixels_first_and_negative_the_least() -> None:
    """On a map that grows along the rows, the positive order blacks out the bottom rows first and the
    negative order the top rows; the random order is a permutation drawn per dataset index."""
    ranking = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 3)  # rows 0 < 1 < 2 < 3
    places = pixel_places(ranking, torch.tensor([5]), 0, ("positive", "negative", "random")).view(3, 4, 3)
    first_three = places < 3
    assert first_three[0].nonzero()[:, 0].tolist() == [3, 3, 3]  # positive: the last (highest) row
    assert first_three[1].nonzero()[:, 0].tolist() == [0, 0, 0]  # negative: the first (lowest) row
    assert sorted(places[2].flatten().tolist()) == list(range(12))
    again = pixel_places(ranking, torch.tensor([6]), 0, ("random",))
    assert not torch.equal(again.flatten(), places[2].flatten())


def test_the_area_is_the_maintainers_trapezoid() -> None:
    """Issue 31: np.trapz over x = 0, 0.1, ..., 0.9 x 100 with the unperturbed accuracy at 0, on hand
    numbers (a curve of 1 everywhere: 90; one that drops to 0 at the first step: 5)."""
    x = [0.0, *PIXEL_FRACTIONS]
    curves = torch.tensor([[1.0] * 10, [1.0] + [0.0] * 9, [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0]])
    areas = pixel_area(curves, PIXEL_FRACTIONS)
    assert_close(areas[:2], torch.tensor([90.0, 5.0]))
    assert areas[2].item() == pytest.approx(TRAPEZOID(curves[2].numpy(), x) * 100, rel=1e-6)
    assert areas[2].item() == pytest.approx(100 * 0.1 * ((0.8 + 0.0) / 2 + 2.8), rel=1e-6)  # 32


def test_pixels_without_class_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="give class scores"):
        AttributionMaps(("attention",), perturbations=("pixels",))
    with pytest.raises(ValueError, match="perturbations: some of"):
        AttributionMaps(("attention",), perturbations=("voxels",))
