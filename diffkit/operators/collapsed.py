"""Collapsed Taylor mode (Dangel, Siebert, Zeinhofer, Walther, 2025): propagate ``R`` jets
of order ``K`` that share their primal, keeping their coefficients ``1 .. K-1`` per direction
and only the weighted *sum* of their top coefficients, ``sum_r w_r y_K^(r)``.

A linear operator (Laplacian, weighted traces, the biharmonic by polarisation) needs only that
sum, and the sum obeys its own rule: ``[y_K]`` is linear in ``x_K`` (``J(x_0) x_K``, the
first-order row) plus a polynomial in the lower coefficients, so
``top_y = J(x_0) top_x + sum_r w_r N(x_0, x_1^(r), .., x_(K-1)^(r))``. Linear rows
(``dot_general`` with a constant factor, reshapes, sums) map the one summed vector, not ``R``
of them -- which is where the saving comes from. For ``K = 2`` this is the forward Laplacian
(Li et al. 2023; the folx library): value, ``R`` first-order coefficients (the Jacobian) and
the summed second-order coefficient.

The per-direction part reuses Taylor mode's rules (:mod:`diffkit.taylor.rules`), ``jax.vmap``
over the directions. Control flow (``cond``, ``scan``, ``while``) and custom rules
(``custom_jvp``, ``custom_linear_solve``) run Taylor mode's own handlers per direction and
are collapsed at their outputs (exact, without the saving inside them); a primitive Taylor
mode refuses is refused in one line.

Example:
    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x**3)
    >>> x = jnp.array([1.0, 2.0])
    >>> top = collapsed(f, x, jnp.eye(2), order=2)  # sum_i y_2 = sum_i f_ii / 2
    >>> float(2 * top)  # the Laplacian 6 x_1 + 6 x_2
    18.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.jaxpr import (
    CUSTOM,
    evaluate,
    inner_jaxpr,
    interpret,
    is_float,
    placed,
    user_site,
)
from diffkit.rules.table import RULES
from diffkit.taylor.interpreter import at
from diffkit.taylor.jets import Jet, coefficients
from diffkit.taylor.rules import how

__all__ = ["Collapsed", "collapsed"]


@jax.tree_util.register_pytree_node_class
class Collapsed:
    """A collapsed jet: the shared primal, the lower coefficients ``1 .. K-1`` with a
    leading axis of ``R`` directions, and the weighted sum of the top coefficients."""

    __slots__ = ("lower", "primal", "top")

    def __init__(self, primal: Any, lower: Sequence[Any], top: Any) -> None:
        self.primal = primal
        self.lower = tuple(lower)
        self.top = top

    def tree_flatten(self) -> tuple[tuple[Any, ...], int]:
        return (self.primal, *self.lower, self.top), len(self.lower)

    @classmethod
    def tree_unflatten(cls, n: int, children: Sequence[Any]) -> Collapsed:
        return cls(children[0], children[1 : 1 + n], children[1 + n])


def _primal(v: Any) -> Any:
    return v.primal if isinstance(v, Collapsed) else v


class _Collapse:
    """One run: order ``K``, ``R`` directions with weights ``w``."""

    def __init__(self, order: int, weights: Any) -> None:
        self.K = order
        self.w = weights

    def run(self, closed: Any, args: Sequence[Any]) -> list[Any]:
        return interpret(closed, args, self.handle)

    def handle(self, eqn: Any, invals: list[Any]) -> list[Any]:
        if not any(isinstance(v, Collapsed) for v in invals):
            return evaluate(eqn, invals)
        inner = inner_jaxpr(eqn)
        if inner is not None:
            return self.run(placed(eqn, inner), invals)
        name = eqn.primitive.name
        xs = [_primal(v) for v in invals]
        if not any(is_float(v.aval) for v in eqn.outvars):
            return evaluate(eqn, xs)
        if name in CUSTOM or name in ("cond", "while", "scan"):
            # control flow and custom rules: one full jet per direction (Taylor mode's own
            # handlers), collapsed at the outputs
            return self._general(eqn, invals, xs)
        try:
            kind = how(name)
        except UnsupportedPrimitiveError as error:
            raise UnsupportedPrimitiveError(
                f"collapsed Taylor mode: {str(error).removeprefix('taylor: ')} "
                f"(at {user_site(eqn)})"
            ) from None
        row = RULES.get(name)
        expand = getattr(row, "expand", None)
        if expand is not None:
            program = jax.make_jaxpr(lambda *a: expand(*a, **eqn.params))(*xs)
            return self.run(program, invals)
        if kind == "zero":
            return evaluate(eqn, xs)
        if kind == "coefficient-wise" or (
            kind == "bilinear" and sum(isinstance(v, Collapsed) for v in invals) == 1
        ):
            return self._linear(eqn, invals, xs)
        return self._general(eqn, invals, xs)

    def _linear(self, eqn: Any, invals: list[Any], xs: list[Any]) -> list[Any]:
        """A row linear in its active input(s): each coefficient by the row, alone."""
        tm = at(1)

        def one(coeffs: list[Any]) -> list[Any]:
            jets = [
                Jet(x, (c,)) if isinstance(v, Collapsed) else x
                for v, x, c in zip(invals, xs, coeffs, strict=True)
            ]
            outs = tm.handle(eqn, jets)
            return [
                coefficients(o, 1)[1] if is_float(v.aval) else None
                for v, o in zip(eqn.outvars, outs, strict=True)
            ]

        outs = evaluate(eqn, xs)
        lower = [
            jax.vmap(one)([v.lower[k] if isinstance(v, Collapsed) else None for v in invals])
            for k in range(self.K - 1)
        ]
        top = one([v.top if isinstance(v, Collapsed) else None for v in invals])
        return self._join(eqn, outs, lower, top)

    def _general(self, eqn: Any, invals: list[Any], xs: list[Any]) -> list[Any]:
        """Per direction, the full Taylor rule with the top coefficient 0; then the weighted
        sum of the top coefficients, plus the linear term ``J(x_0) top_x``."""
        K = self.K
        tm = at(K)

        def per_direction(lowers: list[Any]) -> list[Any]:
            jets = [
                Jet(x, (*lo, jnp.zeros_like(x))) if isinstance(v, Collapsed) else x
                for v, x, lo in zip(invals, xs, lowers, strict=True)
            ]
            outs = tm.handle(eqn, jets)
            return [
                coefficients(o, K)[1:] if is_float(v.aval) else None
                for v, o in zip(eqn.outvars, outs, strict=True)
            ]

        lowers = [list(v.lower) if isinstance(v, Collapsed) else None for v in invals]
        per = jax.vmap(per_direction)(lowers)
        outs = evaluate(eqn, xs)
        first = at(1)
        jets = [
            Jet(x, (v.top,)) if isinstance(v, Collapsed) else x
            for v, x in zip(invals, xs, strict=True)
        ]
        linear = [
            coefficients(o, 1)[1] if is_float(v.aval) else None
            for v, o in zip(eqn.outvars, first.handle(eqn, jets), strict=True)
        ]
        lower_out: list[Any] = []
        top_out: list[Any] = []
        for p, lin in zip(per, linear, strict=True):
            if p is None:
                lower_out.append(None)
                top_out.append(None)
                continue
            lower_out.append(p[: K - 1])
            summed = jnp.tensordot(self.w.astype(p[K - 1].dtype), p[K - 1], 1)
            top_out.append(summed if lin is None else summed + lin)
        lower = [[lo[k] if lo is not None else None for lo in lower_out] for k in range(K - 1)]
        return self._join(eqn, outs, lower, top_out)

    def _join(self, eqn: Any, outs: list[Any], lower: list[list[Any]], top: list[Any]) -> list:
        result = []
        for i, (v, y) in enumerate(zip(eqn.outvars, outs, strict=True)):
            if not is_float(v.aval) or top[i] is None:
                result.append(y)
                continue
            result.append(Collapsed(y, [lower[k][i] for k in range(self.K - 1)], top[i]))
        return result


def collapsed(
    f: Callable[[Any], Any],
    x: Any,
    directions: Any,
    *,
    order: int = 2,
    weights: Any = None,
    top: Any = None,
) -> Any:
    """``sum_r w_r y_K^(r)``: the weighted sum of the normalised top coefficients of the jets
    of ``f`` along ``x + t v_r`` (rows of ``directions``, shape ``(R, *x.shape)``); ``top``
    (default 0) is the summed top coefficient of the input.

    Example:
        >>> import jax.numpy as jnp
        >>> float(collapsed(jnp.sin, 0.0, jnp.ones((1,)), order=3))  # sin(t): -1/6 t^3
        -0.16666...
    """
    x = jnp.asarray(x)
    v = jnp.asarray(directions, x.dtype)
    R = v.shape[0]
    w = jnp.ones((R,), x.dtype) if weights is None else jnp.asarray(weights, x.dtype)
    lower = [v] + [jnp.zeros_like(v)] * (order - 2)
    start = Collapsed(x, lower, jnp.zeros_like(x) if top is None else top)
    closed = jax.make_jaxpr(f)(x)
    (out,) = _Collapse(order, w).run(closed, [start])
    if not isinstance(out, Collapsed):
        return jnp.zeros_like(out)
    return out.top
