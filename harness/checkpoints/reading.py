"""Reading a checkpoint in its authors' layout: the file loaded weights-only, the state dict found
inside its training wrapper, and the few questions every layout asks of it (which blocks, which
tensor ends in what)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.errors import CheckpointFormatError, first_line, state_dict_problem

TRAINING_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
"""The only non-tensor objects a weights-only load accepts: the command-line arguments DINO's
`main_dino.py` and iBOT's `main_ibot.py` save beside the weights (`args`); anything else stays refused."""

BLOCK_KEY = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")
"""`blocks.<i>.<name>`, also the chunked `blocks.<chunk>.<i>.<name>` form of DINOv2's training."""
SHARED_BLOCK_KEYS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "ls2.gamma": "layer_scale2.lambda1",
}
"""The in-block names DINOv2's and DINOv3's repositories share (one lineage), and transformers' for
them; each layout adds its MLP's."""
_WRAPPERS = ("teacher", "model", "state_dict")
_WRAPPER_PREFIXES = ("module.", "backbone.")
_HEAD_PREFIXES = ("dino_head.", "ibot_head.", "head.")
CLASSIFIER = ("head.weight", "head.bias")
"""A linear classifier on the pre-logits output (DeiT III's), kept apart by `read_state_dict`."""

StateDict = dict[str, Tensor]


def read_state_dict(path: Path) -> tuple[StateDict, StateDict]:
    """The backbone's tensors in a `.pth`: a bare state dict, or one under "teacher" / "model" /
    "state_dict" with `module.` / `backbone.` prefixes, projection heads dropped; and apart from them a
    linear classifier (`CLASSIFIER`) where the file holds one, else an empty dict.

    Raises:
        CheckpointFormatError: the file is no weights-only torch checkpoint, or holds no state dict.
    """
    try:
        with torch.serialization.safe_globals(list(TRAINING_CHECKPOINT_GLOBALS)):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error names the object it refused on its first line
        raise CheckpointFormatError(
            f"cannot read {path} as a weights-only torch checkpoint: {first_line(error)}"
        ) from None
    if isinstance(state, dict):
        for wrapper in _WRAPPERS:
            if wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointFormatError(f"{path} does not hold a state dict of tensors")
    # training checkpoints carry heads (dino_head, ibot_head, a classifier) beside the backbone
    heads = {k for k in state if k.startswith(_HEAD_PREFIXES)}
    linear = heads == set(CLASSIFIER) and state["head.weight"].ndim == 2 and state["head.bias"].ndim == 1
    classifier = {k: state[k] for k in CLASSIFIER} if linear else {}
    state = {k: v for k, v in state.items() if k not in heads}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state, classifier


def require(state: StateDict, keys: tuple[str, ...], layout: str) -> None:
    """Refuse a state dict that lacks a tensor every checkpoint of `layout` holds."""
    for key in keys:
        if key not in state:
            raise CheckpointFormatError(f"not an original {layout} checkpoint: no {key!r} tensor")


def block_count(state: StateDict) -> int:
    """How many blocks the state dict holds (numbered 0..N-1).

    Raises:
        CheckpointFormatError: no blocks, or a gap in their numbers.
    """
    blocks = {int(m.group(1)) for m in map(BLOCK_KEY.match, state) if m}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointFormatError(f"blocks are not numbered 0..N-1: found {sorted(blocks)[:10]}")
    return len(blocks)


def first(state: StateDict, suffix: str) -> Tensor:
    """The first tensor whose key ends in `suffix`."""
    for key, tensor in state.items():
        if key.endswith(suffix):
            return tensor
    raise CheckpointFormatError(f"no tensor ending in {suffix!r}")


def heads_of(width: int, head_dim: int, num_heads: int | None) -> int:
    """`num_heads` where given, else width / head_dim; refused when the width does not split."""
    heads = num_heads if num_heads is not None else width // head_dim
    if heads < 1:
        raise CheckpointFormatError(
            f"width {width} is narrower than one head of {head_dim}: not a released size"
        )
    if width % heads:
        raise CheckpointFormatError(f"width {width} cannot be split into {heads} heads")
    return heads


def load_converted(model: nn.Module, converted: StateDict, path: Path, layout: str) -> None:
    """Load `converted` into `model`, every tensor and nothing else, or refuse in one line.

    Raises:
        CheckpointFormatError: a tensor missing, extra, or of another shape than the model's.
    """
    try:
        missing, unexpected = model.load_state_dict(converted, strict=False)
    except RuntimeError as error:  # a tensor of another shape than the config inferred
        raise CheckpointFormatError(
            f"{path} does not match a {layout} model: {state_dict_problem(error)}"
        ) from None
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{path} does not match a {layout} model: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
