"""Accuracy measures shared by the tests, the harness and the gradient checks."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["rho", "rho_tree"]


def rho(x: Any, y: Any) -> float:
    """GradBench's relative error ``|x - y| / max(1, |x| + |y|)``, largest over elements.

    Example:
        >>> from diffkit.accuracy import rho
        >>> rho([1.0, 100.0], [1.0, 101.0])
        0.004975124378109453
        >>> rho([1 + 1j], [1 + 2j])  # complex: the distance in the complex plane
        0.2739514717088982
    """
    x, y = np.asarray(x), np.asarray(y)
    complex_ = np.iscomplexobj(x) or np.iscomplexobj(y)  # compare imaginary parts too
    x = x.astype(np.complex128 if complex_ else np.float64)
    y = y.astype(np.complex128 if complex_ else np.float64)
    if x.shape != y.shape:
        raise ValueError(f"rho: shapes differ, {x.shape} vs {y.shape}")
    return float(np.max(np.abs(x - y) / np.maximum(1.0, np.abs(x) + np.abs(y)), initial=0.0))


def rho_tree(x: Any, y: Any) -> float:
    """:func:`rho` over two pytrees of the same structure (largest over all leaves).

    Example:
        >>> from diffkit.accuracy import rho_tree
        >>> rho_tree({"a": 1.0, "b": [2.0]}, {"a": 1.0, "b": [2.0]})
        0.0
    """
    xs, x_tree = jax.tree_util.tree_flatten(x)
    ys, y_tree = jax.tree_util.tree_flatten(y)
    if x_tree != y_tree:  # type: ignore[operator]  # jaxlib ships no stub for PyTreeDef
        raise ValueError(f"rho_tree: structures differ, {x_tree} vs {y_tree}")
    return max((rho(a, b) for a, b in zip(xs, ys, strict=True)), default=0.0)
