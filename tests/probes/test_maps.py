"""Maps probe (Fig 4): per-image cosines against numpy, the gallery against a full sort, 1 vs 2 ranks."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, to_uint8_image
from harness import PIXELS
from probes import MapsProbe
from probes.metrics import Faithfulness
from tests.conftest import ARCHITECTURES, tiny_model, wrap
from tests.probes.tester import check_metric


def numpy_cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    x, y = a.double().numpy(), b.double().numpy()
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_maps_probe_cosines_and_maps_equal_numpy(registers: int, swiglu: bool) -> None:
    model = tiny_model(registers, swiglu)
    pixels = torch.randn(9, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    decomposition = wrap(model)(pixels)
    probe = MapsProbe(gallery_size=2)
    for start in range(0, 9, 4):  # three batches, shuffled dataset indices
        rows = slice(start, start + 4)
        batch = {name: decomposition[name][rows] for name in decomposition}
        batch[PIXELS] = pixels[rows]
        probe.update(batch, torch.zeros(4), torch.tensor([8, 0, 5, 2, 7, 1, 3, 6, 4])[rows])
    order = np.argsort([8, 0, 5, 2, 7, 1, 3, 6, 4])  # position of dataset index 0, 1, ...
    results, arrays = probe.compute(), probe.arrays()
    for readout in ("attention", "output"):
        cosine = numpy_cosine(decomposition[f"{readout}/full"], decomposition[f"{readout}/patch"])[order]
        np.testing.assert_allclose(arrays[f"maps/{readout}/patch"].numpy(), cosine, atol=1e-12)
        expected = {
            "mean": cosine.mean(), "std": cosine.std(), "median": np.median(cosine), "min": cosine.min(),
            "max": cosine.max(), "negative_share": np.mean(cosine < 0),
        }  # fmt: skip
        for stat, value in expected.items():
            assert results[f"maps/{readout}/patch/{stat}"] == pytest.approx(value, abs=1e-12), stat
    assert arrays["maps/index"].tolist() == list(range(9))

    cosine = arrays["maps/attention/patch"].numpy()
    ranked = np.argsort(cosine, kind="stable")
    assert arrays["maps/gallery/index"].tolist() == [*ranked[:2], *ranked[::-1][:2]]
    assert int(arrays["maps/gallery/least"]) == 2
    np.testing.assert_allclose(arrays["maps/gallery/cosine"].numpy(), cosine[arrays["maps/gallery/index"]])
    # the maps and images are those of the chosen images: the map is [CLS] attention over patches
    eager = tiny_model(registers, swiglu, attn_implementation="eager")
    attentions = eager(pixel_values=pixels, output_attentions=True).attentions[-1].detach()
    patch_attention = attentions[:, :, 0, 1 + registers :].mean(1).reshape(9, 8, 8)
    positions = order[arrays["maps/gallery/index"].numpy()]
    torch.testing.assert_close(arrays["maps/gallery/map"], patch_attention[positions], atol=1e-6, rtol=0)
    assert torch.equal(arrays["maps/gallery/image"], to_uint8_image(pixels[positions]))


def test_uint8_images_invert_the_normalisation() -> None:
    rgb = torch.randint(0, 256, (2, 3, 5, 4), generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    normalised = (rgb / 255.0 - mean) / std
    assert torch.equal(to_uint8_image(normalised), rgb.to(torch.uint8))


def _synthetic_batches(sizes: list[int], seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    indices = torch.randperm(total, generator=generator)
    batches, start = [], 0
    for size in sizes:
        full, part = torch.randn(2, size, 6, generator=generator)
        other_full, other_part = torch.randn(2, size, 6, generator=generator)
        maps = torch.rand(size, 3, 4, generator=generator)
        images = torch.randint(0, 256, (size, 3, 12, 16), generator=generator).to(torch.uint8)
        batches.append((full, part, other_full, other_part, maps, images, indices[start : start + size]))
        start += size
    return batches


def _reference(batches: list[tuple[torch.Tensor, ...]], k: int) -> dict[str, torch.Tensor]:
    """Everything kept, then one full sort: what the bounded per-rank candidates must reproduce."""
    full, part, other_full, other_part, maps, images, index = (
        torch.cat(c) for c in zip(*batches, strict=True)
    )
    cosine = torch.from_numpy(numpy_cosine(full, part))
    other = torch.from_numpy(numpy_cosine(other_full, other_part))
    by_index = torch.argsort(index)
    rows = {"index": index[by_index], "cosine": cosine[by_index], "other_cosine": other[by_index]}
    ranked = torch.from_numpy(np.lexsort((index.numpy(), cosine.numpy())))  # cosine, then index
    chosen = torch.cat([ranked[:k], ranked.flip(0)[:k]])
    gallery = {"index": index[chosen], "cosine": cosine[chosen], "map": maps[chosen], "image": images[chosen]}
    return rows | {f"gallery/{name}": value for name, value in gallery.items()} | {"gallery/least": k}


def test_faithfulness_everywhere_equals_a_full_sort() -> None:
    batches = _synthetic_batches([5, 3, 7, 1, 6])
    check_metric(functools.partial(Faithfulness, 3), batches, _reference(batches, 3), atol=1e-12)


def test_ties_are_broken_by_dataset_index_on_every_split() -> None:
    batches = _synthetic_batches([4, 4, 4])
    for full, part, *_ in batches:  # every cosine exactly 1: the gallery is decided by index alone
        full.zero_()[:, 0] = 2.0
        part.copy_(full)
    reference = _reference(batches, 2)
    assert reference["gallery/index"].tolist() == [0, 1, 11, 10]
    check_metric(functools.partial(Faithfulness, 2), batches, reference, atol=1e-12)


def test_fewer_images_than_the_gallery() -> None:
    metric = Faithfulness(gallery_size=4)
    metric.update(*_synthetic_batches([3])[0])
    computed = metric.compute()
    assert computed["gallery/least"] == 1 and sorted(computed["gallery/index"].tolist()) == [0, 1, 2]


def test_bad_inputs_are_refused() -> None:
    full, part, other_full, other_part, maps, images, index = _synthetic_batches([2])[0]
    with pytest.raises(ValueError, match="one image, map and index per vector"):
        Faithfulness().update(full, part, other_full, other_part, maps, images[:1], index)
    with pytest.raises(ValueError, match="saw no image"):
        Faithfulness().compute()
