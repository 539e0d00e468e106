"""What a fresh interpreter has imported after a few statements (for the start-up tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HEAVY = frozenset({"torch", "lightning", "pytorch_lightning", "transformers", "timm", "datasets"})
"""The libraries that make a start slow (seconds each): torch, Lightning, the model libraries,
Hugging Face datasets (only `--data hf` imports it)."""


def modules_after(statements: str, expected_exit: int | None = None) -> set[str]:
    """Every module in `sys.modules` of a fresh interpreter (run in the repository root) once
    `statements` ran; with `expected_exit`, they must end in `SystemExit` with that status (a
    command's `--help` or option error)."""
    code = "\n".join(
        [
            "import json, sys",
            "try:",
            *(f"    {line}" for line in statements.splitlines()),
            "except SystemExit as stop:",
            "    status = stop.code",
            "else:",
            "    status = None",
            "print()",
            "print(json.dumps({'status': status, 'modules': sorted(sys.modules)}))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == expected_exit, (report["status"], result.stderr[-2000:])
    return set(report["modules"])
