"""Register neurons and test-time registers (Jiang et al. 2025) on a model built so that two known
neurons of block 2 make one patch a high-norm token: the search finds those neurons first and that
patch as each image's outlier; the test-time register takes the high norm from the patch into the
extra token, and `output/full` is what a hand computation of the edited block gives. Against the
authors' placement (the zeros appended at the end, a forward hook on the MLP's activation module
editing each image) for every family whose blocks see no positions; a batch equals its images one
by one; the user's model is left as it was."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone
from harness.extras import NeuronScores, RegisterNeurons, neurons_by_block, ranked_neurons
from harness.families.base import TEST_TIME_REGISTERS
from harness.test_time_registers import signed_max, with_test_time_registers
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_clip, tiny_deit, tiny_dinov3, tiny_timm, tiny_vit
from tests.harness.test_interventions import scaled

PLANTED_BLOCK, PLANTED = 2, (7, 40)
Activation = Callable[[nn.Module], nn.Module]
"""A block -> its MLP's activation module."""
THRESHOLD = 100.0


def planted_model() -> nn.Module:
    """A 4-block DINOv2 whose patch embedding writes a patch's brightness into hidden dimension 0,
    and whose block 2 has neurons 7 and 40 fire on that dimension and write 40 x their activation
    into dimension 1: a bright patch becomes a token of norm about 1100 (the others stay below 10)."""
    model = tiny_model(layers=4, hidden=32, seed=1)
    with torch.no_grad():
        conv = model.embeddings.patch_embeddings.projection
        conv.weight[0] = 20.0 / conv.weight[0].numel()
        conv.bias[0] = 0.0
        layer = model.encoder.layer[PLANTED_BLOCK - 1]
        layer.norm2.weight[0], layer.norm2.bias[0] = 1.0, 0.0
        layer.layer_scale2.lambda1.fill_(1.0)
        for neuron in PLANTED:
            layer.mlp.fc1.weight[neuron] = 0.0
            layer.mlp.fc1.weight[neuron, 0] = 4.0
            layer.mlp.fc1.bias[neuron] = -8.0
            layer.mlp.fc2.weight[:, neuron] = 0.0
            layer.mlp.fc2.weight[1, neuron] = 40.0
    return model


