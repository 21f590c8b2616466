"""Taylor mode as the third interpreter over the jaxpr: jets in, jets out.

The dispatch is :class:`diffkit._core.jaxpr.Interpreter`'s, shared with dual and tape: an
equation with no jet among its inputs is evaluated, calls are inlined, expansion rows run
their program, and every other row goes to its Taylor rule (:mod:`diffkit.taylor.rules`).
Control flow carries jets as dual carries dual numbers, by the same handlers
(:mod:`diffkit._core.forward_control`): ``cond`` switches over the branches' jet evaluations,
``scan`` and ``while_loop`` carry every coefficient together.

Custom rules are part of the program's meaning:

* ``custom_jvp`` -- the library's JVP rule is taken as the derivative along the whole path,
  ``y'(t) = rule(x(t), x'(t))``, and Taylor mode of order ``K - 1`` runs over the rule's own
  jaxpr (the path rule). This is exactly what nesting ``jax.jvp`` computes; it is not what
  ``jax.experimental.jet`` computes (jet differentiates the primal body, ignoring the rule):
  the two agree where the rule is the plain derivative of the body;
* ``custom_vjp`` -- refused in one line (a reverse-mode rule only; JAX's forward mode
  refuses too);
* ``custom_linear_solve`` -- ``A(t) x(t) = b(t)`` order by order:
  ``x_k = A_0^-1 (b_k - [A(t) x_(<k)(t)]_k)``, the solve itself applied to each right-hand side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from diffkit._core import forward_control
from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.jaxpr import (
    custom_jvp_rule,
    evaluate,
    interpret,
    is_float,
    split_solve,
    symbolic_zeros,
    user_site,
    zero_tangent,
)
from diffkit.rules.table import REFUSED, RULES
from diffkit.taylor import rules as column
from diffkit.taylor.jets import Jet, coefficients

__all__ = ["TaylorInterpreter", "at"]


def _primal(v: Any) -> Any:
    return v.primal if isinstance(v, Jet) else v


def _active(values: Sequence[Any]) -> list[bool]:
    return [isinstance(v, Jet) for v in values]


class TaylorInterpreter(forward_control.ForwardInterpreter):
    """Taylor mode of order ``order``: values that depend on the inputs are :class:`Jet`."""

    who = "taylor"
    rules = RULES
    refused: Mapping[str, str] = {**REFUSED, **column.REFUSED_TAYLOR}

    def __init__(self, order: int) -> None:
        self.order = order

    def at(self, order: int) -> TaylorInterpreter:
        """The interpreter of another order (the path rule's lower orders)."""
        return at(order)

    def active(self, v: Any) -> bool:
        return isinstance(v, Jet)

    def primal(self, v: Any) -> Any:
        return _primal(v)

    def apply(self, eqn: Any, invals: list[Any], xs: list[Any], rule: Any) -> list[Any]:
        return column.apply(self, eqn, invals, xs, rule)

    def foreign(self, eqn: Any, invals: list[Any], xs: list[Any], site: Any) -> list[Any]:
        return column.foreign(self, eqn, invals, xs)

    def promote(self, v: Any) -> Any:
        """``v`` as a jet (zero coefficients for a constant)."""
        if isinstance(v, Jet):
            return v
        return Jet(v, [jnp.zeros_like(v)] * self.order)

    def pack(self, values: Sequence[Any], mask: Sequence[bool]) -> list[Any]:
        """Jets where ``mask`` is set (promoted if plain), primals elsewhere: a jet is itself
        a pytree, so the list crosses ``lax.scan`` and ``lax.while_loop`` as it is."""
        return [self.promote(v) if m else _primal(v) for v, m in zip(values, mask, strict=True)]

    def unpack(self, tree: Any, mask: Sequence[bool]) -> list[Any]:
        """The values :meth:`pack` made: the list itself."""
        return list(tree)


_INTERPRETERS: dict[int, TaylorInterpreter] = {}


def at(order: int) -> TaylorInterpreter:
    """The Taylor interpreter of ``order`` (one per order, made on first use)."""
    if order not in _INTERPRETERS:
        _INTERPRETERS[order] = TaylorInterpreter(order)
    return _INTERPRETERS[order]


# ------------------------------------------------------------ custom rules


def _custom_jvp(tm: TaylorInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    """The path rule over the library's JVP rule: ``y' = rule(x, x')`` at every order."""
    nc = eqn.params["num_consts"]
    rest = invals[nc:]
    zeros = symbolic_zeros(eqn, _active(invals))
    rule, out_zeros = custom_jvp_rule(eqn, zeros)
    n = len(eqn.outvars)
    xs = [_primal(v) for v in invals]
    K = tm.order
    if K == 0:
        return [Jet(y, ()) if is_float(y) else y for y in evaluate(eqn, xs)]
    ys = evaluate(eqn, xs)
    if K == 1:
        args_x: list[Any] = [_primal(v) for v in rest]
        dots: list[Any] = [
            v.coeffs[0] if isinstance(v, Jet) else zero_tangent(v)
            for v, z in zip(rest, zeros, strict=True)
            if not z
        ]
        outs = interpret(rule, [*args_x, *dots], evaluate)
    else:
        lower = tm.at(K - 1)
        args_x = [Jet(v.primal, v.coeffs[: K - 1]) if isinstance(v, Jet) else v for v in rest]
        dots = [
            Jet(v.coeffs[0], [(k + 1) * c for k, c in enumerate(v.coeffs[1:], 1)])
            if isinstance(v, Jet)
            else zero_tangent(v)
            for v, z in zip(rest, zeros, strict=True)
            if not z
        ]
        outs = lower.run(rule, [*args_x, *dots], site)
    given = iter(outs[n:])
    result = []
    for y, z in zip(ys, out_zeros, strict=True):
        t = None if z else next(given)
        if t is None or not is_float(y):
            result.append(y)
            continue
        p = coefficients(t, K - 1)
        result.append(Jet(y, [(c / (k + 1)).astype(jnp.result_type(y)) for k, c in enumerate(p)]))
    return result


def _custom_vjp(tm: TaylorInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    raise UnsupportedPrimitiveError(
        f"taylor: a custom_vjp function (at {user_site(eqn, site)}) defines only a reverse-mode "
        "rule, which Taylor mode cannot use (JAX's forward mode refuses too); use jax-rev or "
        "tape, or define the function with jax.custom_jvp"
    )


def _linear_solve(tm: TaylorInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    """``A(t) x(t) = b(t)``: ``x_k = A_0^-1 (b_k - [A(t) x_(<k)(t)]_k)``."""
    K = tm.order
    xs = [_primal(v) for v in invals]
    (matvec, *_), b = split_solve(invals, eqn)
    nb = len(b)
    x0 = evaluate(eqn, xs)
    if K == 0:
        return [Jet(y, ()) for y in x0[:nb]] + x0[nb:]
    head = xs[: len(xs) - nb]
    bs = [coefficients(v, K) for v in b]
    xk: list[list[Any]] = [[y] for y in x0[:nb]]
    varying = any(isinstance(v, Jet) for v in matvec)
    for k in range(1, K + 1):
        rhs = [s[k] for s in bs]
        if varying:
            ahead = at(k)
            xjets = [Jet(c[0], [*c[1:], jnp.zeros_like(c[0])]) for c in xk]
            mjets = [Jet(v.primal, v.coeffs[:k]) if isinstance(v, Jet) else v for v in matvec]
            r = ahead.run(eqn.params["jaxprs"].matvec, [*mjets, *xjets], site)
            rhs = [h - coefficients(t, k)[k] for h, t in zip(rhs, r, strict=True)]
        sol = evaluate(eqn, [*head, *rhs])
        for c, s in zip(xk, sol[:nb], strict=True):
            c.append(s)
    return [Jet(c[0], c[1:]) for c in xk] + x0[nb:]


TaylorInterpreter.special = {
    **forward_control.CONTROL_FLOW,
    "custom_jvp_call": _custom_jvp,
    "custom_vjp_call": _custom_vjp,
    "custom_linear_solve": _linear_solve,
}
