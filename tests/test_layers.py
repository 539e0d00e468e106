"""The project's packages import only downward (see ``tools/import_graph.py`` for the layering)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_import_graph() -> ModuleType:
    """Import ``tools/import_graph.py`` by path (``tools/`` is not a package)."""
    name = "_tools_import_graph"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


import_graph = _load_import_graph()


def _tree(root: Path, files: dict[str, str]) -> Path:
    """Write a fake source tree: relative path -> file content."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


def _violations(root: Path) -> list[str]:
    return import_graph.violations(import_graph.collect_imports(root))


def test_repo_imports_only_downward() -> None:
    found = _violations(REPO)
    assert found == [], "forbidden imports (run `python tools/import_graph.py`):\n" + "\n".join(found)


def test_repo_has_no_import_circle() -> None:
    found = import_graph.circles(import_graph.collect_imports(REPO))
    assert found == [], "import circles (run `python tools/import_graph.py`):\n" + "\n".join(found)


def test_upward_import_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/x.py": "from probes.base import Probe\n",
            "probes/__init__.py": "",
            "probes/base.py": "class Probe: ...\n",
        },
    )
    assert import_graph.collect_imports(root)["harness.x"] == {"probes.base"}
    assert _violations(root) == [
        "VIOLATION: harness.x imports probes.base (layer 1 group model -> layer 3 group probes)"
    ]


def test_sideways_import_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "datamodules/__init__.py": "",
            "datamodules/a.py": "import harness\n",
            "harness/__init__.py": "",
        },
    )
    assert _violations(root) == [
        "VIOLATION: datamodules.a imports harness (layer 1 group data -> layer 1 group model)"
    ]


def test_probes_may_import_metrics_but_not_the_reverse(tmp_path: Path) -> None:
    files = {
        "probes/__init__.py": "",
        "probes/base.py": "class Probe: ...\n",
        "probes/cka.py": "from .metrics.cka import CKA\nfrom probes.base import Probe\n",
        "probes/metrics/__init__.py": "",
        "probes/metrics/cka.py": "class CKA: ...\n",
    }
    assert _violations(_tree(tmp_path / "ok", files)) == []

    files["probes/metrics/cka.py"] = "from ..base import Probe\n"
    assert _violations(_tree(tmp_path / "bad", files)) == [
        "VIOLATION: probes.metrics.cka imports probes.base (layer 1 group metrics -> layer 3 group probes)"
    ]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("common", (0, "package")),
        ("common.errors", (0, "errors")),
        ("datamodules.coco", (1, "data")),
        ("harness", (1, "model")),
        ("harness.backbone", (1, "model")),
        ("harness.extras.deletion", (2, "extras")),
        ("probes.metrics", (1, "metrics")),
        ("probes.metrics.cka", (1, "metrics")),
        ("probes.cka", (3, "probes")),
        ("cls_decoupling", (4, "outputs")),
        ("cls_decoupling.outputs.figures", (4, "outputs")),
        ("cls_decoupling.cli.evaluate", (5, "entry")),
        ("train_probe", (5, "entry")),
        ("common.elsewhere", (-1, "unassigned")),
        ("cls_decoupling.elsewhere", (-1, "unassigned")),
    ],
)
def test_layer_of(module: str, expected: tuple[int, str]) -> None:
    assert import_graph.layer_of(module) == expected


def test_package_init_must_import_nothing(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {"common/__init__.py": "from . import errors\n", "common/errors.py": ""},
    )
    assert _violations(root) == [
        "VIOLATION: common imports common.errors (layer 0 group package -> layer 0 group errors)"
    ]


def test_the_core_may_not_import_an_extra(tmp_path: Path) -> None:
    """The backbone knows taps and the capture, never the extras that plug into it."""
    root = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/backbone.py": "from harness.extras.deletion import Deletion\n",
            "harness/extras/__init__.py": "",
            "harness/extras/deletion.py": "from harness.backbone import DecomposingBackbone\n",
        },
    )
    assert _violations(root) == [
        "VIOLATION: harness.backbone imports harness.extras.deletion "
        "(layer 1 group model -> layer 2 group extras)"
    ]


def test_an_import_circle_is_caught_even_inside_one_group(tmp_path: Path) -> None:
    """Two modules that import each other (here under TYPE_CHECKING) are one circle, whatever their
    layers allow; a chain that does not come back is none."""
    root = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/a.py": "from harness.b import B\n",
            "harness/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from harness.c import C\n",
            "harness/c.py": "import harness.a\n",
            "harness/d.py": "import harness.a\n",
        },
    )
    graph = import_graph.collect_imports(root)
    assert import_graph.violations(graph) == []
    assert import_graph.circles(graph) == ["CIRCLE: harness.a <-> harness.b <-> harness.c"]
    assert import_graph.main(["--root", str(root)]) == 1
