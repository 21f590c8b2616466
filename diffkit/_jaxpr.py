"""Tracing functions to jaxprs, and the one loop every jaxpr interpreter runs.

The hand-written differentiators (dual numbers, tape, symbolic) are interpreters over a
jaxpr's equations. They share three things, all here:

* :func:`trace` turns a flat function ``fun(*primals) -> (outs, aux)`` into a closed jaxpr
  whose outputs are ``outs + aux``;
* :func:`interpret` walks the equations in order, reading and writing an environment keyed by
  variable, and asks a per-interpreter ``handle(eqn, invals) -> outvals`` for each one;
* :func:`unsupported` builds the one error for a primitive that has no rule: which
  differentiator, which primitive, the user's source line, and what is supported.

Call-like primitives (``jit``, ``closed_call``, ``custom_jvp_call``, ``custom_vjp_call``, ...)
wrap a sub-jaxpr; :func:`inner_jaxpr` returns it so an interpreter can inline it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from diffkit._errors import UnsupportedPrimitiveError

__all__ = [
    "Traced",
    "carry_mask",
    "depends",
    "evaluate",
    "inner_jaxpr",
    "interpret",
    "is_float",
    "source_line",
    "trace",
    "unsupported",
]

Handler = Callable[[Any, list[Any]], Sequence[Any]]

#: Call-like primitives and the parameter that holds the jaxpr they call.
CALL_PARAMS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}


@dataclass(frozen=True)
class Traced:
    """A traced flat function: ``closed`` computes ``outs + aux`` from the primals."""

    closed: Any  # jax.extend.core.ClosedJaxpr
    n_outs: int
    n_aux: int


def trace(
    fun: Callable[..., tuple[tuple[Any, ...], tuple[Any, ...]]], primals: Sequence[Any]
) -> Traced:
    """Trace ``fun(*primals) -> (outs, aux)`` to a closed jaxpr with outputs ``outs + aux``.

    Example:
        >>> import jax.numpy as jnp
        >>> t = trace(lambda x: ((jnp.sin(x),), ()), (jnp.ones(2),))
        >>> [e.primitive.name for e in t.closed.jaxpr.eqns], t.n_outs
        (['sin'], 1)
    """
    sizes: list[int] = []

    def flat(*xs: Any) -> list[Any]:
        outs, aux = fun(*xs)
        sizes[:] = [len(outs), len(aux)]
        return [*outs, *aux]

    closed = jax.make_jaxpr(flat)(*primals)
    return Traced(closed, sizes[0], sizes[1])


def interpret(closed: Any, args: Sequence[Any], handle: Handler) -> list[Any]:
    """Evaluate a closed jaxpr, letting ``handle(eqn, invals)`` compute each equation.

    ``args`` may be any values the handler understands (arrays, dual numbers, SymPy arrays);
    constants and literals reach the handler as plain arrays, as the jaxpr holds them.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(lambda x: jnp.cos(x) * 2.0)(1.0)
        >>> run = lambda eqn, invals: eqn.primitive.bind(*invals, **eqn.params)
        >>> round(float(interpret(closed, [0.0], lambda e, v: _as_list(e, run(e, v)))[0]), 3)
        2.0
    """
    jaxpr = closed.jaxpr
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, closed.consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        outvals = handle(eqn, [read(v) for v in eqn.invars])
        for var, value in zip(eqn.outvars, outvals, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _as_list(eqn: Any, result: Any) -> list[Any]:
    """``primitive.bind`` returns a list for multiple-result primitives, else one value."""
    return list(result) if eqn.primitive.multiple_results else [result]


def evaluate(eqn: Any, invals: Sequence[Any]) -> list[Any]:
    """Evaluate one equation on ordinary values (arrays or tracers), as a list of outputs.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> eqn = jax.make_jaxpr(jnp.sin)(0.0).jaxpr.eqns[0]
        >>> [float(v) for v in evaluate(eqn, [0.0])]
        [0.0]
    """
    params = eqn.primitive.get_bind_params(eqn.params)
    return _as_list(eqn, eqn.primitive.bind(*invals, **params))


def is_float(x: Any) -> bool:
    """Whether a value (or an abstract value) is floating point: what carries derivatives."""
    dtype = getattr(x, "dtype", None)
    return jnp.issubdtype(dtype if dtype is not None else jnp.result_type(x), jnp.inexact)


def depends(jaxpr: Any, mask: Sequence[bool]) -> list[bool]:
    """Which outputs of ``jaxpr`` depend on the inputs flagged in ``mask`` (conservatively:
    an equation's outputs depend on its inputs), and are floating point.

    Example:
        >>> import jax
        >>> j = jax.make_jaxpr(lambda a, b: (a * 2.0, b + 1.0, a > 0))(1.0, 2.0).jaxpr
        >>> depends(j, [True, False])
        [True, False, False]
    """
    dep = {v for v, m in zip(jaxpr.invars, mask, strict=True) if m}
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jex_core.Literal) and v in dep for v in eqn.invars):
            dep.update(eqn.outvars)
    return [
        not isinstance(v, jex_core.Literal) and v in dep and is_float(v.aval) for v in jaxpr.outvars
    ]


def carry_mask(
    body: Any, consts: Sequence[bool], carry: Sequence[bool], xs: Sequence[bool] = ()
) -> list[bool]:
    """Which loop carries carry derivatives: a fixed point of :func:`depends` over the body
    ``(consts, carry, xs) -> (carry, ...)`` (a carry becomes active once an active value
    flows into it).

    Example:
        >>> import jax
        >>> body = jax.make_jaxpr(lambda w, a, b: (a, b * w))(1.0, 1.0, 1.0).jaxpr
        >>> carry_mask(body, [True], [False, False])
        [False, True]
    """
    mask = [bool(m) for m in carry]
    while True:
        out = depends(body, [*consts, *mask, *xs])[: len(mask)]
        new = [a or b for a, b in zip(mask, out, strict=True)]
        if new == mask:
            return mask
        mask = new


def inner_jaxpr(eqn: Any) -> Any | None:
    """The closed sub-jaxpr a call-like equation calls, or ``None`` for other primitives.

    For ``custom_jvp_call`` / ``custom_vjp_call`` this is the primal implementation: the
    hand-written differentiators differentiate what the function computes.
    """
    key = CALL_PARAMS.get(eqn.primitive.name)
    if key is None or key not in eqn.params:
        return None
    sub = eqn.params[key]
    if isinstance(sub, jex_core.ClosedJaxpr):
        return sub
    return jex_core.ClosedJaxpr(sub, ())


def source_line(eqn: Any) -> str:
    """The user's source location that produced ``eqn``, e.g. ``model.py:12:8 (loss)``."""
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # source info is best-effort
        return "<unknown location>"


def unsupported(who: str, eqn: Any, supported: Iterable[str]) -> UnsupportedPrimitiveError:
    """The error for a primitive without a rule (returned, for the caller to raise)."""
    names = ", ".join(sorted(supported))
    return UnsupportedPrimitiveError(
        f"{who}: no rule for primitive '{eqn.primitive.name}' (from {source_line(eqn)}); "
        f"use jax-fwd/jax-rev for this function, or add a rule. Supported: {names}"
    )
