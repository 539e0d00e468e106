"""Broken checkpoints through every loading route (save_pretrained folder, timm folder, original .pth)
and what `evaluate.py` answers: a Markdown table of exit code and first error line (issue 23).

Usage, from the repository root: `PYTHONPATH=. .venv/bin/python tools/broken_checkpoints.py`
"""

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.models._hub import save_for_hf
from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

from cls_decoupling.cli import evaluate

tmp = Path(tempfile.mkdtemp())
torch.manual_seed(0)
photos = tmp / "photos"
photos.mkdir()
for i in range(3):
    Image.fromarray((np.random.rand(40, 40, 3) * 255).astype("uint8")).save(photos / f"{i}.png")


def dinov2(folder):
    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=28,
            patch_size=14,
        )
    ).save_pretrained(folder)
    return folder


def rewrite(folder, change):
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    save_file(change(state), str(weights), metadata={"format": "pt"})


def timm_folder(folder):
    shape = dict(depth=2, num_classes=0, img_size=32)
    save_for_hf(
        timm.create_model("vit_tiny_patch16_224", pretrained=False, **shape),
        str(folder),
        model_args=shape,
        safe_serialization=True,
    )
    return folder


def dino_pth(path, change=lambda s: s):
    from tests.conftest import tiny_model
    from tests.harness.test_checkpoint import to_original_format

    torch.save(change(to_original_format(tiny_model(0, False, hidden=64, heads=1))), path)
    return path


cases = {}
f = dinov2(tmp / "missing")
rewrite(f, lambda s: {k: v for k, v in s.items() if "layer.1." not in k})
cases["HF folder: tensors missing"] = f
f = dinov2(tmp / "prefixed")
rewrite(f, lambda s: {"backbone." + k: v for k, v in s.items()})
cases["HF folder: keys under backbone."] = f
f = dinov2(tmp / "otherarch")
vit = ViTModel(
    ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=28,
        patch_size=14,
    ),
    add_pooling_layer=False,
).state_dict()
rewrite(f, lambda s: {k: v.contiguous() for k, v in vit.items()})
cases["HF folder: another architecture's keys"] = f
f = dinov2(tmp / "shape")
rewrite(f, lambda s: {**s, "encoder.layer.0.mlp.fc1.weight": torch.zeros(65, 32)})
cases["HF folder: a tensor of the wrong shape"] = f
f = dinov2(tmp / "truncated")
w = f / "model.safetensors"
w.write_bytes(w.read_bytes()[:200])
cases["HF folder: truncated model.safetensors"] = f
f = timm_folder(tmp / "timm_missing")
rewrite(f, lambda s: {k: v for k, v in s.items() if "blocks.1." not in k})
cases["timm folder: tensors missing"] = f
f = timm_folder(tmp / "timm_prefixed")
rewrite(f, lambda s: {"module." + k: v for k, v in s.items()})
cases["timm folder: keys under module."] = f
f = timm_folder(tmp / "timm_shape")
rewrite(f, lambda s: {**s, "blocks.0.mlp.fc1.weight": torch.zeros(7, 192)})
cases["timm folder: a tensor of the wrong shape"] = f
f = timm_folder(tmp / "timm_truncated")
w = f / "model.safetensors"
w.write_bytes(w.read_bytes()[:200])
cases["timm folder: truncated model.safetensors"] = f
try:
    cases[".pth: a tensor of the wrong shape"] = dino_pth(
        tmp / "shape.pth", lambda s: {**s, "blocks.0.attn.proj.weight": torch.zeros(64, 63)}
    )
    cases[".pth: tensors missing"] = dino_pth(
        tmp / "missing.pth", lambda s: {k: v for k, v in s.items() if not k.startswith("blocks.1.mlp.")}
    )
    cases[".pth: keys under module."] = dino_pth(
        tmp / "module.pth", lambda s: {"module." + k: v for k, v in s.items()}
    )
except ImportError as e:
    print("no .pth helper:", e)


rows = []
for name, path in cases.items():
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = evaluate.main(
                [
                    "--backbone",
                    str(path),
                    "--data",
                    "folder",
                    "--data-dir",
                    str(photos),
                    "--resolution",
                    "32" if "timm" in name else "28",
                    "--probe",
                    "norms",
                    "--num-workers",
                    "0",
                    "--output",
                    str(tmp / "out" / path.name),
                ]
            )
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
        first = lines[0] if lines else "(no error line)"
    except BaseException as error:
        code, first = (
            "traceback",
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
        )
    rows.append((name, code, first[:200]))
print("| case | exit | first line |\n|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} |")