def bright_patch_images(count: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Dim noise with one bright 4 x 4 patch per image: (images, 3, 32, 32) and each bright patch's
    sequence position ([CLS] at 0)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = 0.3 * torch.randn(count, 3, 32, 32, generator=generator)
    rows, columns = (torch.randint(0, 8, (count,), generator=generator) for _ in range(2))
    for image in range(count):
        pixels[
            image, :, 4 * rows[image] : 4 * rows[image] + 4, 4 * columns[image] : 4 * columns[image] + 4
        ] = 4.0
    return pixels, 1 + rows * 8 + columns


def block_outputs(model: nn.Module, blocks: list[nn.Module], pixels: Tensor) -> list[Tensor]:
    """Every block's output in the model's own forward."""
    seen: list[Tensor] = []
    handles = [
        block.register_forward_hook(lambda m, i, out: seen.append(out[0] if isinstance(out, tuple) else out))
        for block in blocks
    ]
    try:
        model(pixel_values=pixels)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@torch.no_grad()
def test_the_planted_neurons_are_found_first_and_the_bright_patches_are_the_outliers() -> None:
    backbone = DecomposingBackbone.from_model(planted_model())
    pixels, bright = bright_patch_images(6)
    search = RegisterNeurons(THRESHOLD, detection_block=3, max_block=3)
    found = backbone(pixels, extras=[search])
    outliers = found["register_neurons/outliers"]
    expected = torch.zeros_like(outliers)
    expected[torch.arange(6), bright] = 1.0
    assert torch.equal(outliers, expected)
    scores = NeuronScores(3, backbone.info.mlp_size)
    scores.update(found["register_neurons/scores"][:4], outliers[:4])  # two batches
    scores.update(found["register_neurons/scores"][4:], outliers[4:])
    computed = scores.compute()
    assert (int(computed["with_outliers"]), int(computed["outliers"])) == (6, 6)
    ranked = ranked_neurons(computed["scores"], top_k=2)
    assert neurons_by_block(ranked) == {PLANTED_BLOCK: PLANTED}
    # each planted neuron's score is its mean absolute activation at the bright patch, read here
    seen: list[Tensor] = []
    handle = backbone.view(PLANTED_BLOCK).mlp.activation_fn.register_forward_hook(
        lambda m, i, o: seen.append(o)
    )
    backbone.family.pooled(pixels)
    handle.remove()
    at_bright = seen[0][torch.arange(6), bright][:, list(PLANTED)].abs().double().mean(dim=0)
    assert_close(
        torch.tensor([r.score for r in ranked], dtype=torch.float64), at_bright.sort(descending=True)[0]
    )
    # a threshold above every norm finds no outliers: nothing is scored
    none = backbone(pixels, extras=[RegisterNeurons(1e6, 3, 3)])
    assert not none["register_neurons/outliers"].any() and not none["register_neurons/scores"].any()


@torch.no_grad()
def test_a_test_time_register_takes_the_high_norm_from_the_patch() -> None:
    """Block 2's output: the bright patch back below the threshold, the extra token (position 1)
    above it; `output/full` is the model run by hand with block 2's MLP edited as the rule says."""
    model = planted_model()
    pixels, bright = bright_patch_images(3)
    moved = with_test_time_registers(model, {PLANTED_BLOCK: PLANTED})
    backbone = DecomposingBackbone.from_model(moved)
    assert (backbone.info.num_registers, backbone.info.test_time_registers) == (1, 1)
    before = block_outputs(model, list(model.encoder.layer), pixels)[PLANTED_BLOCK - 1].norm(dim=-1)
    after = block_outputs(moved, list(moved.encoder.layer), pixels)[PLANTED_BLOCK - 1].norm(dim=-1)
    images = torch.arange(3)
    assert (before[images, bright] > 10 * THRESHOLD).all()
    assert (after[images, bright + 1] < THRESHOLD).all() and (after[:, 1] > 10 * THRESHOLD).all()
    decomposition = backbone(pixels)
    assert decomposition["split/register"].min() > 0

    tokens = model.embeddings(pixels)  # by hand: the zero token after [CLS], blocks 1 and 3-4 as they are
    tokens = torch.cat([tokens[:, :1], torch.zeros_like(tokens[:, :1]), tokens[:, 1:]], dim=1)
    for number, layer in enumerate(model.encoder.layer, start=1):
        if number != PLANTED_BLOCK:
            tokens = layer(tokens)
            tokens = tokens[0] if isinstance(tokens, tuple) else tokens
            continue
        attended = tokens + layer.layer_scale1(layer.attention(layer.norm1(tokens))[0])
        activations = layer.mlp.activation_fn(layer.mlp.fc1(layer.norm2(attended)))
        chosen = activations[..., list(PLANTED)]
        largest, smallest = chosen.amax(dim=(1, 2)), chosen.amin(dim=(1, 2))
        value = torch.where(largest.abs() >= smallest.abs(), largest, smallest)
        edited = torch.zeros_like(chosen)
        edited[:, 0] = chosen[:, 0]
        edited[:, 1] = value[:, None]
        activations[..., list(PLANTED)] = edited
        tokens = attended + layer.layer_scale2(layer.mlp.fc2(activations))
    expected = model.layernorm(tokens)[:, 0]
    assert_close(decomposition["output/full"], expected, **scaled(expected))
    clean = DecomposingBackbone.from_model(model)(pixels)["output/full"]
    assert (decomposition["output/full"] - clean).abs().max() > 1e-4 * clean.abs().max()


def authors_placement(
    model: nn.Module, activation: Activation, embeddings: str, before_norm: bool,
    neurons: dict[int, tuple[int, ...]], count: int,
) -> nn.Module:  # fmt: skip
    """The authors' way, written here from their description: `count` zeros appended at the end of
    the sequence (entering the pre-norm where the model has one), and a forward hook on each block's
    MLP activation module writing the signed maximum into the last `count` tokens and zero into
    every token but [CLS] before them, image by image."""
    made = copy.deepcopy(model)
    holder = made.get_submodule(embeddings)

    def appended(tokens: Tensor) -> Tensor:
        return torch.cat([tokens, tokens.new_zeros(tokens.shape[0], count, tokens.shape[2])], dim=1)

    if before_norm:
        holder.register_forward_pre_hook(lambda m, inputs: (appended(inputs[0]), *inputs[1:]))
    else:
        holder.register_forward_hook(lambda m, i, output: appended(output))
    blocks = _blocks(made)
    for block, chosen in neurons.items():

        def edit(module: nn.Module, inputs: Any, output: Tensor, chosen: tuple[int, ...] = chosen) -> Tensor:
            output = output.clone()
            for image in range(output.shape[0]):
                values = output[image, :, list(chosen)]
                largest, smallest = values.max(), values.min()
                value = largest if largest.abs() >= smallest.abs() else smallest
                output[image, 1:-count, list(chosen)] = 0.0
                output[image, -count:, list(chosen)] = value
            return output

        activation(blocks[block - 1]).register_forward_hook(edit)
    return made


def _blocks(model: nn.Module) -> list[nn.Module]:
    for path in ("encoder.layer", "encoder.layers", "blocks", "layers", "transformer.resblocks"):
        try:
            return list(model.get_submodule(path))
        except AttributeError:
            continue
    raise AssertionError(f"no blocks in {type(model).__name__}")


FAMILIES: dict[str, tuple[Callable[[], nn.Module], Activation, str, bool]] = {
    "dinov2": (lambda: tiny_model(layers=3), lambda b: b.mlp.activation_fn, "embeddings", False),
    "dinov2-reg": (
        lambda: tiny_model(registers=2, layers=3),
        lambda b: b.mlp.activation_fn,
        "embeddings",
        False,
    ),
    "vit": (tiny_vit, lambda b: b.mlp.activation_fn, "embeddings", False),
    "deit": (tiny_deit, lambda b: b.mlp.activation_fn, "embeddings", False),
    "clip": (tiny_clip, lambda b: b.mlp.activation_fn, "pre_layrnorm", True),
    "timm": (lambda: tiny_timm(init_values=0.5), lambda b: b.mlp.act, "norm_pre", True),
}
"""Family -> (a tiny model, its blocks' MLP activation module, the module the zeros enter, whether
they enter its input)."""


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_the_same_outputs_as_the_authors_placement_at_the_end(family: str) -> None:
    make, activation, embeddings, before_norm = FAMILIES[family]
    model = make()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    neurons = {1: (2, 9), 2: (5,)}
    ours = DecomposingBackbone.from_model(with_test_time_registers(model, neurons, count=2))
    reference = authors_placement(model, activation, embeddings, before_norm, neurons, count=2)
    expected = DecomposingBackbone.from_model(reference).family.pooled(pixels)
    got = ours(pixels)
    assert_close(got["output/full"], expected, **scaled(expected))
    assert got.pooler_error < 1e-4 * float(expected.abs().max())
    clean = DecomposingBackbone.from_model(model).family.pooled(pixels)
    assert (expected - clean).abs().max() > 1e-4 * clean.abs().max()  # the registers act


@torch.no_grad()
def test_a_batch_equals_its_images_one_by_one_and_the_users_model_is_unchanged() -> None:
    model = tiny_model(registers=2, layers=3)
    pixels = torch.randn(4, 3, 32, 40, generator=torch.Generator().manual_seed(5))
    clean = model(pixel_values=pixels).pooler_output
    backbone = DecomposingBackbone.from_model(with_test_time_registers(model, {2: (3, 4, 100)}))
    batch = backbone(pixels)
    for image in range(4):
        alone = backbone(pixels[image : image + 1])
        for name in ("output/full", "split/register", "attention/register"):
            assert_close(batch[name][image : image + 1], alone[name], **scaled(alone[name]))
    compiled = DecomposingBackbone.from_model(backbone.model, compile_backend="eager")(pixels)["output/full"]
    assert_close(compiled, batch["output/full"], **scaled(compiled))  # the hooks fire in compiled blocks too
    assert_close(model(pixel_values=pixels).pooler_output, clean)
    assert getattr(model, TEST_TIME_REGISTERS, None) is None
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_signed_max_and_refusals() -> None:
    assert signed_max(torch.tensor([[[-2.0, 2.0]]])).tolist() == [2.0]  # a tie: the maximum
    model = tiny_model(layers=2)
    with pytest.raises(ValueError, match=r"the model has blocks 1\.\.2"):
        with_test_time_registers(model, {3: (1,)})
    with pytest.raises(ValueError, match=r"its MLP has neurons 0\.\.127"):
        with_test_time_registers(model, {1: (128,)})
    with pytest.raises(ValueError, match="none given"):
        with_test_time_registers(model, {1: ()})
    with pytest.raises(ValueError, match="give 1 or more"):
        with_test_time_registers(model, {1: (1,)}, count=0)
    with pytest.raises(ValueError, match="already has test-time registers"):
        with_test_time_registers(with_test_time_registers(model, {1: (1,)}), {1: (1,)})
    backbone = DecomposingBackbone.from_model(model)
    with pytest.raises(ValueError, match="publish no norm threshold"):
        RegisterNeurons.for_model(backbone.info)
    assert RegisterNeurons.for_model(backbone.info, threshold=5) == RegisterNeurons(5.0, 1, 2)
    with pytest.raises(ValueError, match=r"the detection block is 3; the model has blocks 1\.\.2"):
        RegisterNeurons(5.0, 3, 1).check(backbone)


@pytest.mark.parametrize("family", ["dinov2", "dinov3", "vit", "deit", "clip", "timm"])
@torch.no_grad()
def test_every_family_decomposes_its_test_time_registers_exactly(family: str) -> None:
    """The extra tokens are registers of the layout (DINOv3's RoPE included): `output/full` is the
    model's own output, the decomposition rebuilds it, and the [CLS] attends to them."""
    make = {
        "dinov2": lambda: tiny_model(layers=3),
        "dinov3": lambda: tiny_dinov3(num_register_tokens=2),
        "vit": tiny_vit,
        "deit": tiny_deit,
        "clip": tiny_clip,
        "timm": lambda: tiny_timm(init_values=0.5),
    }
    model = make[family]()
    trained = DecomposingBackbone.from_model(model).info.num_registers
    backbone = DecomposingBackbone.from_model(with_test_time_registers(model, {1: (0, 3), 2: (8,)}, count=2))
    assert (backbone.info.num_registers, backbone.info.test_time_registers) == (trained + 2, 2)
    pixels = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(9))
    got = backbone(pixels)
    own = backbone.family.pooled(pixels).float()
    assert_close(got["output/full"], own, **scaled(own))
    assert got.pooler_error < 1e-4 * float(own.abs().max())
    assert (got["split/register"] > 0).all()
