"""The commands start fast: their options are parsed, and `--help` or an option error answered,
before torch, Lightning or a model library is imported; the packages import their parts on first use
(PEP 562), exporting the same names as before."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.fresh import HEAVY, modules_after

PACKAGES = ("harness", "probes", "datamodules")


@pytest.mark.parametrize(
    ("script", "arguments", "status"),
    [
        ("evaluate.py", ["--help"], 0),
        ("evaluate.py", ["--batch-size", "x", "--output", "run"], 2),
        ("evaluate.py", ["--probe", "cka"], 2),  # no --output
        ("train_probe.py", ["--help"], 0),
        ("train_probe.py", ["--learning-rates", "fast", "--output", "head.pt"], 2),
    ],
)
def test_help_and_option_errors_import_no_heavy_library(
    script: str, arguments: list[str], status: int
) -> None:
    statements = (
        f"import runpy\nsys.argv = {[script, *arguments]!r}\nrunpy.run_path({script!r}, run_name='__main__')"
    )
    assert not modules_after(statements, expected_exit=status) & HEAVY


def test_the_packages_alone_import_no_heavy_library() -> None:
    modules = modules_after("import " + ", ".join(PACKAGES) + ", cls_decoupling.cli.options")
    assert not modules & HEAVY
    assert (
        not {name for name in modules if name.split(".")[0] in PACKAGES}
        - set(PACKAGES)
        - {
            "datamodules.choices",
            "harness.choices",
        }
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_comes_from_its_submodule(package: str) -> None:
    module = importlib.import_module(package)
    exports = {name: submodule for submodule, names in module._SUBMODULES.items() for name in names}
    assert sorted(exports) == sorted(module.__all__)
    for name, submodule in exports.items():
        assert getattr(module, name) is getattr(importlib.import_module(f"{package}.{submodule}"), name)
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        module.nothing  # noqa: B018


def test_the_help_names_the_features_file_and_a_wrong_probe_lists_them_all(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The light `--help` spells out what the outputs define; the probe names come from the registry
    (no list to keep by hand), in the one-line error of a wrong `--probe`."""
    from cls_decoupling.cli import evaluate
    from cls_decoupling.outputs.runs import FEATURES_FILE
    from probes import PROBES

    with pytest.raises(SystemExit):
        evaluate.parse_args(["--help"])
    assert FEATURES_FILE in " ".join(capsys.readouterr().out.split())
    assert (
        evaluate.main(["--backbone", "random:tiny", "--probe", "nope", "--output", str(tmp_path / "x")]) == 2
    )
    assert f"choose from {', '.join(PROBES)} or 'all'" in capsys.readouterr().err


def test_the_light_choices_are_the_ones_the_checks_use() -> None:
    from datamodules import datamodule
    from datamodules.choices import DATA_SOURCES
    from harness import loading
    from harness.choices import POS_INTERPOLATIONS

    assert datamodule.DATA_SOURCES is DATA_SOURCES
    assert loading.POS_INTERPOLATIONS is POS_INTERPOLATIONS


def test_importing_the_probes_leaves_a_notebooks_matplotlib_backend_alone() -> None:
    """The probes draw on plain `Figure`s: importing them (every probe module, through the registry)
    chooses no backend, so a notebook's inline backend stays."""
    import subprocess
    import sys

    code = "import matplotlib; matplotlib.use('pdf'); import probes.registry; print(matplotlib.get_backend())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "pdf"
