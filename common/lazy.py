"""Packages that import their parts on first use (PEP 562), so that importing one light part
(`probes.metrics`, the command-line options) does not import every model and Lightning."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], submodules: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package` (whose globals are `namespace`): each name of
    `submodules` (submodule -> the names exported from it) is imported from its submodule when first
    asked for, then kept in the package's namespace.

    >>> namespace = {"__all__": ["JSONDecoder"]}
    >>> getattr_, dir_ = lazy_exports("json", namespace, {"decoder": ("JSONDecoder",)})
    >>> getattr_("JSONDecoder").__name__, "JSONDecoder" in namespace, dir_()
    ('JSONDecoder', True, ['JSONDecoder', '__all__'])
    """
    exports = {name: module for module, names in submodules.items() for name in names}

    def exported(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def listed() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return exported, listed


def import_every_module(package: str, path: Iterable[str]) -> None:
    """Import every module of `package` (its `__path__` is `path`) but those named `_...`: the classes
    they define register themselves, so a new one is a file, nothing to list."""
    for module in pkgutil.iter_modules(path):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
