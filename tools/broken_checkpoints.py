"""Broken checkpoints through every loading route (save_pretrained folder, timm folder, original .pth)
and what `evaluate.py` answers: a Markdown table of exit code and first error line (issue 23); also
the authors' own DeiT III and DINOv3 `.pth` layouts (issue 20).

The checkpoints are built by the tests' own helpers (tests/harness/test_weights_fit.py and friends).

Usage, from the repository root: `PYTHONPATH=. .venv/bin/python tools/broken_checkpoints.py`
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cls_decoupling.cli import evaluate
from harness.errors import first_line
from tests.conftest import tiny_model
from tests.harness.test_checkpoint import to_original_format
from tests.harness.test_loading import tiny_timm_folder
from tests.harness.test_original_deit3 import deit3_state
from tests.harness.test_original_dinov3 import dinov3_state
from tests.harness.test_weights_fit import State, dinov2_folder, rewritten, vit_state


def truncated(folder: Path) -> Path:
    """`folder` with its model.safetensors cut to its first 200 bytes."""
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return folder


def timm_folder(folder: Path) -> Path:
    tiny_timm_folder(folder)
    return folder


def dino_pth(path: Path, change: Callable[[State], State]) -> Path:
    torch.save(change(to_original_format(tiny_model(0, False, hidden=64, heads=1))), path)
    return path


def saved(path: Path, state: object) -> Path:
    torch.save(state, path)
    return path


def cases(tmp: Path) -> dict[str, Path]:
    """Case name -> the broken checkpoint."""
    return {
        "HF folder: tensors missing": rewritten(
            dinov2_folder(tmp / "missing"), lambda s: {k: v for k, v in s.items() if "layer.1." not in k}
        ),
        "HF folder: keys under backbone.": rewritten(
            dinov2_folder(tmp / "prefixed"), lambda s: {f"backbone.{k}": v for k, v in s.items()}
        ),
        "HF folder: another architecture's keys": rewritten(
            dinov2_folder(tmp / "other"), lambda s: vit_state()
        ),
        "HF folder: a tensor of the wrong shape": rewritten(
            dinov2_folder(tmp / "shape"),
            lambda s: {**s, "encoder.layer.0.mlp.fc1.weight": torch.zeros(65, 32)},
        ),
        "HF folder: truncated model.safetensors": truncated(dinov2_folder(tmp / "truncated")),
        "timm folder: tensors missing": rewritten(
            timm_folder(tmp / "timm_missing"), lambda s: {k: v for k, v in s.items() if "blocks.1." not in k}
        ),
        "timm folder: keys under module.": rewritten(
            timm_folder(tmp / "timm_prefixed"), lambda s: {f"module.{k}": v for k, v in s.items()}
        ),
        "timm folder: a tensor of the wrong shape": rewritten(
            timm_folder(tmp / "timm_shape"), lambda s: {**s, "blocks.0.mlp.fc1.weight": torch.zeros(7, 32)}
        ),
        "timm folder: truncated model.safetensors": truncated(timm_folder(tmp / "timm_truncated")),
        ".pth: a tensor of the wrong shape": dino_pth(
            tmp / "shape.pth", lambda s: {**s, "blocks.0.attn.proj.weight": torch.zeros(64, 63)}
        ),
        ".pth: tensors missing": dino_pth(
            tmp / "missing.pth", lambda s: {k: v for k, v in s.items() if not k.startswith("blocks.1.mlp.")}
        ),
        ".pth: keys under module.": dino_pth(
            tmp / "module.pth", lambda s: {f"module.{k}": v for k, v in s.items()}
        ),
        "DeiT III .pth as released ({'model': ...})": saved(
            tmp / "deit3.pth", {"model": deit3_state(width=192)}
        ),
        "DINOv3 .pth as released": saved(tmp / "dinov3.pth", dinov3_state(gated=True)),
        "DINOv3 .pth with its own cls_norm": saved(
            tmp / "untied.pth",
            {**dinov3_state(gated=False), "cls_norm.weight": torch.ones(64), "cls_norm.bias": torch.ones(64)},
        ),
    }  # fmt: skip


def answer(checkpoint: Path, photos: Path, output: Path) -> tuple[object, str]:
    """evaluate.py's exit code and first error line on `checkpoint` (or "traceback" and the error)."""
    data = ["--data", "folder", "--data-dir", str(photos), "--resolution", "32", "--num-workers", "0"]
    argv = ["--backbone", str(checkpoint), *data, "--probe", "norms", "--output", str(output)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = evaluate.main(argv)
    except BaseException as error:  # what the table is for: a traceback is a finding
        return "traceback", f"{type(error).__name__}: {first_line(error)}"
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    return code, lines[0] if lines else "(no error line)"


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    photos = tmp / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((np.random.rand(40, 40, 3) * 255).astype("uint8")).save(photos / f"{i}.png")
    print("| case | exit | first line |\n|---|---|---|")
    for name, checkpoint in cases(tmp).items():
        code, line = answer(checkpoint, photos, tmp / "out" / checkpoint.name)
        print(f"| {name} | {code} | {line[:200]} |")


if __name__ == "__main__":
    main()
