"""The value of Taylor mode: a jet, a primal and its truncated Taylor coefficients.

Example:
    >>> import jax.numpy as jnp
    >>> j = Jet(jnp.array(1.0), (jnp.array(2.0), jnp.array(0.0)))
    >>> j.order, [float(c) for c in j.series()]
    (2, [1.0, 2.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Jet", "coefficients", "make", "series_of"]


@jax.tree_util.register_pytree_node_class
class Jet:
    """``primal + sum_k coeffs[k-1] t^k``: normalised Taylor coefficients (``x^(k)(0)/k!``)
    of a path through the value, to order ``len(coeffs)``. A pytree, so it crosses
    ``jax.vmap``, ``lax.scan`` and ``lax.cond`` as its arrays."""

    __slots__ = ("coeffs", "primal")

    def __init__(self, primal: Any, coeffs: Sequence[Any]) -> None:
        self.primal = primal
        self.coeffs = tuple(coeffs)

    @property
    def order(self) -> int:
        return len(self.coeffs)

    def series(self) -> list[Any]:
        """``[x_0, x_1, ..., x_K]``."""
        return [self.primal, *self.coeffs]

    def __repr__(self) -> str:
        return f"Jet(primal={self.primal!r}, coeffs={self.coeffs!r})"

    def tree_flatten(self) -> tuple[tuple[Any, ...], None]:
        return (self.primal, *self.coeffs), None

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Sequence[Any]) -> Jet:
        return cls(children[0], tuple(children[1:]))


def series_of(v: Any, order: int) -> list[Any]:
    """A value's series to ``order``: a jet's coefficients, a constant's with ``None`` (zero)
    above the primal."""
    if isinstance(v, Jet):
        return v.series()
    return [v] + [None] * order


def coefficients(v: Any, order: int) -> list[Any]:
    """``[x_0 .. x_K]`` with zeros (not ``None``) for a constant's higher coefficients."""
    if isinstance(v, Jet):
        return v.series()
    return [v] + [jnp.zeros_like(v)] * order


def make(like: Any, ys: Sequence[Any]) -> Any:
    """A jet from a series (``None`` entries become zeros shaped and typed like the primal
    ``like``); the plain primal when every higher coefficient is ``None``."""
    primal = ys[0] if ys[0] is not None else like
    if all(y is None for y in ys[1:]) and len(ys) > 1:
        return primal
    dtype = jnp.result_type(like)
    shape = jnp.shape(like)
    out = [
        jnp.zeros(shape, dtype) if y is None else jnp.broadcast_to(y, shape).astype(dtype)
        for y in ys[1:]
    ]
    return Jet(primal, out)
