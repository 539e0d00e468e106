"""Test-time registers (Jiang et al. 2025, "Vision Transformers Don't Need Trained Registers";
docs/design.md#test-time-registers): a model without trained registers given `count` extra tokens,
zeros without a position embedding, into which the register neurons' activations are moved as the
model runs. At each block with register neurons, per image, the signed maximum of those neurons'
activations (the larger in magnitude of their maximum and minimum over every token and every one of
the block's register neurons together) is written into the extra tokens, and the other tokens' (all
but [CLS]) activations of those neurons are set to zero.

The authors append the extra tokens at the end of the sequence. Here they follow the model's own
prefix tokens ([CLS], a distillation token, trained registers), where the decomposition reads
registers: in a block that sees no token positions (every family but DINOv3, whose RoPE rotates the
patches only and finds them by counting from the end) attention and MLP treat tokens alike whatever
their order, so every token's output is the same either way (tested against the authors' placement).

`with_test_time_registers(model, neurons)` returns a copy that `DecomposingBackbone.from_model` reads
as a model with `count` more registers; the user's model is left as it was."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from harness.backbone import DecomposingBackbone
from harness.families import family_for
from harness.families.base import TEST_TIME_REGISTERS, mlp_output


@dataclass(frozen=True)
class TestTimeRegisters:
    """What a model with test-time registers carries (as its `test_time_registers` attribute).

    Attributes:
        count: the extra tokens.
        start: the sequence position of the first ([CLS] at 0).
        neurons: block (1-based) -> the register neurons of its MLP (0-based, ascending).
    """

    __test__ = False  # not a pytest class

    count: int
    start: int
    neurons: Mapping[int, tuple[int, ...]]


def signed_max(values: Tensor) -> Tensor:
    """Per image, the larger in magnitude of the maximum and the minimum over every other axis (the
    maximum where they tie): values (images, ...) -> (images,).

    >>> signed_max(torch.tensor([[[1.0, -3.0], [2.0, 0.5]], [[1.0, -0.5], [2.0, 0.0]]])).tolist()
    [-3.0, 2.0]
    """
    flat = values.flatten(1)
    high, low = flat.amax(dim=1), flat.amin(dim=1)
    return torch.where(high.abs() >= low.abs(), high, low)


class _Inserting:
    """Adds `count` zero tokens at sequence position `start` of a module's input (`before`, a
    pre-hook) or output (`after`, a forward hook)."""

    def __init__(self, count: int, start: int) -> None:
        self.count, self.start = count, start

    def insert(self, tokens: Tensor) -> Tensor:
        zeros = tokens.new_zeros(tokens.shape[0], self.count, tokens.shape[2])
        return torch.cat([tokens[:, : self.start], zeros, tokens[:, self.start :]], dim=1)

    def before(self, module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self.insert(inputs[0]), *inputs[1:])

    def after(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        return self.insert(output)


class _MovingNeurons:
    """At one block's MLP output projection (a pre-hook), while the block itself runs: per image, the
    signed maximum of the register neurons written into the extra tokens, zero in every other token
    but [CLS]. Outside the block's own forward (the decomposition rebuilding a [CLS] row with the
    block's MLP) it does nothing: the model leaves [CLS]'s activations as they are."""

    def __init__(self, neurons: Sequence[int], count: int, start: int, num_cls: int = 1) -> None:
        self.neurons, self.count, self.start, self.num_cls = list(neurons), count, start, num_cls
        self.running = False

    def enter(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.running = True

    def leave(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.running = False

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not self.running:
            return None
        activations = inputs[0]
        chosen = activations[..., self.neurons]  # images, tokens, neurons
        moved = torch.zeros_like(chosen)
        moved[:, : self.num_cls] = chosen[:, : self.num_cls]  # [CLS] keeps its own
        moved[:, self.start : self.start + self.count] = signed_max(chosen)[:, None, None]
        activations = activations.clone()
        activations[..., self.neurons] = moved
        return (activations, *inputs[1:])


def with_test_time_registers(
    model: nn.Module, neurons: Mapping[int, Sequence[int]], count: int = 1
) -> nn.Module:
    """A copy of `model` with `count` test-time registers fed by `neurons` (block, 1-based -> MLP
    neurons, 0-based), which `DecomposingBackbone.from_model` reads as registers; `model` is left as
    it was. The copy runs its own forward with them too (its `test_time_registers` attribute says what
    it carries). Hooks do the work: a copy saved with `save_pretrained` loses them.

    Raises:
        ValueError: a model of no supported family, one that already has test-time registers, no
            neurons or count below 1, or a block or neuron the model lacks.
    """
    family = family_for(model)
    if not family.takes_extra_tokens:
        raise ValueError(
            f"no token can be added: {family.name}'s blocks count the prefix tokens from the start"
        )
    if getattr(model, TEST_TIME_REGISTERS, None) is not None:
        raise ValueError("the model already has test-time registers")
    if count < 1:
        raise ValueError(f"test-time registers: give 1 or more, got {count}")
    chosen = {int(block): tuple(sorted({int(n) for n in found})) for block, found in neurons.items() if found}
    if not chosen:
        raise ValueError("test-time registers need register neurons: none given")
    blocks, width = len(family.blocks), family.mlp_size()
    for block, found in chosen.items():
        if not 1 <= block <= blocks:
            raise ValueError(f"register neurons of block {block}: the model has blocks 1..{blocks}")
        if found[0] < 0 or found[-1] >= width:
            raise ValueError(f"register neurons of block {block}: its MLP has neurons 0..{width - 1}")
    made = copy.deepcopy(model)
    own = family_for(made)
    architecture = own.described()
    num_cls = architecture["num_cls"]
    start = num_cls + architecture["num_distillation"] + architecture["num_registers"]
    inserting = _Inserting(count, start)
    if own.embeddings_normalise:  # the zeros enter the pre-norm, as the authors' OpenCLIP does
        own.embeddings.register_forward_pre_hook(inserting.before)
    else:
        own.embeddings.register_forward_hook(inserting.after)
    for block, found in sorted(chosen.items()):
        moving = _MovingNeurons(found, count, start, num_cls)
        layer = own.blocks[block - 1]
        layer.register_forward_pre_hook(moving.enter)
        layer.register_forward_hook(moving.leave, always_call=True)  # also when the block raises
        mlp_output(own.view(layer).mlp).register_forward_pre_hook(moving)
    setattr(made, TEST_TIME_REGISTERS, TestTimeRegisters(count, start, chosen))
    return made


def parse_neurons(text: str) -> dict[int, tuple[int, ...]]:
    """Register neurons written `BLOCK:I,J,...;BLOCK:K,...` (blocks from 1, neurons from 0).

    >>> parse_neurons("18:884,133; 17:5")
    {17: (5,), 18: (133, 884)}

    Raises:
        ValueError: not of that form, or a block written twice.
    """
    neurons: dict[int, tuple[int, ...]] = {}
    for part in text.split(";"):
        block, colon, numbers = part.strip().partition(":")
        found = [n.strip() for n in numbers.split(",")]
        if not (colon and block.isdigit() and int(block) >= 1 and all(n.isdigit() for n in found)):
            raise ValueError(
                f"register neurons {text!r}: write BLOCK:I,J;BLOCK:K (blocks from 1), got {part!r}"
            )
        if int(block) in neurons:
            raise ValueError(f"register neurons {text!r}: block {block} is written twice")
        neurons[int(block)] = tuple(sorted({int(n) for n in found}))
    return dict(sorted(neurons.items()))


def with_test_time_registers_backbone(
    backbone: DecomposingBackbone, neurons: Mapping[int, Sequence[int]], count: int = 1
) -> DecomposingBackbone:
    """`backbone`'s model with test-time registers (`with_test_time_registers`), as a backbone with
    the same name, classifier and compilation; its info counts them among the registers."""
    model = with_test_time_registers(backbone.model, neurons, count)
    described = family_for(model).described()  # what from_model reads of it: the registers counted
    info = replace(
        backbone.info,
        num_registers=described["num_registers"],
        test_time_registers=described["test_time_registers"],
    )
    return DecomposingBackbone(model, info, backbone.compiled, backbone.classifier)
