"""Print the project's import graph between layers and fail on a forbidden import or an import circle.

Usage, from anywhere (the repository root is found from this file's location)::

    python tools/import_graph.py            # group-level summary, then violations
    python tools/import_graph.py --modules  # module-level edges, then violations

Layering, bottom to top (a module belongs to the rule with the longest matching dotted prefix):

    layer 0  package  ``common`` (its ``__init__`` only; it must import nothing)
    layer 0  errors   ``common.errors``
    layer 0  hashing  ``common.hashing`` (seeded per-sample numbers)
    layer 0  lazy     ``common.lazy`` (packages that import their parts on first use)
    layer 0  preparation  ``common.preparation`` (how images are prepared: ``Preprocessing``)
    layer 0  run folders  ``common.run_folders`` (how a folder this tool wrote is recognised)
    layer 1  data     ``datamodules``
    layer 1  model    ``harness`` (the backbone, its taps and the decomposition)
    layer 1  metrics  ``probes.metrics``
    layer 2  extras   ``harness.extras`` (what a call computes besides the decomposition)
    layer 3  probes   ``probes``
    layer 4  outputs  ``cls_decoupling.outputs`` (and the ``cls_decoupling`` package, which imports nothing)
    layer 5  entry    ``cls_decoupling.cli``, ``evaluate``, ``train_probe``

A module may import its own group and any strictly lower layer; groups that share a layer number
but not a name (data, model, metrics) must not import each other. Only the project's own top-level
names count; stdlib and third-party imports are ignored. ``tests/``, ``bench/`` and ``tools/`` are
not scanned.

Every ``import`` statement in a file counts, wherever it sits: inside functions, and inside
``if TYPE_CHECKING:`` blocks too (simpler, and stricter than the runtime graph).

An import circle between modules (a imports b, which imports ... a), wherever it sits, is a
violation too, even inside one group: it means the two cannot be read, tested or replaced apart.

Exit status: 1 if there is any violation or circle, else 0.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository root (computed from this file, not from the working directory)."""

PACKAGES = ("common", "harness", "probes", "datamodules", "cls_decoupling")
"""Project package directories that are scanned."""

SCRIPTS = ("evaluate", "train_probe")
"""Project root scripts (``<name>.py``) that are scanned."""

PROJECT_NAMES = frozenset(PACKAGES + SCRIPTS)
"""Top-level names whose imports count; every other import is ignored."""

LAYERS: dict[str, tuple[int, str]] = {
    "common": (0, "package"),
    "common.errors": (0, "errors"),
    "common.hashing": (0, "hashing"),
    "common.lazy": (0, "lazy"),
    "common.preparation": (0, "preparation"),
    "common.run_folders": (0, "run_folders"),
    "datamodules": (1, "data"),
    "harness": (1, "model"),
    "probes.metrics": (1, "metrics"),
    "harness.extras": (2, "extras"),
    "probes": (3, "probes"),
    "cls_decoupling": (4, "outputs"),
    "cls_decoupling.outputs": (4, "outputs"),
    "cls_decoupling.cli": (5, "entry"),
    "evaluate": (5, "entry"),
    "train_probe": (5, "entry"),
}
"""Dotted prefix -> (layer, group). The longest matching prefix wins."""

EXACT_ONLY = frozenset({"common", "cls_decoupling"})
"""Prefixes that match only the module itself, never its submodules."""

UNASSIGNED = (-1, "unassigned")
"""What :func:`layer_of` returns for a project module that no rule covers."""

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    """The dotted module name of a ``.py`` file.

    Args:
        root: The repository root.
        path: A ``.py`` file under ``root``.

    Returns:
        E.g. ``probes.metrics`` for ``probes/metrics/__init__.py``, ``harness.module`` for
        ``harness/module.py``.
    """
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> Iterator[Path]:
    """Every scanned ``.py`` file of the project; missing folders and scripts are skipped.

    Args:
        root: The repository root.

    Yields:
        Paths of the package files (sorted, ``__pycache__`` excluded), then of the root scripts.
    """
    for package in PACKAGES:
        folder = root / package
        if folder.is_dir():
            yield from sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    for script in SCRIPTS:
        path = root / f"{script}.py"
        if path.is_file():
            yield path


def is_module(root: Path, dotted: str) -> bool:
    """Whether ``dotted`` names a module file or package folder under ``root``.

    Args:
        root: The repository root.
        dotted: A dotted module name.

    Returns:
        True if ``<path>.py`` or the folder ``<path>/`` exists.
    """
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def base_package(module: str, is_package: bool, level: int) -> str:
    """The package a relative import of the given level is relative to.

    Args:
        module: The dotted name of the importing module.
        is_package: Whether the importing module is a package ``__init__``.
        level: The number of leading dots of the import.

    Returns:
        The absolute dotted package name ("" if the import climbs above the top level).
    """
    parts = module.split(".") if is_package else module.split(".")[:-1]
    keep = len(parts) - (level - 1)
    return ".".join(parts[: max(keep, 0)])


