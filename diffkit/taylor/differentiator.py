"""``taylor``: Taylor mode as a differentiator, ``jet`` and K-th directional derivatives.

Series follow :func:`jax.experimental.jet.jet`'s convention: ``series[k-1]`` is the k-th
*derivative* of the input path, ``x(t) = x_0 + sum_k series[k-1] t^k / k!``, and the output
series holds the derivatives of ``f(x(t))`` at ``t = 0``. Internally the interpreter carries
normalised coefficients (``x^(k)/k!``); the conversion is here, at the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from diffkit._core.errors import InputTypeError
from diffkit._core.interface import Differentiator
from diffkit._core.jaxpr import trace
from diffkit._core.registry import register
from diffkit._core.types import PyTree
from diffkit.taylor.interpreter import at
from diffkit.taylor.jets import Jet, coefficients

__all__ = ["TaylorMode", "derivatives", "directional", "jet"]


def _flat(f: Callable, primals: Sequence[PyTree]) -> tuple[Callable, Any, Any]:
    leaves, in_tree = jax.tree.flatten(tuple(primals))
    store: dict[str, Any] = {}

    def flat(*xs: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        out = f(*jax.tree.unflatten(in_tree, xs))
        outs, store["tree"] = jax.tree.flatten(out)
        return tuple(outs), ()

    return flat, leaves, store


def jet(
    f: Callable, primals: Sequence[PyTree], series: Sequence[Sequence[PyTree]]
) -> tuple[PyTree, PyTree]:
    """Taylor mode, mirroring :func:`jax.experimental.jet.jet`: ``f``'s output and the
    derivatives of ``f(x(t))`` along the path whose derivatives are ``series``.

    ``primals`` is a tuple of arguments (pytrees of float arrays); ``series`` holds one list
    per argument of its ``K`` derivative terms, each shaped like the argument. Returns
    ``(primal_out, series_out)``: ``series_out`` has ``f``'s output structure with a list of
    ``K`` derivatives at each leaf (a list, for a single array output).

    Example:
        >>> import jax.numpy as jnp
        >>> y, ys = jet(jnp.exp, (0.0,), ((1.0, 0.0, 0.0),))  # exp(t): every derivative is 1
        >>> float(y), [float(v) for v in ys]
        (1.0, [1.0, 1.0, 1.0])
    """
    if not isinstance(primals, tuple | list) or not isinstance(series, tuple | list):
        raise InputTypeError(
            "jet: primals and series must be tuples (one entry per argument of f), as in "
            "jax.experimental.jet.jet"
        )
    if len(primals) != len(series):
        raise InputTypeError(
            f"jet: {len(primals)} primals but {len(series)} series; give one list of terms "
            "per argument"
        )
    orders = {len(s) for s in series}
    if len(orders) != 1:
        raise InputTypeError(
            f"jet: every argument's series must have the same number of terms, got {sorted(orders)}"
        )
    K = orders.pop()
    flat, leaves, store = _flat(f, primals)
    leaves = [jnp.asarray(x) for x in leaves]
    term_leaves: list[Any] = []
    for p, s in zip(primals, series, strict=True):
        per = [jax.tree.leaves(t) for t in s]
        n = len(jax.tree.leaves(p))
        if any(len(t) != n for t in per):
            raise InputTypeError("jet: each series term must have its argument's structure")
        term_leaves.extend(zip(*per, strict=True) if per else [()] * n)
    for x, terms in zip(leaves, term_leaves, strict=True):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            raise InputTypeError(
                f"jet: primals must be floating point, got {x.dtype}; cast with .astype(float)"
            )
        for t in terms:
            if jnp.shape(t) != x.shape:
                raise InputTypeError(
                    f"jet: a series term has shape {jnp.shape(t)} where its primal has "
                    f"{x.shape}; each term must match its primal's shape"
                )
    traced = trace(flat, leaves)
    args = [
        Jet(x, [jnp.asarray(t, x.dtype) / math.factorial(k + 1) for k, t in enumerate(terms)])
        for x, terms in zip(leaves, term_leaves, strict=True)
    ]
    outs = at(K).run(traced.closed, args)[: traced.n_outs]
    ys, terms_out = [], []
    for o in outs:
        c = coefficients(o.primal if isinstance(o, Jet) else o, 0)[0], coefficients(o, K)[1:]
        ys.append(c[0])
        terms_out.append([v * math.factorial(k + 1) for k, v in enumerate(c[1])])
    tree = store["tree"]
    return jax.tree.unflatten(tree, ys), jax.tree.unflatten(tree, terms_out)


def derivatives(f: Callable, x: PyTree, v: PyTree, order: int) -> list[PyTree]:
    """The derivatives ``d^k/dt^k f(x + t v)`` at ``t = 0`` for ``k = 1 .. order``, from one
    jet of ``order`` terms (``(v, 0, ..., 0)``): ``O(order^2)``, where nesting ``jax.jvp``
    costs ``O(2^order)``.

    Example:
        >>> import jax.numpy as jnp
        >>> [float(d) for d in derivatives(jnp.sin, 0.0, 1.0, 4)]  # cos, -sin, -cos, sin at 0
        [1.0, 0.0, -1.0, 0.0]
    """
    if not isinstance(order, int) or order < 1:
        raise InputTypeError(f"derivatives: order must be a positive int, got {order!r}")
    zero = jax.tree.map(jnp.zeros_like, v)
    _, terms = jet(f, (x,), ([v] + [zero] * (order - 1),))
    leaves, tree = jax.tree.flatten(terms, is_leaf=lambda t: isinstance(t, list))
    return [jax.tree.unflatten(tree, [leaf[k] for leaf in leaves]) for k in range(order)]


def directional(f: Callable, x: PyTree, v: PyTree, order: int) -> PyTree:
    """The ``order``-th directional derivative ``d^K/dt^K f(x + t v)`` at ``t = 0``.

    Example:
        >>> import jax.numpy as jnp
        >>> float(directional(lambda x: jnp.sum(x**3), jnp.ones(2), jnp.ones(2), 3))
        12.0
    """
    return derivatives(f, x, v, order)[-1]


@register("taylor")
class TaylorMode(Differentiator):
    """Taylor mode by hand over the function's jaxpr (truncated Taylor polynomials of any
    order); as a differentiator it is forward mode of order 1, and :meth:`jet` /
    :meth:`directional` give the higher orders.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> t = dk.get("taylor")
        >>> y, ys = t.jet(jnp.sin, (0.5,), ((1.0, 0.0),))
        >>> round(float(ys[1]), 6)  # -sin(0.5)
        -0.479426
    """

    mode = "forward"
    native = frozenset({"jvp"})
    traced = True
    description = "hand-written Taylor mode (jets of any order) over the jaxpr; one rule column"

    def _jvp(self, fun: Any, primals: Any, tangents: Any) -> Any:
        args = [Jet(p, (t,)) for p, t in zip(primals, tangents, strict=True)]
        outs = at(1).run(fun.closed, args)
        n = fun.n_outs
        values = [o.primal if isinstance(o, Jet) else o for o in outs]
        dots = [coefficients(o, 1)[1] for o in outs[:n]]
        return tuple(values[:n]), tuple(dots), tuple(values[n:])

    @staticmethod
    def jet(
        f: Callable, primals: Sequence[PyTree], series: Sequence[Sequence[PyTree]]
    ) -> tuple[PyTree, PyTree]:
        """:func:`diffkit.taylor.jet`."""
        return jet(f, primals, series)

    @staticmethod
    def directional(f: Callable, x: PyTree, v: PyTree, order: int) -> PyTree:
        """:func:`diffkit.taylor.directional`."""
        return directional(f, x, v, order)

    @staticmethod
    def derivatives(f: Callable, x: PyTree, v: PyTree, order: int) -> list[PyTree]:
        """:func:`diffkit.taylor.derivatives`."""
        return derivatives(f, x, v, order)
