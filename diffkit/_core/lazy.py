"""Lazy re-exports for a package's ``__init__``: the names load on first use, so importing
the package (and its JAX-free modules, such as the sweep's worker) does not import JAX.

Example:
    >>> getattr_, dir_ = exports("diffkit", {"sqrt": "math"})
    >>> getattr_("sqrt")(4.0), getattr_("accuracy").__name__
    (2.0, 'diffkit.accuracy')
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any


def exports(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public ``names`` map to the
    module defining each (``"name": "pkg.module"``; the module is imported on first use;
    ``""`` names a submodule of ``package`` itself).
    A submodule not yet imported is imported on first use too (``dk.harness.memory``), as it
    would have been by an eager ``__init__``."""

    def __getattr__(name: str) -> Any:
        if name in names:
            if not names[name]:
                return importlib.import_module(f"{package}.{name}")
            return getattr(importlib.import_module(names[name]), name)
        if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}"):
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
