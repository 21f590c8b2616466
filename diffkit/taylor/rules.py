"""The Taylor column of the rule table: how each primitive maps input series to output series.

Keyed by primitive name, with a generic rule per kind of row of :data:`diffkit.rules.RULES`
(the row's ``kind``), so the first-order table stays the one source of each derivative:

* ``ode`` -- elementwise functions by their ODE recurrences (:mod:`diffkit.taylor.series`):
  ``exp``, ``log``, ``sin``/``cos``, ``tanh``, ``logistic``, ``sqrt``, ``rsqrt``, ``pow``,
  ``integer_pow``, ``div``, ``mul`` (Cauchy product), ...: ``O(K^2)`` per row;
* ``bilinear`` -- ``dot_general``, ``conv_general_dilated``: a Cauchy product of the primitive
  itself, ``y_k = sum_{i+j=k} B(a_i, b_j)``;
* ``coefficient-wise`` -- rows that are linear in their floating-point inputs, or piecewise
  linear (``max``, ``abs``, ``sort``, ``reduce_max``, ``select_n``, ...): away from the kinks
  the output series is the first-order rule applied to each coefficient, ``y_k = J(x_0) x_k``
  (at a kink it is what nesting the first-order rule gives, as in JAX);
* ``path`` -- every other row with a first-order rule (``erf``, ``atan2``, ``lgamma``,
  ``reduce_prod``, ``cumlogsumexp``, the decompositions, primitives a library registered
  with JAX, and ``custom_jvp`` functions): along the path ``x(t)``, ``y'(t) = J(x(t), x'(t))``
  with ``J`` the row's JVP, so Taylor mode of order ``K - 1`` over the JVP's own jaxpr gives
  ``y'``'s series and ``y_k = [y']_(k-1) / k``. Exact, and the JVP's rows are themselves
  Taylor rows (``erf``'s JVP is ``exp`` and ``mul``), so this stays polynomial unless a JVP
  needs the path rule again at every order;
* ``zero`` -- piecewise-constant rows: no series;
* ``expansion`` -- rows whose meaning is a program (``cumprod``): the program's rows.

:func:`how` names the rule a primitive gets, or raises the one-line refusal.

Example:
    >>> how("exp"), how("dot_general"), how("slice"), how("erf")
    ('ode', 'bilinear', 'coefficient-wise', 'path')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.jaxpr import evaluate, is_float, registered_jvp
from diffkit.rules.table import REFUSED, RULES
from diffkit.taylor import series as S
from diffkit.taylor.jets import Jet, coefficients, make, series_of

__all__ = ["BILINEAR", "ODE", "PIECEWISE", "REFUSED_TAYLOR", "apply", "foreign", "how", "path"]

Series = list[Any]
#: ``name -> rule(input series, eqn) -> output series`` for elementwise rows
ODE: dict[str, Callable[[Sequence[Series], Any], Series]] = {}


def _unary(f: Callable[[Series], Series]) -> Callable[[Sequence[Series], Any], Series]:
    return lambda s, eqn: f(s[0])


def _tanh(x: Series) -> Series:
    return S.ode(x, jnp.tanh(x[0]), lambda y, m: 1 - y[0] * y[0] if m == 0 else -S.cauchy(y, y, m))


def _logistic(x: Series) -> Series:
    def z(y: Series, m: int) -> Any:
        return y[m] - S.cauchy(y, y, m)

    return S.ode(x, lax.logistic(x[0]), z)


def _tan(x: Series) -> Series:
    return S.ode(x, jnp.tan(x[0]), lambda y, m: 1 + y[0] * y[0] if m == 0 else S.cauchy(y, y, m))


def _expm1(x: Series) -> Series:
    return S.ode(x, jnp.expm1(x[0]), lambda y, m: 1 + y[0] if m == 0 else y[m])


def _exp2(x: Series) -> Series:
    ln2 = math.log(2.0)
    return S.ode(S.scale(x, ln2), jnp.exp2(x[0]), lambda y, m: y[m])


def _integer_pow(s: Sequence[Series], eqn: Any) -> Series:
    x, n = s[0], eqn.params["y"]
    if n == 0:
        return [jnp.ones_like(x[0])] + [None] * (len(x) - 1)
    result: Series | None = None
    base, m = list(x), abs(n)
    while m:  # binary powering: exact at x_0 = 0, unlike x y' = n y x'
        if m & 1:
            result = base if result is None else S.mul(result, base)
        m >>= 1
        if m:
            base = S.mul(base, base)
    assert result is not None
    return result if n > 0 else S.reciprocal(result)


def _pow(s: Sequence[Series], eqn: Any) -> Series:
    x, y = s
    y0 = lax.pow(x[0], y[0])
    if all(c is None for c in y[1:]):  # a constant exponent: x y' = r y x'
        return S.power(x, y[0], y0)
    if all(c is None for c in x[1:]):  # a constant base: exp(y log x)
        out = S.ode(S.scale(y, jnp.log(x[0])), y0, lambda z, m: z[m])
        return out
    out = S.exp(S.mul(y, S.log(x)))
    return [y0, *out[1:]]


def _sin(s: Sequence[Series], eqn: Any) -> Series:
    return S.sin_cos(s[0])[0]


def _cos(s: Sequence[Series], eqn: Any) -> Series:
    return S.sin_cos(s[0])[1]


def _sinh(s: Sequence[Series], eqn: Any) -> Series:
    return S.sinh_cosh(s[0])[0]


def _cosh(s: Sequence[Series], eqn: Any) -> Series:
    return S.sinh_cosh(s[0])[1]


ODE.update(
    {
        "exp": _unary(S.exp),
        "exp2": _unary(_exp2),
        "expm1": _unary(_expm1),
        "log": _unary(S.log),
        "log1p": lambda s, eqn: S.log(s[0], 1 + s[0][0]),
        "sin": _sin,
        "cos": _cos,
        "sinh": _sinh,
        "cosh": _cosh,
        "tan": _unary(_tan),
        "tanh": _unary(_tanh),
        "logistic": _unary(_logistic),
        "sqrt": _unary(S.sqrt),
        "rsqrt": lambda s, eqn: S.power(s[0], -0.5, lax.rsqrt(s[0][0])),
        "cbrt": lambda s, eqn: S.power(s[0], 1.0 / 3.0, lax.cbrt(s[0][0])),
        "square": lambda s, eqn: S.mul(s[0], s[0]),
        "integer_pow": _integer_pow,
        "pow": _pow,
        "mul": lambda s, eqn: S.mul(s[0], s[1]),
        "div": lambda s, eqn: S.div(s[0], s[1]),
    }
)

#: Bilinear rows: the Cauchy product of the primitive itself.
BILINEAR = frozenset({"dot_general", "conv_general_dilated"})

#: Rows whose tangent map is their own (piecewise) linear action: elementwise and reduction
#: rows with constant or piecewise-constant partials, and reorderings.
PIECEWISE = frozenset(
    {
        "add",
        "add_any",
        "sub",
        "neg",
        "abs",
        "max",
        "min",
        "clamp",
        "rem",
        "reduce_max",
        "reduce_min",
        "sort",
        "top_k",
        "approx_top_k",
    }
)

#: "linear" rows that are not linear in their values: the path rule.
_NOT_LINEAR = frozenset({"scatter-mul", "reduce", "reduce_window"})

#: Primitives Taylor mode refuses beyond the interpreters' shared table, with the reason.
REFUSED_TAYLOR: dict[str, str] = {
    "shard_map": "Taylor mode does not enter shard_map bodies; take the jet inside the body",
    "custom_vjp_call": (
        "a custom_vjp function defines only a reverse-mode rule, which Taylor mode (forward) "
        "cannot use; define it with jax.custom_jvp"
    ),
}


def how(name: str) -> str:
    """The Taylor rule primitive ``name`` gets (see the module's docstring), or raise the
    one-line :class:`UnsupportedPrimitiveError` Taylor mode gives for it.

    Example:
        >>> how("sort")
        'coefficient-wise'
    """
    if name in REFUSED_TAYLOR:
        raise UnsupportedPrimitiveError(f"taylor: primitive '{name}': {REFUSED_TAYLOR[name]}")
    if name in REFUSED:
        raise UnsupportedPrimitiveError(f"taylor: primitive '{name}': {REFUSED[name]}")
    if name in ("custom_jvp_call",):
        return "path"
    if name in ("cond", "while", "scan", "custom_linear_solve", "pjit", "jit"):
        return "control"
    row = RULES.get(name)
    if row is None:
        raise UnsupportedPrimitiveError(f"taylor: no rule for primitive '{name}'")
    if name in ODE:
        return "ode"
    if name in BILINEAR:
        return "bilinear"
    if row.kind == "zero":
        return "zero"
    if row.kind == "expansion":
        return "expansion"
    if name in PIECEWISE or (row.kind == "linear" and name not in _NOT_LINEAR):
        return "coefficient-wise"
    if row.kind == "call":
        raise UnsupportedPrimitiveError(f"taylor: primitive '{name}': {REFUSED_TAYLOR[name]}")
    return "path"


# ------------------------------------------------------------ applying a row


def apply(tm: Any, eqn: Any, invals: list[Any], xs: list[Any], row: Any) -> list[Any]:
    """Evaluate ``eqn`` on jets by its Taylor rule (``tm``: the interpreter, of order
    ``tm.order``; ``row``: the first-order row of :data:`diffkit.rules.RULES`)."""
    name = eqn.primitive.name
    K = tm.order
    kind = how(name)
    if K == 0:  # nothing but the primal (the path rule's last level)
        return _wrap(eqn, evaluate(eqn, xs), [[] for _ in eqn.outvars], 0)
    if _by_path(name, invals, xs):
        kind = "path"
    if kind == "ode":
        s = [series_of(v, K) for v in invals]
        out = ODE[name](s, eqn)
        y = evaluate(eqn, xs)[0]
        return [make(y, [y, *out[1:]])]
    if kind == "bilinear":
        return [_bilinear(eqn, invals, K)]
    if kind == "zero":
        return evaluate(eqn, xs)
    if kind == "coefficient-wise":
        return _coefficient_wise(eqn, invals, xs, row, K)
    return path(tm, eqn, invals, xs, _row_jvp(eqn, row), lambda a: row.outputs(eqn, a))


def _by_path(name: str, invals: list[Any], xs: list[Any]) -> bool:
    """Forms a row's own Taylor rule does not cover, left to the path rule: ``abs`` of a
    complex number (not piecewise linear), ``pow`` with an integer or a constant exponent
    base (JAX's rule has its conventions at ``x = 0``, which the recurrence, dividing by
    ``x_0`` or taking ``log x_0``, would lose)."""
    if name == "abs":
        return bool(jnp.iscomplexobj(xs[0]))
    if name == "pow":
        return not jnp.issubdtype(jnp.result_type(xs[1]), jnp.inexact) or not isinstance(
            invals[0], Jet
        )
    return False


def _wrap(eqn: Any, ys: Sequence[Any], coeffs: Sequence[Sequence[Any]], K: int) -> list[Any]:
    """Outputs as jets (float outputs), from their primals and higher coefficients."""
    out = []
    for v, y, c in zip(eqn.outvars, ys, coeffs, strict=False):
        if not is_float(v.aval) or (K > 0 and all(x is None for x in c)):
            out.append(y)
        else:
            out.append(make(y, [y, *c]) if K > 0 else Jet(y, ()))
    return out


def _bilinear(eqn: Any, invals: list[Any], K: int) -> Any:
    a, b = (series_of(v, K) for v in invals)
    ys: Series = []
    for k in range(K + 1):
        total = None
        for i in range(k + 1):
            if a[i] is not None and b[k - i] is not None:
                term = evaluate(eqn, [a[i], b[k - i]])[0]
                total = term if total is None else total + term
        ys.append(total)
    return make(ys[0], ys)


def _coefficient_wise(eqn: Any, invals: list[Any], xs: list[Any], row: Any, K: int) -> list[Any]:
    found = row.outputs(eqn, xs)
    n = len(eqn.outvars)
    s = [series_of(v, K) for v in invals]
    per_k = []
    for k in range(1, K + 1):
        dots = [c[k] for c in s]
        if all(d is None for d in dots):
            per_k.append([None] * n)
            continue
        with jax.named_scope(f"d_{eqn.primitive.name}"):
            got = row.jvp(eqn.primitive, xs, dots, found, eqn.params)
        per_k.append(list(got[:n]) + [None] * (n - len(got[:n])))
    return _wrap(eqn, found[:n], [[per_k[k][i] for k in range(K)] for i in range(n)], K)


def _row_jvp(eqn: Any, row: Any) -> Callable[[list[Any], list[Any]], list[Any]]:
    def jvp(xs: list[Any], dots: list[Any]) -> list[Any]:
        found = row.outputs(eqn, xs)
        with jax.named_scope(f"d_{eqn.primitive.name}"):
            got = row.jvp(eqn.primitive, xs, dots, found, eqn.params)
        return list(got[: len(eqn.outvars)])

    return jvp


def foreign(tm: Any, eqn: Any, invals: list[Any], xs: list[Any]) -> list[Any]:
    """A primitive with no row, by the JVP rule registered for it with JAX (the path rule)."""
    if tm.order == 0:
        return _wrap(eqn, evaluate(eqn, xs), [[] for _ in eqn.outvars], 0)

    def jvp(a: list[Any], dots: list[Any]) -> list[Any]:
        return registered_jvp(eqn, a, dots)[1]

    return path(tm, eqn, invals, xs, jvp, lambda a: evaluate(eqn, a))


def _as_arrays(eqn: Any, xs: Sequence[Any]) -> list[Any]:
    return [jnp.asarray(x, v.aval.dtype) for v, x in zip(eqn.invars, xs, strict=True)]


def path(
    tm: Any,
    eqn: Any,
    invals: list[Any],
    xs: list[Any],
    jvp: Callable[[list[Any], list[Any]], list[Any]],
    primal: Callable[[list[Any]], list[Any]],
) -> list[Any]:
    """The path rule: ``y'(t) = J(x(t), x'(t))``, Taylor mode of order ``K - 1`` over the
    jaxpr of ``J = jvp(xs, dots)`` (``None`` dots for inactive inputs), ``y_k = [y']_(k-1)/k``.
    """
    K = tm.order
    n = len(eqn.outvars)
    xs = _as_arrays(eqn, xs)
    active = [isinstance(v, Jet) for v in invals]
    where = [i for i, a in enumerate(active) if a]
    ys = list(primal(xs)[:n])
    if K == 1:  # the first-order rule itself
        dots = [v.coeffs[0] if isinstance(v, Jet) else None for v in invals]
        y_dots = jvp(xs, dots)
        return _wrap(eqn, ys, [[d] for d in y_dots], 1)
    given: list[bool] = []

    def J(*args: Any) -> list[Any]:
        a, d = list(args[: len(xs)]), [None] * len(xs)
        for i, t in zip(where, args[len(xs) :], strict=True):
            d[i] = t
        out = jvp(a, d)
        given[:] = [t is not None for t in out]
        return [t for t in out if t is not None]

    closed = jax.make_jaxpr(J)(*xs, *[xs[i] for i in where])
    lower = tm.at(K - 1)
    args = [
        Jet(v.primal, v.coeffs[: K - 1]) if isinstance(v, Jet) else x
        for v, x in zip(invals, xs, strict=True)
    ]
    derivs = [
        Jet(invals[i].coeffs[0], [(k + 1) * c for k, c in enumerate(invals[i].coeffs[1:], 1)])
        for i in where
    ]
    outs = iter(lower.run(closed, [*args, *derivs]))
    coeffs: list[list[Any]] = []
    for g in given:
        if not g:
            coeffs.append([None] * K)
            continue
        p = coefficients(next(outs), K - 1)
        coeffs.append([c / (k + 1) for k, c in enumerate(p)])
    return _wrap(eqn, ys, coeffs + [[None] * K] * (n - len(given)), K)
