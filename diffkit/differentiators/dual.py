"""Forward mode by dual numbers: ``dual``.

A dual number carries a value and its derivative along a direction, ``primal + tangent * eps``
with ``eps**2 = 0``. The differentiator traces the function to a jaxpr and evaluates every
equation on dual numbers: the primal by the primitive itself, the tangent by the primitive's row
in the rule table (:mod:`diffkit.rules.table`). Values that do not depend on the inputs stay plain
arrays (a zero tangent costs nothing). The evaluation is jax.numpy code, so it compiles under
``jax.jit``, and the base class's ``jax.vmap`` over basis directions is vector mode: gradients
and Jacobians come one chunk of directions per pass.

Control flow: ``cond`` (a switch over the branches' dual evaluations), ``scan`` and
``while_loop`` (the loop carries primal and tangent together), by the forward interpreters'
shared handlers (:mod:`diffkit._core.forward_control`). Custom rules are part of the
program: a ``custom_jvp`` function's tangent comes from its JVP rule, a
``custom_linear_solve``'s from its solve; a ``custom_vjp`` function is refused, as JAX does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core import forward_control
from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.interface import Differentiator
from diffkit._core.jaxpr import (
    custom_jvp_rule,
    evaluate,
    interpret,
    is_float,
    registered_jvp,
    split_solve,
    symbolic_zeros,
    user_site,
    zero_tangent,
)
from diffkit._core.registry import register
from diffkit.rules.table import REFUSED, RULES

__all__ = ["Dual", "DualInterpreter", "DualNumbers"]


class Dual:
    """A dual number: a primal value and its tangent (derivative along one direction).

    Arithmetic on dual numbers is evaluated by the same rule table the ``dual`` differentiator
    reads: each operator is traced to its jaxpr and each equation pushes the tangent forward.

    Example:
        >>> from diffkit import Dual
        >>> Dual(2.0, 1.0) ** 3
        Dual(primal=8.0, tangent=12.0)
        >>> z = (Dual(0.5, 1.0) * 4.0).sin()
        >>> round(float(z.tangent), 4)  # d/dx sin(4x) = 4 cos(4x) at x = 0.5
        -1.6646
    """

    __slots__ = ("primal", "tangent")

    def __init__(self, primal: Any, tangent: Any = None) -> None:
        self.primal = jnp.asarray(primal) if isinstance(primal, float | int) else primal
        if tangent is None or isinstance(tangent, float | int):
            tangent = jnp.full_like(self.primal, tangent or 0)
        self.tangent = tangent

    def __repr__(self) -> str:
        def show(x: Any) -> str:
            try:
                return repr(np.asarray(x).tolist())
            except Exception:  # a tracer
                return repr(x)

        return f"Dual(primal={show(self.primal)}, tangent={show(self.tangent)})"

    def apply(self, f: Callable[..., Any], *others: Any) -> Dual:
        """``f(self, *others)`` for a jax.numpy function ``f``, on dual numbers.

        Example:
            >>> import jax.numpy as jnp
            >>> float(Dual(0.0, 1.0).apply(jnp.exp).tangent)
            1.0
        """
        args = (self, *others)
        where = [i for i, a in enumerate(args) if isinstance(a, Dual)]

        def g(*duals: Any) -> Any:
            full = list(args)
            for i, d in zip(where, duals, strict=True):
                full[i] = d
            return f(*full)

        closed = jax.make_jaxpr(g)(*[args[i].primal for i in where])
        (out,) = DUALS.run(closed, [args[i] for i in where])
        return out if isinstance(out, Dual) else Dual(out)

    def __add__(self, other: Any) -> Dual:
        return self.apply(jnp.add, other)

    def __radd__(self, other: Any) -> Dual:
        return self.apply(lambda a, b: jnp.add(b, a), other)

    def __sub__(self, other: Any) -> Dual:
        return self.apply(jnp.subtract, other)

    def __rsub__(self, other: Any) -> Dual:
        return self.apply(lambda a, b: jnp.subtract(b, a), other)

    def __mul__(self, other: Any) -> Dual:
        return self.apply(jnp.multiply, other)

    def __rmul__(self, other: Any) -> Dual:
        return self.apply(lambda a, b: jnp.multiply(b, a), other)

    def __truediv__(self, other: Any) -> Dual:
        return self.apply(jnp.divide, other)

    def __rtruediv__(self, other: Any) -> Dual:
        return self.apply(lambda a, b: jnp.divide(b, a), other)

    def __pow__(self, other: Any) -> Dual:
        return self.apply(lambda a, b: a**b, other)

    def __rpow__(self, other: Any) -> Dual:
        return self.apply(lambda a, b: b**a, other)

    def __neg__(self) -> Dual:
        return self.apply(jnp.negative)

    def sin(self) -> Dual:
        return self.apply(jnp.sin)

    def cos(self) -> Dual:
        return self.apply(jnp.cos)

    def exp(self) -> Dual:
        return self.apply(jnp.exp)

    def log(self) -> Dual:
        return self.apply(jnp.log)

    def tanh(self) -> Dual:
        return self.apply(jnp.tanh)

    def sqrt(self) -> Dual:
        return self.apply(jnp.sqrt)


def _primal(v: Any) -> Any:
    return v.primal if isinstance(v, Dual) else v


def _tangent(v: Any) -> Any:
    """The tangent of a value; zeros for a plain (constant) one."""
    return v.tangent if isinstance(v, Dual) else jnp.zeros_like(v)


def _active(values: Sequence[Any]) -> list[bool]:
    return [isinstance(v, Dual) for v in values]


class DualInterpreter(forward_control.ForwardInterpreter):
    """The dual-number interpreter: values that depend on the inputs are :class:`Dual`."""

    who = "dual"
    rules = RULES
    refused = REFUSED

    def active(self, v: Any) -> bool:
        return isinstance(v, Dual)

    def primal(self, v: Any) -> Any:
        return _primal(v)

    def pack(self, values: Sequence[Any], mask: Sequence[bool]) -> tuple[list[Any], list[Any]]:
        """Primals of all values, tangents (zeros if plain) of the masked ones."""
        return [_primal(v) for v in values], [
            _tangent(v) for v, m in zip(values, mask, strict=True) if m
        ]

    def unpack(self, tree: Any, mask: Sequence[bool]) -> list[Any]:
        """Dual numbers where ``mask`` is set (taking tangents in order), plain values elsewhere."""
        primals, tangents = tree
        it = iter(tangents)
        return [Dual(p, next(it)) if m else p for p, m in zip(primals, mask, strict=True)]

    def apply(self, eqn: Any, invals: list[Any], xs: list[Any], rule: Any) -> list[Any]:
        found = rule.outputs(eqn, xs)
        x_dots = [v.tangent if isinstance(v, Dual) else None for v in invals]
        with jax.named_scope(f"d_{eqn.primitive.name}"):  # names the rule in errors
            y_dots = rule.jvp(eqn.primitive, xs, x_dots, found, eqn.params)
        ys = found[: len(eqn.outvars)]  # after them: the extras the rule computed
        return [y if t is None else Dual(y, t) for y, t in zip(ys, y_dots, strict=False)]

    def foreign(self, eqn: Any, invals: list[Any], xs: list[Any], site: Any) -> list[Any]:
        x_dots = [v.tangent if isinstance(v, Dual) else None for v in invals]
        ys, y_dots = registered_jvp(eqn, xs, x_dots)
        return [y if t is None else Dual(y, t) for y, t in zip(ys, y_dots, strict=True)]


# ------------------------------------------------------------ custom rules


def _custom_jvp(duals: DualInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    """The library's JVP rule pushes the tangent (its constants get none, as in JAX; inactive
    inputs get symbolic zeros where the rule asked for them)."""
    rest = invals[eqn.params["num_consts"] :]
    zeros = symbolic_zeros(eqn, _active(invals))
    rule, out_zeros = custom_jvp_rule(eqn, zeros)
    xs = [_primal(v) for v in rest]
    x_dots = [
        v.tangent if isinstance(v, Dual) else zero_tangent(v)
        for v, z in zip(rest, zeros, strict=True)
        if not z
    ]
    outs = interpret(rule, [*xs, *x_dots], evaluate)
    ys, given = outs[: len(eqn.outvars)], iter(outs[len(eqn.outvars) :])
    y_dots = [None if z else next(given) for z in out_zeros]
    return [
        Dual(y, t) if t is not None and is_float(y) else y for y, t in zip(ys, y_dots, strict=True)
    ]


def _custom_vjp(duals: DualInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    raise UnsupportedPrimitiveError(
        f"dual: a custom_vjp function (at {user_site(eqn, site)}) defines only a reverse-mode "
        "rule, and forward mode cannot use it (JAX refuses too); use tape or jax-rev, or "
        "define the function with jax.custom_jvp"
    )


def _linear_solve(duals: DualInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    """``x = A^-1 b``: ``x_dot = A^-1 (b_dot - A_dot x)``, with ``A_dot x`` the tangent of the
    matvec in its constants (the solves' constants get none, as in JAX)."""
    xs = [_primal(v) for v in invals]
    (matvec, *_), b = split_solve(invals, eqn)
    x = evaluate(eqn, xs)
    rhs = [_tangent(v) for v in b]
    if any(isinstance(v, Dual) for v in matvec):
        a_dot_x = duals.run(eqn.params["jaxprs"].matvec, [*matvec, *x[: len(b)]], site)
        rhs = [r - _tangent(t) for r, t in zip(rhs, a_dot_x, strict=True)]
    x_dot = evaluate(eqn, [*xs[: len(xs) - len(b)], *rhs])
    return [Dual(y, t) for y, t in zip(x, x_dot[: len(b)], strict=False)] + x[len(b) :]


DualInterpreter.special = {
    **forward_control.CONTROL_FLOW,
    "custom_jvp_call": _custom_jvp,
    "custom_vjp_call": _custom_vjp,
    "custom_linear_solve": _linear_solve,
}
DUALS = DualInterpreter()


@register("dual")
class DualNumbers(Differentiator):
    """Forward mode by hand-written dual numbers over the function's jaxpr.

    One pass pushes one tangent direction (or, vmapped by the base class, a chunk of them)
    through the function; a gradient of ``n`` parameters costs ``n`` directions.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> y, y_dot = dk.get("dual").jvp(lambda x: jnp.sin(x) * x, (1.0,), (1.0,))
        >>> round(float(y_dot), 6)  # cos(1) + sin(1)
        1.381773
    """

    mode = "forward"
    native = frozenset({"jvp"})
    traced = True
    description = "hand-written dual numbers over the jaxpr; one rule table; vmapped directions"

    def _jvp(self, fun, primals, tangents):
        args = [Dual(p, t) for p, t in zip(primals, tangents, strict=True)]
        outs = DUALS.run(fun.closed, args)  # fun: the TracedFun record (traced = True)
        n = fun.n_outs
        values = [_primal(o) for o in outs]
        return tuple(values[:n]), tuple(_tangent(o) for o in outs[:n]), tuple(values[n:])
