"""What `pip install` puts on the import path: our packages, console scripts, and no name that shadows
another distribution's top-level module (an installed `evaluate` would hide the `evaluate` library)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

DISTRIBUTION = "cls-decoupling"
REPO = Path(__file__).resolve().parents[1]


def installed_top_level_names() -> set[str]:
    """The top-level import names our installed distribution provides."""
    top_level = importlib.metadata.distribution(DISTRIBUTION).read_text("top_level.txt") or ""
    return {line.strip() for line in top_level.splitlines() if line.strip()}


def test_no_installed_top_level_module_is_named_after_a_script() -> None:
    names = installed_top_level_names()
    assert names == {"cls_decoupling", "common", "datamodules", "harness", "probes"}
    assert not names & {"evaluate", "train_probe"}


def test_every_package_of_the_repository_is_installed() -> None:
    """pyproject's explicit package list names every folder with an `__init__.py` (a missing one
    works in an editable install and breaks a wheel)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("cls_decoupling", "common", "datamodules", "harness", "probes")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert listed == found


def test_no_top_level_name_is_shared_with_another_distribution() -> None:
    providers = importlib.metadata.packages_distributions()
    for name in installed_top_level_names():
        others = {dist for dist in providers.get(name, []) if dist.replace("_", "-").lower() != DISTRIBUTION}
        assert not others, f"{name!r} is also installed by {sorted(others)}"


def test_outside_the_repository_evaluate_is_not_ours_and_the_commands_run(tmp_path: Path) -> None:
    """From another folder the root scripts are not importable; the console scripts are what runs."""
    probe = "import importlib.util, cls_decoupling; print(importlib.util.find_spec('evaluate'))"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == "None" or str(REPO) not in found.stdout
    for command in ("cls-evaluate", "cls-train-probe"):
        script = Path(sys.executable).parent / command
        assert script.is_file(), f"{command} is not installed next to {sys.executable}"
        result = subprocess.run(
            [str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0 and "--backbone" in result.stdout, result.stderr[-2000:]
