"""Chefer et al.'s pixel-perturbation test (CVPR 2021, "Transformer interpretability beyond attention
visualization", Table 1), one way the `AttributionMaps` extra scores a map (`--perturbation pixels`;
docs/design.md#the-decomposition, "Pixel perturbation").

What their repository (hila-chefer/Transformer-Explainability, commit c3e578f) does, read from
`baselines/ViT/generate_visualizations.py` (the maps) and `baselines/ViT/pertubation_eval_from_hdf5.py`
(the test); the numbers are their lines:

- Images: `transforms.Resize((224, 224))` then `ToTensor()`, no crop (generate_visualizations.py
  195-198); pixels in [0, 1] are stored, and normalised with mean = std = 0.5 before every forward
  (`normalize`, 17-23 of both files).
- Map: a 14 x 14 patch map, `interpolate(scale_factor=16, mode='bilinear')` (align_corners False) to
  224 x 224, then min-max scaled over the batch, of one image by default (generate_visualizations.py
  99-100; monotone, so it orders the pixels as the map does). The map explains the class the model
  predicts (`--vis-class top`, the default: `index=None` -> argmax of the logits), or the label
  (`--vis-class target`) (generate_visualizations.py 66-68, 118-121).
- Order: the map is flattened per image over the 224 x 224 pixels, `--neg` negates it, and
  `topk(vis, int(224 * 224 * step))` chooses the pixels (pertubation_eval_from_hdf5.py 83-91): the
  same pixels in all three channels are set to 0 in [0, 1] space, then the batch is normalised (92-97),
  so black is (0 - 0.5) / 0.5 = -1 in the model's input. Steps 0.1, 0.2, ..., 0.9 (34), each from the
  clean image (89: not cumulative). Ties in `topk` are in no stated order.
- Measure: top-1 accuracy of the perturbed image against the dataset label (110-112), and the
  unperturbed accuracy against the label (57-63). The logit and probability differences and the
  log-odds they save beside it (101-118) are not in Table 1.
- Orders: `--neg` is `type=bool, default=True` (142-144), so any value given on the command line
  (`--neg False` too) is True and only `--neg ''` gives False. True removes the least relevant pixels
  first (the map negated): the *negative* perturbation, Table 1's "Negative" columns (higher is
  better: rollout 53.10, raw attention 45.55). False removes the most relevant first: *positive*,
  "Positive" (lower is better: rollout 20.05, raw attention 23.99). The run folder says which
  (`exp_name += '_neg' if args.neg else '_pos'`, 182).
- Area: none in the repository. The maintainer (issue 31) gives `np.trapz(y, x) * 100` over
  x = 0, 0.1, ..., 0.9 with the unperturbed accuracy at x = 0 (issue 27: "use np.trapz").

What this module does: each map (batch, grid_height, grid_width) is upsampled bilinearly (align_corners
False) to the batch's height x width, the `positive` order ranks its pixels highest first, `negative`
lowest first (ties by position, row-major: theirs in `topk`'s unstated order), the random control by a
hash of (seed, dataset index, pixel); int(pixels x f) first pixels of the order are set to the
backbone's black, (0 - mean) / std per channel of `BackboneInfo.preprocessing` (the batch holds
normalised pixels: the same numbers as blacking out in [0, 1] then normalising), and the model runs
again on the perturbed images (`DecomposingBackbone.pooled`, under the call's taps); the class scores
give each perturbed image's class. The orders of one step run in one pass. Accuracy against the labels
and the area are the probe's (`probes.attribution`, `pixel_area`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from common.hashing import derived_seed, uniform_hash
from common.preparation import Preprocessing
from harness.backbone import Call
from harness.extras.scores import ClassScores, class_scores_of

PIXEL_SCORE = "pixels"
"""The score's name in entries and results (`maps/{map}/pixels/...`)."""
PIXEL_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Shares of the pixels blacked out (Chefer et al.'s steps)."""
PIXEL_ORDERS: tuple[str, ...] = ("positive", "negative")
"""Most relevant pixels first (their `--neg ''`), least relevant first (their default `--neg True`)."""
RANDOM_PIXELS = "random"
"""The random control's order (not theirs: the token scores have one, so the pixels have one too)."""
_PIXEL_STREAM = 0x5049584C
"""The random pixel order's stream of the seed (`derived_seed`), apart from the patches' order."""


def upsampled(maps: Tensor, height: int, width: int) -> Tensor:
    """Patch maps (batch, grid_height, grid_width) bilinearly upsampled to (batch, height, width), as
    Chefer et al. upsample theirs (align_corners False: each patch's value at its centre)."""
    return nn.functional.interpolate(
        maps.float().unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False
    ).squeeze(1)


def removed_count(pixels: int, fraction: float) -> int:
    """How many pixels a step blacks out: int(pixels x fraction), rounded down as theirs is."""
    return int(pixels * fraction)


def black_pixel(preprocessing: Preprocessing) -> Tensor:
    """Black, 0 in [0, 1] space, after the backbone's normalisation: (0 - mean) / std per channel (3,)."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float64)
    std = torch.tensor(preprocessing.std, dtype=torch.float64)
    return (-mean / std).float()


def pixel_places(ranking: Tensor, indices: Tensor | None, seed: int, orders: Sequence[str]) -> Tensor:
    """Each pixel's place in each order, orders stacked: (orders x batch, pixels), 0 for the pixel
    blacked out first. `positive` ranks `ranking` (batch, height, width) highest first, `negative`
    lowest first (ties by position), `random` by a hash of (seed, dataset index, pixel)."""
    flat = ranking.flatten(1)
    batch, count = flat.shape
    placed = []
    for order in orders:
        if order == "positive":
            ordered = flat.argsort(dim=1, descending=True, stable=True)
        elif order == "negative":
            ordered = flat.argsort(dim=1, stable=True)
        elif order == RANDOM_PIXELS:
            if indices is None:
                raise ValueError("the random order is seeded by dataset index: pass the images' indices")
            keys = indices.long().unsqueeze(1) * count + torch.arange(count, device=indices.device)
            ordered = uniform_hash(keys, derived_seed(seed, _PIXEL_STREAM)).argsort(dim=1, stable=True)
        else:
            raise ValueError(f"unknown pixel order {order!r}: choose from {[*PIXEL_ORDERS, RANDOM_PIXELS]}")
        places = torch.arange(count, device=flat.device).expand(batch, count)
        placed.append(torch.empty_like(ordered).scatter_(1, ordered, places))
    return torch.cat(placed)


def pixel_perturbed_classes(
    call: Call, maps: Tensor, fractions: Sequence[float], orders: Sequence[str], class_scores: ClassScores,
    seed: int = 0,
) -> dict[str, Tensor]:  # fmt: skip
    """The class of each image with the first int(pixels x f) pixels of each order blacked out, for each
    fraction f, from the model's own pass on the perturbed images (the orders of one fraction in one
    pass, carrying `call.under`).

    Args:
        call: the backbone call (its normalised images, dataset indices, backbone and taps).
        maps: the map of each image over the patches (batch, grid_height, grid_width).
        fractions: shares of the pixels blacked out.
        orders: of `PIXEL_ORDERS` and `RANDOM_PIXELS`.
        class_scores: pooled outputs -> class scores.
        seed: the random order's seed.

    Returns:
        order -> the class each perturbed image is given (batch, fractions).
    """
    images = call.pixel_values
    batch, _, height, width = images.shape
    places = pixel_places(upsampled(maps, height, width), call.indices, seed, orders)
    places = places.view(len(orders) * batch, 1, height, width)
    black = black_pixel(call.backbone.info.preprocessing).to(images).view(1, 3, 1, 1)
    repeated = images.repeat(len(orders), 1, 1, 1)  # orders x batch, 3, height, width
    predicted = []
    for fraction in fractions:
        perturbed = torch.where(places < removed_count(height * width, fraction), black, repeated)
        pooled = call.backbone.pooled(perturbed, call.under)
        predicted.append(class_scores_of(class_scores, pooled).argmax(dim=-1))
    per_order = torch.stack(predicted, dim=1).split(batch)  # orders x (batch, fractions)
    return dict(zip(orders, per_order, strict=True))


def pixel_area(correct: Tensor, fractions: Sequence[float]) -> Tensor:
    """Chefer et al.'s area per image (images,): trapezoids of the top-1 correctness `correct` (images,
    1 + fractions: the unperturbed image's first) over x = 0 and the fractions, times 100 (the
    maintainer's `np.trapz(y, x) * 100`, issue 31; the mean over images is the area of the mean curve).

    >>> pixel_area(torch.tensor([[1.0, 1.0, 0.0]]), (0.1, 0.2))  # 100 x (0.1 + 0.05)
    tensor([15.])
    """
    x = torch.tensor([0.0, *fractions], dtype=torch.float64, device=correct.device)
    return (torch.trapezoid(correct.double(), x, dim=1) * 100).to(correct.dtype)
