"""An intervention (`Intervention`, an extra): its targets replaced by a mode at chosen blocks, at a
level, and the model's output read again in one more pass from its first block on. Levels and modes
are classes that register themselves by name (`LEVELS`, `MODES`): a new one is a file of this package
(`harness.extras.interventions` imports every module of it)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import Tensor

from harness.backbone import Call, DecomposingBackbone, Extra, ExtraResult, joined
from harness.decomposition import Decomposition, HFBlock, projection_readout
from harness.extras.interventions.reference import ReferenceKey, ReferenceStatistics
from harness.families import Family
from harness.info import BackboneInfo
from harness.taps import BlockParts, Tap
from harness.tokens import GROUPS, TokenLayout

ARTIFACT = "artifact"
"""The target of the patches whose norm in the block's input exceeds the backbone's artifact threshold
(`BackboneInfo.artifact_threshold`): a different set per image, so zeroed only."""
_NAMED: tuple[str, ...] = (*GROUPS, "high_norm", "skip", ARTIFACT)
"""The targets named as they are (the others carry numbers: `register3`, `token5`, `head2`,
`neurons:5,17`)."""
TARGETS: tuple[str, ...] = (*_NAMED, "registerN", "tokenN", "headN", "neurons:I,J,K")
"""What an intervention acts on: a token group, the highest-norm non-[CLS] token of the block's
input (the paper's high-norm token at the last block), the artifact patches of the block's input
(`artifact`: above the backbone's artifact threshold; model level, zero), the [CLS] skip stream
(readout level), one
register (`register3`: the third, from 1), one token position (`token5`: sequence position 5, [CLS]
at 0), one attention head's output (`head5`: the fifth, from 1) or a set of MLP neurons
(`neurons:5,17,300`: their activations after the non-linearity, numbered from 0 as the MLP's hidden
units are, for every token)."""
_ONE_HEAD = re.compile(r"^head(?P<number>[0-9]+)$")
ONE_HEAD = "one_head"
"""The kind of a one-head target (`headN`) in a level's `targets`."""
_ONE_TOKEN = re.compile(r"^(?P<kind>register|token)(?P<number>[0-9]+)$")
ONE_TOKEN = "one_token"
"""The kind of a one-token target (`registerN`, `tokenN`) in a level's `targets`."""
_NEURONS = re.compile(r"^neurons:(?P<numbers>[0-9]+(?:,[0-9]+)*)$")
NEURONS = "neuron_set"
"""The kind of a neurons target (`neurons:I,J,K`) in a level's `targets` (a bare `neurons` is no
target: it names no neuron)."""


def target_kind(target: str) -> str:
    """The kind a level lists: the target itself, or `ONE_TOKEN` for `registerN` / `tokenN`.

    >>> target_kind("register3"), target_kind("register"), target_kind("head2"), target_kind("neurons:4,7")
    ('one_token', 'register', 'one_head', 'neuron_set')
    """
    if _ONE_HEAD.match(target):
        return ONE_HEAD
    if _NEURONS.match(target):
        return NEURONS
    return ONE_TOKEN if _ONE_TOKEN.match(target) else target


def one_head(target: str) -> int | None:
    """The head (0-based) of a one-head target (None for any other target).

    >>> one_head("head5"), one_head("high_norm")
    (4, None)
    """
    match = _ONE_HEAD.match(target)
    return None if match is None else int(match["number"]) - 1


def neurons(target: str) -> tuple[int, ...] | None:
    """The MLP neurons (0-based) of a neurons target, ascending (None for any other target).

    >>> neurons("neurons:17,5,300"), neurons("head2")
    ((5, 17, 300), None)
    """
    match = _NEURONS.match(target)
    return None if match is None else tuple(sorted({int(n) for n in match["numbers"].split(",")}))


def _canonical(target: str) -> str:
    """A neurons target with its neurons ascending and once each; any other target as it is."""
    chosen = neurons(target)
    return target if chosen is None else f"neurons:{','.join(map(str, chosen))}"


def acts_inside(target: str) -> bool:
    """Whether `target` is replaced inside a block as it runs (a head's output, MLP neurons) rather
    than among the tokens entering it: such a target covers every token."""
    return target_kind(target) in (ONE_HEAD, NEURONS)


def one_token_kind(target: str) -> str | None:
    """`register` or `token` for a one-token target, None for any other target.

    >>> one_token_kind("register3"), one_token_kind("token0"), one_token_kind("register")
    ('register', 'token', None)
    """
    match = _ONE_TOKEN.match(target)
    return None if match is None else match["kind"]


def one_token_position(target: str, layout: TokenLayout) -> int | None:
    """The sequence position of a one-token target in `layout` (None for any other target).

    >>> one_token_position("register2", TokenLayout(num_registers=4, grid_height=2, grid_width=2))
    2

    Raises:
        ValueError: a register or position the sequence does not have.
    """
    match = _ONE_TOKEN.match(target)
    if match is None:
        return None
    number = int(match["number"])
    if match["kind"] == "token":
        if number >= layout.num_tokens:
            raise ValueError(f"{target}: the sequence has positions 0..{layout.num_tokens - 1}")
        return number
    if not 1 <= number <= layout.num_registers:
        raise ValueError(f"{target}: this model has registers 1..{layout.num_registers}")
    return layout.slice("register").start + number - 1


INTERVENTION_PREFIX = "intervened/"
"""`intervened/{level}/{targets}@{blocks}/{mode}/{name}`: a probe's results on the pass under an
intervention (`Intervention.prefix`)."""
_SPEC = re.compile(
    r"^(?P<targets>[a-z0-9_+:,]+)@(?P<blocks>[a-z0-9-]+):(?P<mode>[a-z]+)(?::(?P<level>[a-z]+))?$"
)
_NEURONS_SPEC = re.compile(r"^neurons@(?P<blocks>[a-z0-9-]+):(?P<numbers>[0-9,]+):(?P<rest>.*)$")
"""The issue's form of a neurons spec, `neurons@12:5,17,300:zero`: read as `neurons:5,17,300@12:zero`."""
_NAME = re.compile(
    r"^(?P<level>[a-z]+)/(?P<targets>[a-z0-9_+:,]+)@(?P<blocks>[0-9,-]+|last|all)/(?P<mode>[a-z]+)$"
)
SPELLED = ("last", "all")
"""Blocks named by their place in the model: an intervention keeps them so in its name (`register@last`),
so models of different depths line up in comparisons."""

LEVELS: dict[str, type[Level]] = {}
"""Level name -> class, filled as the package's modules define them."""
MODES: dict[str, type[Mode]] = {}
"""Mode name -> class, filled as the package's modules define them."""


class AbsentTargetError(ValueError):
    """An intervention targets a token group the model lacks (registers of a model without any).

    Attributes:
        reason: why, without the intervention's name (what the command line records of a skip).
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.reason = reason


def _register(table: dict[str, type], kind: str, cls: type) -> None:
    """`cls` under its name in `table` (a second class of the same name is an error)."""
    if "name" not in cls.__dict__:  # an abstract base
        return
    known = table.get(cls.name)  # type: ignore[attr-defined]
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"two intervention {kind}s are named {cls.name!r}")  # type: ignore[attr-defined]
    table[cls.name] = cls  # type: ignore[attr-defined]


class Level(ABC):
    """Where an intervention acts on a block. A subclass that sets `name` registers itself.

    Attributes:
        name: its name in a spec (`TARGETS@BLOCKS:MODE:LEVEL`).
        description: one line for `--help` and the README.
        targets: the `TARGETS` it acts on.
        rebuilds_cls: whether it rebuilds a block's [CLS] row (so the last block's decomposition no
            longer describes an output it rebuilt).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    targets: ClassVar[tuple[str, ...]]
    rebuilds_cls: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _register(LEVELS, "level", cls)

    @abstractmethod
    def tap(self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout,
            indices: Tensor | None) -> Tap:  # fmt: skip
        """The tap that applies `intervention` (its mode's `replacement`) in a pass."""

    @abstractmethod
    def current(self, target: str, parts: BlockParts, view: HFBlock, layout: TokenLayout) -> Tensor:
        """What `target` is at this level in a block that ran (images, rows, hidden), float32: what a
        reference pass records and a mode replaces."""

    def reads(self, target: str) -> frozenset[str]:
        """The block points `current` reads of `target` (`harness.taps.POINTS`)."""
        return frozenset()


class Mode(ABC):
    """What an intervention puts in place of its target. A subclass that sets `name` registers itself.

    Attributes:
        name: its name in a spec.
        description: one line for `--help` and the README.
        reads_reference: it reads reference statistics (a reference pass runs first).
        draws_random: it draws seeded numbers per image (a call needs the dataset indices).
        allows_deletion: the deletion passes may run under it (their sequences are shortened).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    reads_reference: ClassVar[bool] = False
    draws_random: ClassVar[bool] = False
    allows_deletion: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _register(MODES, "mode", cls)

    def replacement(
        self,
        current: Tensor,
        key: ReferenceKey,
        indices: Tensor | None,
        reference: ReferenceStatistics | None,
    ) -> Tensor:
        """What replaces `current` (images, rows, hidden) of `key.target` at `key.block` for the
        images `indices`; a mode that replaces no values says so."""
        raise TypeError(f"the {self.name} mode replaces no values: it brings its own tap")

    def tap(self, intervention: Intervention, backbone: DecomposingBackbone, layout: TokenLayout,
            indices: Tensor | None) -> Tap:  # fmt: skip
        """The tap that applies it: its level's, which asks it for `replacement`s."""
        return LEVELS[intervention.level]().tap(intervention, backbone, layout, indices)

    def rebuilds_cls(self, intervention: Intervention) -> bool:
        """Whether it rebuilds the [CLS] row of its blocks (as its level does, by default)."""
        return LEVELS[intervention.level].rebuilds_cls

    def check(self, intervention: Intervention, groups: Sequence[str]) -> None:
        """Raise ValueError where it cannot act on `intervention`'s targets in a model with `groups`."""
        return None


def _span(blocks: Sequence[int]) -> str:
    first, last = blocks[0], blocks[-1]
    if first == last:
        return str(first)
    return f"{first}-{last}" if list(blocks) == list(range(first, last + 1)) else ",".join(map(str, blocks))


@dataclass(frozen=True)
class Intervention(Extra):
    """`targets` replaced by `mode` at `blocks` (1-based, ascending), at `level`: one more pass from
    its first block on (the blocks before it are not run again), reported as the decomposition of
    that pass (`Decomposition.pass_of(name)`), with the results of the extras run `under` it.

    >>> Intervention(("register",), (11, 12), "mean").name
    'model/register@11-12/mean'
    >>> Intervention(("register",), (12,), "mean", spelled="last").name
    'model/register@last/mean'

    Args:
        reference: the statistics its mode reads, where it reads any (`mean`, `shuffle`, `noise`).
        under: extras run under it (their passes carry its tap: the deletion passes).
        spelled: `last` or `all` where the blocks were named so (`SPELLED`), kept in `name`; "" else.
    """

    targets: tuple[str, ...]
    blocks: tuple[int, ...]
    mode: str
    level: str = "model"
    reference: ReferenceStatistics | None = field(default=None, compare=False, repr=False)
    under: tuple[Extra, ...] = field(default=(), compare=False, repr=False)
    spelled: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(_canonical(target) for target in self.targets))
        if repeated := sorted({t for t in self.targets if self.targets.count(t) > 1}):
            raise ValueError(
                f"intervention targets {'+'.join(self.targets)} name {', '.join(repeated)} twice"
            )
        known = (*_NAMED, ONE_TOKEN, ONE_HEAD, NEURONS)
        unknown = [t for t in self.targets if target_kind(t) not in known]
        if not self.targets or unknown:
            raise ValueError(
                f"unknown intervention target {unknown or self.targets}; choose from {', '.join(TARGETS)}"
            )
        if self.mode not in MODES:
            raise ValueError(f"unknown intervention mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.level not in LEVELS:
            raise ValueError(f"unknown intervention level {self.level!r}; choose from {', '.join(LEVELS)}")
        if wrong := [t for t in self.targets if target_kind(t) not in LEVELS[self.level].targets]:
            hint = f"; {_SKIP_HINT}" if "skip" in wrong else ""
            raise ValueError(f"{', '.join(wrong)}: not a target of the {self.level} level{hint}")
        if not self.blocks or list(self.blocks) != sorted(set(self.blocks)) or self.blocks[0] < 1:
            raise ValueError(f"intervention blocks must be ascending block numbers from 1, got {self.blocks}")
        whole = self.blocks == tuple(range(1, len(self.blocks) + 1))
        if (
            self.spelled not in ("", *SPELLED)
            or (self.spelled == "last" and len(self.blocks) > 1)
            or (self.spelled == "all" and not whole)
        ):
            raise ValueError(f"blocks {self.blocks} are not {self.spelled!r}")

    @classmethod
    def parse(cls, text: str, num_layers: int) -> Intervention:
        """`TARGETS@BLOCKS:MODE[:LEVEL]`: targets joined by `+`, blocks `last`, `all`, `N` or `A-B`,
        level `model` (default) or another of `LEVELS`. A set of neurons alone may also be written
        `neurons@BLOCKS:I,J,K:MODE`.

        >>> Intervention.parse("cls+skip@3-4:zero:readout", 12).name
        'readout/cls+skip@3-4/zero'
        >>> Intervention.parse("neurons@12:300,5,17:zero", 12).name
        'model/neurons:5,17,300@12/zero'

        Raises:
            ValueError: not of that form, an unknown target, mode or level, or blocks outside 1..num_layers.
        """
        written = text.strip()
        if spoken := _NEURONS_SPEC.match(written):
            written = f"neurons:{spoken['numbers']}@{spoken['blocks']}:{spoken['rest']}"
        match = _SPEC.match(written)
        if match is None:
            raise ValueError(
                f"--intervene {text!r}: expected TARGETS@BLOCKS:MODE[:LEVEL], e.g. register@last:mean, "
                "cls+skip@10-12:zero:readout or neurons@12:5,17,300:zero"
            )
        blocks = _blocks(match["blocks"], num_layers, text)
        spelled = match["blocks"] if match["blocks"] in SPELLED else ""
        return cls(
            tuple(match["targets"].split("+")),
            blocks,
            match["mode"],
            match["level"] or "model",
            spelled=spelled,
        )

    @classmethod
    def from_name(cls, name: str, num_layers: int | None = None) -> Intervention:
        """The intervention `name` names (`Intervention.name`'s inverse, e.g. read back from a run of a
        model of `num_layers` blocks, which `last` and `all` need).

        >>> Intervention.from_name("readout/cls+skip@3-4/zero").blocks
        (3, 4)
        >>> Intervention.from_name("model/register@last/zero", 12).blocks
        (12,)
        """
        match = _NAME.match(name)
        if match is None:
            raise ValueError(f"{name!r} is not an intervention's name (LEVEL/TARGETS@BLOCKS/MODE)")
        targets, spelled = tuple(match["targets"].split("+")), match["blocks"]
        if spelled in SPELLED:
            if num_layers is None:
                raise ValueError(f"{name!r}: '{spelled}' needs the model's number of blocks")
            blocks = _blocks(spelled, num_layers, name)
            return cls(targets, blocks, match["mode"], match["level"], spelled=spelled)
        numbers: list[int] = []
        for part in spelled.split(","):
            first, _, last = part.partition("-")
            numbers += range(int(first), int(last or first) + 1)
        return cls(targets, tuple(numbers), match["mode"], match["level"])

    def mode_of(self) -> Mode:
        """Its mode (`MODES`)."""
        return MODES[self.mode]()

    @property
    def name(self) -> str:
        return f"{self.level}/{'+'.join(self.targets)}@{self.spelled or _span(self.blocks)}/{self.mode}"

    @property
    def prefix(self) -> str:
        """The prefix of a probe's results on this intervention's pass."""
        return f"{INTERVENTION_PREFIX}{self.name}/"

    @property
    def key(self) -> str:
        return self.name

    @property
    def draws_random(self) -> bool:
        return self.mode_of().draws_random or any(extra.draws_random for extra in self.under)

    @property
    def allows_deletion(self) -> bool:
        """Whether the deletion passes can run under it: a model-level intervention whose targets sit
        before the patches (or are the highest-norm token among those left; a token position may be a
        patch, a head's output or a set of neurons covers every token) and whose mode allows it, so the
        shortened sequences hold its targets where the full one does."""
        before_patches = not any(
            t in ("patch", ARTIFACT) or one_token_kind(t) == "token" or acts_inside(t) for t in self.targets
        )
        return self.level == "model" and before_patches and self.mode_of().allows_deletion

    def reported_variants(self, num_layers: int) -> tuple[str, ...] | None:
        """The variants its pass reports where fewer than a clean pass's: only the outputs when it
        rebuilds the last block's [CLS] row (`rebuilds_last`); None: every variant."""
        return ("output/full", "projection/full") if self.rebuilds_last(num_layers) else None

    def rebuilds_last(self, num_layers: int) -> bool:
        """Whether it rebuilds the last block's [CLS] row, or replaces a head's output or neurons inside
        the last block (the decomposition, from that block's keys, values and MLP, then describes no
        output the model made): its pass then reports only its outputs."""
        inside = any(acts_inside(target) for target in self.targets)
        return num_layers in self.blocks and (inside or self.mode_of().rebuilds_cls(self))

    def reference_keys(self) -> list[ReferenceKey]:
        """The reference statistics it reads (none for a mode that reads none)."""
        if not self.mode_of().reads_reference:
            return []
        return [ReferenceKey(self.level, target, block) for block in self.blocks for target in self.targets]

    def absent_targets(self, groups: Sequence[str]) -> tuple[str, ...]:
        """The target groups a model with token `groups` lacks (registers of a model without any, also
        for one register: `register3`)."""
        absent = [target for target in self.targets if target in GROUPS and target not in groups]
        if "register" not in groups:
            absent += [target for target in self.targets if one_token_kind(target) == "register"]
        return tuple(absent)

    def using(self, reference: ReferenceStatistics | None) -> Intervention:
        """This intervention reading `reference`."""
        return replace(self, reference=reference)

    def running(self, extras: Sequence[Extra]) -> Intervention:
        """This intervention with `extras` run under it too."""
        return replace(self, under=tuple(dict.fromkeys((*self.under, *extras))))

    def merged(self, other: Extra) -> Extra:
        if not isinstance(other, Intervention) or other.name != self.name:
            raise ValueError(f"{other} is not {self.name}")
        if (
            self.reference is not None
            and other.reference is not None
            and other.reference is not self.reference
        ):
            raise ValueError(f"two consumers ask for {self.name} with different reference statistics")
        return self.using(self.reference or other.reference).running(other.under)

    def check_model(self, info: BackboneInfo) -> None:
        """Raise ValueError where the model `info` describes cannot take it: blocks it lacks, a mode
        that cannot act on its targets there, or `AbsentTargetError` for a token group it lacks."""
        if self.blocks[-1] > info.num_layers:
            raise ValueError(f"{self.name}: this backbone has blocks 1..{info.num_layers}")
        if info.readout != "cls" and (self.level != "model" or self.mode == "knockout"):
            raise ValueError(
                f"{self.name}: it rebuilds a block's [CLS] row, and {info.name}'s output is read by an "
                "attention-pooling head; replace tokens at the model level instead"
            )
        if ARTIFACT in self.targets and not info.artifact_threshold:  # skipped where one model has none
            raise AbsentTargetError(
                self.name, "the artifact patches are those above a norm: add --artifact-threshold"
            )
        if ARTIFACT in self.targets and self.mode != "zero":
            raise ValueError(f"{self.name}: the artifact patches differ per image, so they are zeroed only")
        groups = info.groups
        if absent := self.absent_targets(groups):
            raise AbsentTargetError(self.name, f"this model has no {', '.join(absent)} tokens")
        registers = TokenLayout(info.num_registers, 1, 1, info.num_distillation)
        for target in self.targets:  # a register or head it lacks (positions are checked per image size)
            if one_token_kind(target) == "register":
                one_token_position(target, registers)
            head = one_head(target)
            if head is not None and not 0 <= head < info.num_heads:
                raise ValueError(f"{self.name}: this model has heads 1..{info.num_heads}")
            chosen = neurons(target) or ()
            if chosen and info.mlp_size and chosen[-1] >= info.mlp_size:
                raise ValueError(f"{self.name}: this model's MLPs have neurons 0..{info.mlp_size - 1}")
        self.mode_of().check(self, groups)

    def check_family(self, family: Family) -> None:
        """Raise ValueError where the model's family cannot act on its targets: a head's output at
        model level where no hook sees it (`Family.reads_heads`)."""
        heads = [t for t in self.targets if one_head(t) is not None]
        if heads and self.level == "model" and not family.reads_heads:
            raise ValueError(
                f"{self.name}: {family.name}'s attention runs its output projection inside one call, so a "
                "head's output cannot be replaced for every token; use the readout level"
            )

    def check(self, backbone: DecomposingBackbone) -> None:
        self.check_model(backbone.info)
        self.check_family(backbone.family)
        if self.mode_of().reads_reference and self.reference is None:
            raise ValueError(
                f"{self.name} reads reference statistics: pass `intervention.using(statistics)` after a "
                "reference pass (`harness.extras.interventions.recording.record_reference`)"
            )
        if self.under and not self.allows_deletion:
            raise ValueError(f"{self.name}: the deletion passes cannot run under it")
        for extra in self.under:  # they run on its pass, with no taps of their own
            extra.check(backbone)

    def check_layout(self, layout: TokenLayout) -> None:
        """Raise ValueError where a token position it targets lies beyond the sequence of `layout`."""
        for target in self.targets:
            try:
                one_token_position(target, layout)
            except ValueError as error:
                raise ValueError(f"{self.name}: {error} at this image size") from None

    def taps(self, backbone: DecomposingBackbone, layout: TokenLayout) -> Mapping[str, Tap]:
        self.check_layout(layout)
        return {"start": _Input(self.blocks[0])}

    def run(self, call: Call, taps: Mapping[str, Tap]) -> ExtraResult:
        """Its pass from the clean input of its first block, decomposed (unless it rebuilt the last
        block's [CLS] row: then its outputs only), and the extras under it on that pass."""
        backbone, layout, start = call.backbone, call.capture.layout, self.blocks[0]
        tap = taps["start"]
        assert isinstance(tap, _Input) and tap.tokens is not None
        applied = self.mode_of().tap(self, backbone, layout, call.indices)
        captured = backbone.capture_from(tap.tokens, layout, start, (applied,))
        clean, own = call.capture.cls_states, captured.cls_states
        if clean is not None and own is not None:  # a model with a [CLS] token
            captured = replace(captured, cls_states=torch.cat([clean[:, :start], own[:, start:]], dim=1))
        if self.rebuilds_last(backbone.info.num_layers):
            output = {"output/full": captured.pooled} | backbone.linear_input(captured)
            if backbone.family.projection is not None:
                output |= projection_readout(backbone.family.projection, output)
            return ExtraResult(
                passes={self.name: Decomposition(output, layout, captured.pooled.new_zeros(()))}
            )
        decomposition = backbone.decompose(captured)
        under = Call(backbone, call.pixel_values, call.indices, captured, decomposition, (applied,))
        found = joined(decomposition, [extra.run(under, {}) for extra in self.under])
        return ExtraResult(passes={self.name: found}, error=found.pooler_error)


_SKIP_HINT = "the skip stream is the [CLS] residual inside a block: it has only the readout level"


class _Input(Tap):
    """The clean input of one block (where an intervention's pass starts)."""

    def __init__(self, number: int) -> None:
        self.blocks = (number,)
        self.tokens: Tensor | None = None

    def leave(self, parts: BlockParts) -> None:
        self.tokens = parts.input


def _blocks(text: str, num_layers: int, spec: str) -> tuple[int, ...]:
    if text == "last":
        return (num_layers,)
    if text == "all":
        return tuple(range(1, num_layers + 1))
    bounds = text.split("-")
    if len(bounds) > 2 or not all(bound.isdigit() for bound in bounds):
        raise ValueError(f"--intervene {spec!r}: blocks are last, all, N or A-B, got {text!r}")
    first, last = int(bounds[0]), int(bounds[-1])
    if first < 1:
        raise ValueError(f"--intervene {spec!r}: blocks are numbered from 1, got {text!r}")
    if first > last:
        raise ValueError(f"--intervene {spec!r}: a range A-B needs A <= B, got {text!r}")
    if last > num_layers:
        raise ValueError(f"--intervene {spec!r}: this backbone has blocks 1..{num_layers}, got {text!r}")
    return tuple(range(first, last + 1))


def parse_intervention(text: str, num_layers: int) -> Intervention:
    """`Intervention.parse` (the name the command line and earlier code use).

    >>> parse_intervention("register@last:mean", 12).name
    'model/register@last/mean'
    """
    return Intervention.parse(text, num_layers)
