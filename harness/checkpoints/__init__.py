"""Checkpoints in their authors' own layout (`.pth`), converted on load to the model of the port this
tool runs: DINOv2 / DINO v1 / iBOT (`dinov2`, to transformers), DeiT III (`deit3`, the DeiT
repository's `models_v2`, to timm) and DINOv3 (`dinov3`, to transformers). The file is read once
(`reading`); each layout module says whether it recognises the tensors and converts them."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from harness.checkpoints import deit3, dinov2, dinov3
from harness.checkpoints.dinov2 import PLAIN_FAMILY, is_plain
from harness.checkpoints.reading import TRAINING_CHECKPOINT_GLOBALS, read_state_dict

__all__ = ["PLAIN_FAMILY", "TRAINING_CHECKPOINT_GLOBALS", "is_plain", "load_original_checkpoint"]


def load_original_checkpoint(path: Path, num_heads: int | None = None) -> nn.Module:
    """Read an original `.pth` (weights only) and return the equivalent model of the port: DINOv3's
    and DeiT III's layouts where their tensors say so (`recognises`), else DINOv2's (also DINO v1's
    and iBOT's).

    Args:
        path: the checkpoint file, as its authors released it (or a training checkpoint holding it).
        num_heads: heads when not the released sizes' (only for non-standard test models).

    Raises:
        CheckpointFormatError: the file is no weights-only checkpoint of one of these layouts.
    """
    state, classifier = read_state_dict(path)
    if dinov3.recognises(state):
        return dinov3.convert(state, path, num_heads)
    if deit3.recognises(state):  # its ImageNet classifier kept (the model's own head: --head model)
        return deit3.convert(state, path, num_heads, classifier)
    return dinov2.convert(state, path, num_heads)
