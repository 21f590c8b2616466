"""Finite-difference rules in one place: stencils, default steps, the complex-step check and
the result type. The ``fd`` differentiator and the public ``dk.fd`` namespace both import
them from here.

Example:
    >>> s = stencil("forward", 1)
    >>> s.offsets, [str(w) for w in s.exact_weights]
    ((0.0, 1.0), ['-1', '1'])
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import DiffkitError
from diffkit._core.jaxpr import source_line

__all__ = [
    "NON_ANALYTIC",
    "SCHEMES",
    "FDResult",
    "Stencil",
    "check_analytic",
    "default_step",
    "stencil",
    "weights",
]

#: The schemes ``dk.get("fd", scheme=...)`` accepts, and the default accuracy order of each.
SCHEMES = {"forward": 1, "backward": 1, "central": 2, "complex": 2, "richardson": 6}
MAX_ORDER = 12

#: Primitives whose complex extension is not the analytic one: a complex step through them
#: returns a wrong derivative, so :func:`check_analytic` refuses them.
NON_ANALYTIC = frozenset(
    "abs sign max min lt le gt ge eq ne select_n clamp floor ceil round argmax argmin "
    "reduce_max reduce_min real imag conj sort cummax cummin rem is_finite nextafter".split()
)


def weights(offsets: Sequence[float | Fraction], derivative: int = 1) -> tuple[Fraction, ...]:
    """Exact weights ``w`` with ``sum_j w_j o_j^k / k! = [k == derivative]`` for every
    ``k < len(offsets)``: the rule ``sum_j w_j f(x + o_j h) / h^d`` is then exact for
    polynomials of degree ``len(offsets) - 1`` (Gaussian elimination over the rationals).

    Example:
        >>> [str(w) for w in weights([0, 1, 2])]
        ['-3/2', '2', '-1/2']
    """
    pts = [Fraction(o) for o in offsets]
    k = len(pts)
    if len(set(pts)) != k or not 0 <= derivative < k:
        raise DiffkitError(
            f"fd.weights: need distinct offsets, more of them than the derivative order "
            f"{derivative}; got {list(offsets)}"
        )
    rows = [[p**i / math.factorial(i) for p in pts] + [Fraction(i == derivative)] for i in range(k)]
    for c in range(k):  # Gauss-Jordan; the Vandermonde matrix of distinct points is regular
        pivot = next(r for r in range(c, k) if rows[r][c] != 0)
        rows[c], rows[pivot] = rows[pivot], rows[c]
        rows[c] = [v / rows[c][c] for v in rows[c]]
        for r in range(k):
            if r != c and rows[r][c] != 0:
                rows[r] = [a - rows[r][c] * b for a, b in zip(rows[r], rows[c], strict=True)]
    return tuple(row[-1] for row in rows)


@dataclass(frozen=True)
class Stencil:
    """A first-derivative rule ``f'(x) ~ sum_j w_j f(x + o_j h) / h`` (for ``complex``:
    ``Im f(x + i h) / h``). Only points with a non-zero weight are kept."""

    scheme: str
    order: int
    offsets: tuple[float, ...]
    exact_weights: tuple[Fraction, ...]

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self.exact_weights)

    @property
    def uses_center(self) -> bool:
        """Whether ``f(x)`` itself has a weight (one-sided rules share it across inputs)."""
        return 0.0 in self.offsets

    @property
    def per_direction(self) -> int:
        """Evaluations of ``f`` per direction, not counting a shared ``f(x)``."""
        return len(self.offsets) - self.uses_center


def stencil(scheme: str = "central", order: int | None = None) -> Stencil:
    """The rule of ``scheme`` with accuracy ``order`` (truncation error ``O(h^order)``).

    forward/backward: points ``0..order`` (or ``0..-order``); central: ``-order/2..order/2``
    (order even); richardson: central differences at ``h, h/2, ..., h/2^(L-1)`` with ``L =
    order/2``, extrapolated (its weights solve the same system); complex: order 2.

    Example:
        >>> import diffkit as dk
        >>> s = dk.fd.stencil("forward")
        >>> s.offsets, s.weights, s.per_direction, s.uses_center
        ((0.0, 1.0), (-1.0, 1.0), 1, True)
    """
    if scheme not in SCHEMES:
        raise DiffkitError(f"fd: scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    order = SCHEMES[scheme] if order is None else order
    if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= MAX_ORDER:
        raise DiffkitError(f"fd: order must be an int from 1 to {MAX_ORDER}, got {order!r}")
    if scheme == "complex":
        if order != 2:
            raise DiffkitError(f"fd: the complex step has order 2 only, got order={order}")
        return Stencil(scheme, 2, (1.0,), (Fraction(1),))
    if scheme in ("central", "richardson") and order % 2:
        raise DiffkitError(
            f"fd: {scheme} differences have even orders (2, 4, ...); got order={order}; "
            "use scheme='forward' for odd orders"
        )
    if scheme == "forward":
        pts = [Fraction(j) for j in range(order + 1)]
    elif scheme == "backward":
        pts = [Fraction(-j) for j in range(order + 1)]
    elif scheme == "central":
        pts = [Fraction(j) for j in range(-order // 2, order // 2 + 1)]
    else:
        levels = [Fraction(1, 2**k) for k in range(order // 2)]
        pts = [Fraction(0), *levels, *(-p for p in levels)]
    kept = sorted((p, w) for p, w in zip(pts, weights(pts), strict=True) if w != 0)
    return Stencil(scheme, order, tuple(float(p) for p, _ in kept), tuple(w for _, w in kept))


def default_step(x: Any, rule: Stencil) -> jax.Array:
    """Per-coordinate steps: ``eps^(1/(p+1)) * max(1, |x_i|)`` for an order-``p`` rule (the
    balance of truncation ``h^p`` and rounding ``eps/h``); for the complex step, which does
    not cancel, ``eps^2 * max(1, |x_i|)``: tiny, yet far from underflow in float32 and float64.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> h = dk.fd.default_step(jnp.array([0.5, 100.0]), dk.fd.stencil("central"))
        >>> [f"{v:.2e}" for v in h.tolist()]
        ['4.92e-03', '4.92e-01']
    """
    x = jnp.asarray(x)
    eps = float(jnp.finfo(x.dtype).eps)
    base = eps**2 if rule.scheme == "complex" else eps ** (1.0 / (rule.order + 1))
    return base * jnp.maximum(1.0, jnp.abs(x))


def check_analytic(fun: Callable[..., Any], *args: Any, who: str = "fd") -> None:
    """Raise if ``fun`` cannot take a complex step: it rejects complex inputs, drops their
    imaginary part, or applies a non-analytic primitive (abs, max, comparisons, where, ...)
    to a complex value. Sub-jaxprs (jit, custom_jvp, cond, scan, ...) are searched too.

    Example:
        >>> import jax.numpy as jnp
        >>> check_analytic(jnp.sin, 1.0)  # fine
        >>> check_analytic(lambda x: jnp.abs(x) ** 3, 1.0)
        Traceback (most recent call last):
        ...
        diffkit._core.errors.DiffkitError: fd (scheme='complex'): the function applies 'abs' ...
    """
    zs = jax.tree_util.tree_map(lambda a: jnp.asarray(a) + 0j, list(args))  # pytrees too
    try:
        with warnings.catch_warnings():  # complex values into float scatters: refused below
            warnings.simplefilter("ignore", FutureWarning)
            closed = jax.make_jaxpr(fun)(*zs)
    except Exception as e:
        raise DiffkitError(
            f"{who} (scheme='complex'): the function does not accept complex inputs "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); use scheme='central'"
        ) from None
    bad = [e for e in _equations(closed.jaxpr) if _non_analytic(e)]
    if bad:
        names = ", ".join(dict.fromkeys(repr(e.primitive.name) for e in bad))
        raise DiffkitError(
            f"{who} (scheme='complex'): the function applies {names} (first from "
            f"{source_line(bad[0])}): not complex-analytic or dropping the imaginary part, so "
            "the complex step would give a wrong derivative; use scheme='central' or 'richardson'"
        )
    outs = [v for v in closed.jaxpr.outvars if not _is_complex(v)]
    if outs:
        raise DiffkitError(
            f"{who} (scheme='complex'): the function returns a real {outs[0].aval.dtype} "
            "value for complex inputs, so the imaginary part is lost; use scheme='central'"
        )


def _is_complex(v: Any) -> bool:
    return jnp.issubdtype(getattr(v.aval, "dtype", np.float32), jnp.complexfloating)


def _non_analytic(eqn: Any) -> bool:
    name = eqn.primitive.name
    if name == "convert_element_type":
        return eqn.tainted and not _is_complex(eqn.outvars[0])
    return eqn.tainted and name in NON_ANALYTIC


@dataclass(frozen=True)
class _Eqn:
    """An equation, and whether an input depends on the (complex) inputs of its jaxpr."""

    primitive: Any
    invars: Any
    outvars: Any
    source_info: Any
    tainted: bool


def _equations(jaxpr: Any):
    """Every equation of ``jaxpr`` and of the sub-jaxprs its parameters hold, depth first,
    marked ``tainted`` when an input depends on the jaxpr's complex inputs (so a comparison of
    ``x.real`` counts, a comparison of constants does not)."""
    tainted = {v for v in jaxpr.invars if _is_complex(v)}
    for eqn in jaxpr.eqns:
        hit = any(v in tainted for v in eqn.invars if not hasattr(v, "val"))
        if hit:
            tainted.update(eqn.outvars)
        yield _Eqn(eqn.primitive, eqn.invars, eqn.outvars, eqn.source_info, hit)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


# ------------------------------------------------------------------ results


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["value", "grad", "error", "step"],
    meta_fields=["evaluations", "scheme", "order"],
)  # a pytree: ``jax.jit(d.gradient(f))`` works
@dataclass(frozen=True)
class FDResult:
    """A finite-difference gradient with what it cost and how far off it may be.

    ``error`` bounds ``|grad - true gradient|`` per coordinate (same pytree as ``grad``):
    twice the change when the step is doubled, ``2|D(h) - D(2h)|`` (the truncation error of
    ``D(h)`` is ``|D(h) - D(2h)| / (2^p - 1)`` to leading order), plus the rounding
    ``S * 4eps * (max(1, |f(x)|)/h + r|D|)`` of the rule's weights ``S = sum |w_j|`` and reach
    ``r = max |o_j|``, taking each evaluation of ``f`` as correct to 4 ulps of
    ``max(1, |f|)`` (``f`` may be a small sum of large terms). ``evaluations``
    counts calls of ``f`` (both steps and ``f(x)`` once); ``step`` the step per coordinate.
    """

    value: Any
    grad: Any
    error: Any
    evaluations: int
    step: Any
    scheme: str
    order: int

    @property
    def max_error(self) -> float:
        """The largest error estimate over all coordinates."""
        return max(float(jnp.max(e)) for e in jax.tree_util.tree_leaves(self.error))

    def __repr__(self) -> str:
        return (
            f"FDResult(scheme={self.scheme!r}, order={self.order}, value={float(self.value):.6g}, "
            f"evaluations={self.evaluations}, max_error={self.max_error:.2e}, "
            f"grad={self.grad!r})"
        )
