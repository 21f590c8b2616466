"""Taylor mode as the third interpreter over the jaxpr: jets in, jets out.

The dispatch is :class:`diffkit._core.jaxpr.Interpreter`'s, shared with dual and tape: an
equation with no jet among its inputs is evaluated, calls are inlined, expansion rows run
their program, and every other row goes to its Taylor rule (:mod:`diffkit.taylor.rules`).
Control flow carries jets as dual carries dual numbers: ``cond`` switches over the branches'
jet evaluations, ``scan`` and ``while_loop`` carry every coefficient together.

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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.jaxpr import (
    Interpreter,
    carry_mask,
    custom_jvp_rule,
    depends,
    evaluate,
    interpret,
    is_float,
    split_solve,
    symbolic_zeros,
    user_site,
    where_lanes,
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


class TaylorInterpreter(Interpreter):
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


_INTERPRETERS: dict[int, TaylorInterpreter] = {}


def at(order: int) -> TaylorInterpreter:
    """The Taylor interpreter of ``order`` (one per order, made on first use)."""
    if order not in _INTERPRETERS:
        _INTERPRETERS[order] = TaylorInterpreter(order)
    return _INTERPRETERS[order]


def _promote_float(tm: TaylorInterpreter, values: Sequence[Any], mask: Sequence[bool]) -> list:
    return [tm.promote(v) if m else _primal(v) for v, m in zip(values, mask, strict=True)]


# ------------------------------------------------------------ control flow


def _cond(tm: TaylorInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    index, ops = _primal(invals[0]), invals[1:]
    out_float = [is_float(v.aval) for v in eqn.outvars]

    def branch(closed: Any) -> Callable:
        def run(*args: Any) -> list[Any]:
            return _promote_float(tm, tm.run(closed, list(args), site), out_float)

        return run

    return list(lax.switch(index, [branch(b) for b in eqn.params["branches"]], *ops))


def _while(tm: TaylorInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cconsts = [_primal(v) for v in invals[:nc]]
    bconsts, init = invals[nc : nc + nb], invals[nc + nb :]
    body, cond = p["body_jaxpr"], p["cond_jaxpr"]
    mask = carry_mask(body.jaxpr, _active(bconsts), _active(init))

    def pred(carry: Any) -> Any:
        return interpret(cond, [*cconsts, *[_primal(c) for c in carry]], evaluate)[0]

    def body_fun(carry: Any) -> Any:
        new = _promote_float(tm, tm.run(body, [*bconsts, *carry], site), mask)
        if jnp.ndim(cond.out_avals[0]) == 0:
            return new
        running = pred(carry)  # a batched predicate: only running lanes take the step
        return jax.tree.map(lambda n, o: where_lanes(running, n, o), new, carry)

    start = _promote_float(tm, init, mask)
    return list(lax.while_loop(lambda c: jnp.any(pred(c)), body_fun, start))


def _scan(tm: TaylorInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    p = eqn.params
    nc, nk = p["num_consts"], p["num_carry"]
    consts, init, xs = invals[:nc], invals[nc : nc + nk], invals[nc + nk :]
    body = p["jaxpr"]
    cmask = carry_mask(body.jaxpr, _active(consts), _active(init), _active(xs))
    ymask = depends(body.jaxpr, [*_active(consts), *cmask, *_active(xs)])[nk:]

    def step(carry: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
        outs = tm.run(body, [*consts, *carry, *x], site)
        return _promote_float(tm, outs[:nk], cmask), _promote_float(tm, outs[nk:], ymask)

    carry, ys = lax.scan(
        step,
        _promote_float(tm, init, cmask),
        list(xs),
        length=p["length"],
        reverse=p["reverse"],
        unroll=p["unroll"],
    )
    return [*carry, *ys]


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
    "cond": _cond,
    "while": _while,
    "scan": _scan,
    "custom_jvp_call": _custom_jvp,
    "custom_vjp_call": _custom_vjp,
    "custom_linear_solve": _linear_solve,
}