def imported_names(tree: ast.AST, module: str, is_package: bool, root: Path) -> Iterator[str]:
    """Every absolute module name an AST imports, project or not.

    ``from pkg import name`` yields ``pkg.name`` if ``pkg/name.py`` or ``pkg/name/`` exists under
    ``root``, else ``pkg``.

    Args:
        tree: The parsed file.
        module: Its dotted module name (to resolve relative imports).
        is_package: Whether it is a package ``__init__``.
        root: The repository root.

    Yields:
        Dotted module names.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = base_package(module, is_package, node.level)
                base = ".".join(p for p in (package, base) if p)
            if not base:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if alias.name != "*" and is_module(root, candidate) else base


def is_project(module: str) -> bool:
    """Whether a dotted module name belongs to the project.

    Args:
        module: A dotted module name.

    Returns:
        True if its top-level name is one of :data:`PROJECT_NAMES`.
    """
    return module.split(".")[0] in PROJECT_NAMES


def collect_imports(root: Path) -> Graph:
    """The project's module-level import graph.

    Args:
        root: The repository root (the folder holding ``harness/``, ``probes/``, ...).

    Returns:
        Every scanned module (even one importing nothing) -> the project modules it imports,
        itself excluded.
    """
    graph: Graph = {}
    for path in source_files(root):
        module = module_name(root, path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = imported_names(tree, module, path.name == "__init__.py", root)
        graph[module] = {name for name in names if is_project(name) and name != module}
    return graph


def layer_of(module: str) -> tuple[int, str]:
    """The layer and group of a project module.

    Args:
        module: A dotted module name.

    Returns:
        ``(layer, group)`` of the longest matching prefix in :data:`LAYERS`, or
        :data:`UNASSIGNED` if none matches.

    Examples:
        >>> layer_of("probes.metrics.cka")
        (1, 'metrics')
        >>> layer_of("probes.cka")
        (3, 'probes')
    """
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in LAYERS and (size == len(parts) or prefix not in EXACT_ONLY):
            return LAYERS[prefix]
    return UNASSIGNED


def allowed(source: tuple[int, str], target: tuple[int, str]) -> bool:
    """Whether a module of one (layer, group) may import a module of another.

    Args:
        source: ``(layer, group)`` of the importing module.
        target: ``(layer, group)`` of the imported module.

    Returns:
        True for the same group or a strictly lower layer; unassigned modules are never allowed.
    """
    if UNASSIGNED in (source, target):
        return False
    return source[1] == target[1] or target[0] < source[0]


def violations(graph: Graph) -> list[str]:
    """Every forbidden import of a graph, one readable line each.

    Args:
        graph: Module -> imported project modules, as from :func:`collect_imports`.

    Returns:
        Sorted lines ``VIOLATION: a imports b (layer X group G -> layer Y group H)``; empty if
        the graph respects the layering.
    """
    found = []
    for source, targets in graph.items():
        for target in targets:
            src, dst = layer_of(source), layer_of(target)
            if not allowed(src, dst):
                found.append(
                    f"VIOLATION: {source} imports {target} "
                    f"(layer {src[0]} group {src[1]} -> layer {dst[0]} group {dst[1]})"
                )
    return sorted(found)


def circles(graph: Graph) -> list[str]:
    """Every import circle of a graph, one readable line each: the strongly connected components of
    more than one module (Tarjan's algorithm, iterative), each listed from its smallest name.

    Args:
        graph: Module -> imported project modules, as from :func:`collect_imports`.

    Returns:
        Sorted lines ``CIRCLE: a -> b -> a``; empty if the graph has none.

    Examples:
        >>> circles({"a": {"b"}, "b": {"a", "c"}, "c": set()})
        ['CIRCLE: a <-> b']
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[str] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append("CIRCLE: " + " <-> ".join(sorted(component)))
    return sorted(found)


def edge_key(source: str, target: str) -> tuple[int, str, int, str, str, str]:
    """Sort key of an edge: by source layer and group, then target layer and group, then names."""
    src, dst = layer_of(source), layer_of(target)
    return (src[0], src[1], dst[0], dst[1], source, target)


def module_lines(graph: Graph) -> list[str]:
    """One ``a -> b`` line per module-level edge, sorted by layer.

    Args:
        graph: Module -> imported project modules.

    Returns:
        The lines.
    """
    edges = [(s, t) for s, targets in graph.items() for t in targets]
    return [f"{s} -> {t}" for s, t in sorted(edges, key=lambda e: edge_key(*e))]


def group_lines(graph: Graph) -> list[str]:
    """One ``source_group -> target_group  (N imports)`` line per pair of groups, sorted by layer.

    Args:
        graph: Module -> imported project modules; N counts distinct module-level edges.

    Returns:
        The lines.
    """
    counts: Counter[tuple[tuple[int, str], tuple[int, str]]] = Counter(
        (layer_of(s), layer_of(t)) for s, targets in graph.items() for t in targets
    )
    return [f"{src[1]} -> {dst[1]}  ({n} imports)" for (src, dst), n in sorted(counts.items())]


def main(argv: list[str] | None = None) -> int:
    """Print the import graph and its violations.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 1 if any violation or circle, else 0.
    """
    parser = argparse.ArgumentParser(
        description="Print the import graph between layers; fail on a forbidden import or a circle."
    )
    parser.add_argument("--modules", action="store_true", help="print module-level edges")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (default: %(default)s)")
    args = parser.parse_args(argv)
    graph = collect_imports(args.root)
    found = violations(graph) + circles(graph)
    lines = module_lines(graph) if args.modules else group_lines(graph)
    print("\n".join([*lines, *found]))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
