"""Lazy re-exports for a package's ``__init__``: the names load on first use, so importing
the package (and its JAX-free modules, such as the sweep's worker) does not import JAX.

Example:
    >>> getattr_, dir_ = exports("pkg", {"sqrt": "math"})
    >>> getattr_("sqrt")(4.0)
    2.0
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public ``names`` map to the
    module defining each (``"name": "pkg.module"``; the module is imported on first use)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
