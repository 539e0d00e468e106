"""The deletion test of attention maps: token dropping equals HF's own key masking in every layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from common.hashing import uniform_hash
from harness.extras import Deletion
from harness.extras.deletion import DELETION_ORDERS, DELETION_PREFIX
from probes import DeletionProbe
from tests.conftest import ARCHITECTURES, tiny_model, wrap

FRACTIONS = (0.1, 0.25, 0.5)


def sensitive_model(
    registers: int = 0, swiglu: bool = False, layers: int = 3, sharpness: float = 6.0
) -> nn.Module:
    """A tiny model whose [CLS] output depends on the patches: biases and special tokens shrunk (in a
    random tiny model they dominate, and deleting patches moves its output by 1e-3), values scaled
    up, queries and keys scaled by `sharpness` (a peaked [CLS] attention)."""
    model = tiny_model(registers=registers, swiglu=swiglu, layers=layers, patch=8)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "token" in name:
                parameter.mul_(0.02)
        for layer in model.encoder.layer:
            layer.attention.q_proj.weight.mul_(sharpness)
            layer.attention.k_proj.weight.mul_(sharpness)
            layer.attention.v_proj.weight.mul_(20)
    return model


def masked_pooled(model: nn.Module, pixels: Tensor, deleted: Tensor, first_patch: int) -> Tensor:
    """The model's own pooled output with the keys of the `deleted` patches (batch, k) masked in every
    layer, through HF's attention_mask (1 = attend, 0 = masked)."""
    with torch.no_grad():
        length = model.embeddings(pixels).shape[1]
    mask = torch.ones(pixels.shape[0], length, dtype=torch.long)
    mask.scatter_(1, deleted + first_patch, 0)
    with torch.no_grad():
        return model(pixel_values=pixels, attention_mask=mask).pooler_output


@pytest.mark.parametrize(("registers", "swiglu"), ARCHITECTURES)
def test_deleted_patches_equal_masked_keys_in_every_layer(
    registers: int, swiglu: bool, pixels: Tensor
) -> None:
    model = sensitive_model(registers, swiglu)
    backbone = wrap(model)
    plain = backbone(pixels)
    indices = torch.tensor([7, 3, 11])
    decomposition = backbone(pixels, indices, extras=[Deletion(FRACTIONS, seed=4)])
    for name in plain:  # the decomposition itself is unchanged
        assert torch.equal(plain[name], decomposition[name]), name
    with torch.no_grad():
        full = model(pixel_values=pixels).pooler_output
    scores = decomposition["map/attention"].flatten(1)
    count, first = scores.shape[1], 1 + registers
    keys = indices.unsqueeze(1) * count + torch.arange(count)
    rankings = {  # independent of the harness's code: numpy orderings of the same scores
        "top": torch.from_numpy(np.argsort(-scores.numpy(), axis=1, kind="stable")),
        "random": torch.from_numpy(np.argsort(uniform_hash(keys, 4).numpy(), axis=1, kind="stable")),
        "bottom": torch.from_numpy(np.argsort(scores.numpy(), axis=1, kind="stable")),
    }
    for order in DELETION_ORDERS:
        got = decomposition[DELETION_PREFIX + order]
        assert got.shape == (3, len(FRACTIONS))
        for column, fraction in enumerate(FRACTIONS):
            deleted = rankings[order][:, : round(fraction * count)]
            expected = nn.functional.cosine_similarity(
                masked_pooled(model, pixels, deleted, first), full, dim=-1
            )
            assert_close(got[:, column], expected, atol=1e-5, rtol=0, msg=f"{order} {fraction}")
    assert float(decomposition[DELETION_PREFIX + "top"][:, -1].max()) < 0.99  # deletions do move it


def test_a_peaked_single_block_map_is_faithful_by_construction() -> None:
    """One block whose [CLS] attention is (nearly) one-hot per head: the output depends only on the
    few patches the map ranks highest, so deleting the lowest-ranked half leaves it as it was, while
    deleting the highest-ranked tenth moves it most; the areas between the curves are positive."""
    backbone = wrap(sensitive_model(layers=1, sharpness=30.0))
    pixels = torch.randn(8, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    decomposition = backbone(pixels, torch.arange(8), extras=[Deletion(FRACTIONS)])
    bottom, top = (decomposition[DELETION_PREFIX + order] for order in ("bottom", "top"))
    assert float(bottom.min()) > 0.999
    assert float(top[:, 0].mean()) < float(bottom[:, 0].mean()) - 0.2
    probe = DeletionProbe(FRACTIONS)
    probe.update(decomposition, torch.zeros(8), torch.arange(8))
    results = probe.compute()
    assert results[DeletionProbe.area_name("bottom")] > results[DeletionProbe.area_name("random")] > 0


def test_random_deletions_follow_the_dataset_index(pixels: Tensor) -> None:
    backbone = wrap(sensitive_model(registers=4))
    random = DELETION_PREFIX + "random"
    first = backbone(pixels, torch.tensor([5, 6, 7]), extras=[Deletion(FRACTIONS)])[random]
    swapped = backbone(pixels.flip(0), torch.tensor([7, 6, 5]), extras=[Deletion(FRACTIONS)])[random]
    # compared as 1 - cosine: the cosines of a tiny random model lie close to 1
    assert_close(swapped.flip(0), first, rtol=0, atol=1e-6)  # same image and index: same patches
    other = backbone(pixels, torch.tensor([50, 60, 70]), extras=[Deletion(FRACTIONS)])[random]
    assert (other - first).abs().max() > 1e-3  # other indices: other patches
    with pytest.raises(ValueError, match=r"fractions must lie in \(0, 1\)"):
        backbone(pixels, torch.arange(len(pixels)), extras=[Deletion((0.0, 0.5))])


def test_probe_means_and_areas_match_numpy() -> None:
    generator = np.random.default_rng(0)
    values = {order: generator.uniform(-1, 1, (20, 3)) for order in DELETION_ORDERS}
    probe = DeletionProbe(FRACTIONS)
    for start in range(0, 20, 6):
        probe.update({DELETION_PREFIX + o: torch.from_numpy(v[start : start + 6]) for o, v in values.items()},
                     torch.zeros(0), torch.zeros(0))  # fmt: skip
    results = probe.compute()
    x = np.array([0.0, *FRACTIONS])
    for order, array in values.items():
        for column, fraction in enumerate(FRACTIONS):
            assert results[DeletionProbe.result_name(order, fraction)] == pytest.approx(
                array[:, column].mean()
            )
            assert results[DeletionProbe.std_name(order, fraction)] == pytest.approx(array[:, column].std())
    for control in ("random", "bottom"):
        gap = np.concatenate([[0.0], values[control].mean(0) - values["top"].mean(0)])
        assert results[DeletionProbe.area_name(control)] == pytest.approx(np.trapezoid(gap, x))
    assert DeletionProbe.result_name("top", 0.25) == "deletion/top/25"
