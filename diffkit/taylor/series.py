"""Truncated Taylor series as lists of coefficients, and their arithmetic.

A series is a list ``[x_0, x_1, ..., x_K]`` of *normalised* Taylor coefficients of a path
``x(t) = sum_k x_k t^k`` (``x_k = x^(k)(0) / k!``); ``None`` stands for a zero coefficient
(a constant's higher coefficients), so products skip it. Every function here returns the
coefficients of the result up to the same order ``K = len(x) - 1``.

The elementwise functions follow their ODEs (``y' = g(x, y) x'``): matching the
coefficients of ``t^(k-1)`` gives ``y_k`` from ``y_0 .. y_(k-1)`` in ``O(k)`` products, so a
series of order ``K`` costs ``O(K^2)``, where nesting first-order rules costs ``O(2^K)``.

Example:
    >>> import jax.numpy as jnp
    >>> y = exp([jnp.array(0.0), jnp.array(1.0), None, None])  # exp(t) = 1 + t + t^2/2 + ...
    >>> [round(float(c), 4) for c in y]
    [1.0, 1.0, 0.5, 0.1667]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

__all__ = [
    "add",
    "cauchy",
    "div",
    "exp",
    "log",
    "mul",
    "ode",
    "power",
    "reciprocal",
    "scale",
    "sin_cos",
    "sinh_cosh",
    "sqrt",
]

Series = list[Any]


def _plus(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else a + b


def _times(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a * b


def cauchy(a: Sequence[Any], b: Sequence[Any], k: int, lo: int = 0) -> Any:
    """``sum_{i=lo}^{k-lo} a_i b_(k-i)``: the coefficient ``k`` of a product, its terms with
    both indices at least ``lo``; ``None`` when every term is zero."""
    total = None
    for i in range(lo, k - lo + 1):
        total = _plus(total, _times(a[i], b[k - i]))
    return total


def add(a: Sequence[Any], b: Sequence[Any]) -> Series:
    return [_plus(x, y) for x, y in zip(a, b, strict=True)]


def scale(a: Sequence[Any], c: Any) -> Series:
    """Every coefficient times ``c`` (a scalar or an array that broadcasts)."""
    return [None if x is None else x * c for x in a]


def mul(a: Sequence[Any], b: Sequence[Any]) -> Series:
    """The product's series (Cauchy product), ``O(K^2)``."""
    return [cauchy(a, b, k) for k in range(len(a))]


def _zero_if_none(v: Any, like: Any) -> Any:
    return jnp.zeros_like(like) if v is None else v


def div(a: Sequence[Any], b: Sequence[Any]) -> Series:
    """``a / b``: from ``b y = a``, ``y_k = (a_k - sum_{j>=1} b_j y_(k-j)) / b_0``."""
    y: Series = [a[0] / b[0]]
    for k in range(1, len(a)):
        s = None
        for j in range(1, k + 1):
            s = _plus(s, _times(b[j], y[k - j]))
        r = _plus(a[k], None if s is None else -s)
        y.append(None if r is None else r / b[0])
    return y


def _neg(a: Any) -> Any:
    return None if a is None else -a


def reciprocal(b: Sequence[Any]) -> Series:
    return div([jnp.ones_like(b[0])] + [None] * (len(b) - 1), b)


def ode(x: Sequence[Any], y0: Any, z_of: Any) -> Series:
    """The series of ``y`` with ``y' = z x'``, where ``z_of(y, m)`` is coefficient ``m`` of
    ``z`` from ``y_0 .. y_m``: ``k y_k = sum_{j=1}^{k} j x_j z_(k-j)``."""
    y: Series = [y0]
    z: Series = [z_of(y, 0)]
    for k in range(1, len(x)):
        s = None
        for j in range(1, k + 1):
            s = _plus(s, _times(x[j], _times(z[k - j], j)))
        y.append(None if s is None else s / k)
        z.append(z_of(y, k))
    return y


def exp(x: Sequence[Any]) -> Series:
    """``y' = y x'``."""
    return ode(x, jnp.exp(x[0]), lambda y, m: y[m])


def log(x: Sequence[Any], x0: Any = None) -> Series:
    """``log x`` (``log(x0 + ...)`` with the constant term ``x0`` in place of ``x[0]``, as
    ``log1p`` needs): ``y_k = (x_k - (1/k) sum_{j=1}^{k-1} (k-j) x_j y_(k-j)) / x_0``."""
    c = x[0] if x0 is None else x0
    y: Series = [jnp.log(c) if x0 is None else jnp.log1p(x[0])]
    for k in range(1, len(x)):
        s = None
        for j in range(1, k):
            s = _plus(s, _times(x[j], _times(y[k - j], (k - j) / k)))
        r = _plus(x[k], _neg(s))
        y.append(None if r is None else r / c)
    return y


def power(x: Sequence[Any], r: Any, y0: Any) -> Series:
    """``x^r`` for a constant ``r`` (``y_0 = x_0^r`` given): from ``x y' = r y x'``,
    ``k x_0 y_k = r sum_{j=1}^{k} j x_j y_(k-j) - sum_{j=1}^{k-1} (k-j) x_j y_(k-j)``."""
    y: Series = [y0]
    for k in range(1, len(x)):
        s = None
        for j in range(1, k + 1):
            s = _plus(s, _times(x[j], _times(y[k - j], r * j - (k - j))))
        y.append(None if s is None else s / (k * x[0]))
    return y


def sqrt(x: Sequence[Any]) -> Series:
    """From ``y^2 = x``: ``y_k = (x_k - sum_{j=1}^{k-1} y_j y_(k-j)) / (2 y_0)``."""
    y: Series = [jnp.sqrt(x[0])]
    for k in range(1, len(x)):
        r = _plus(x[k], _neg(cauchy([*y, None], [*y, None], k, 1)))
        y.append(None if r is None else r / (2 * y[0]))
    return y


def sin_cos(x: Sequence[Any]) -> tuple[Series, Series]:
    """``s' = c x'``, ``c' = -s x'``."""
    s: Series = [jnp.sin(x[0])]
    c: Series = [jnp.cos(x[0])]
    for k in range(1, len(x)):
        a = b = None
        for j in range(1, k + 1):
            a = _plus(a, _times(x[j], _times(c[k - j], j / k)))
            b = _plus(b, _times(x[j], _times(s[k - j], -j / k)))
        s.append(a)
        c.append(b)
    return s, c


def sinh_cosh(x: Sequence[Any]) -> tuple[Series, Series]:
    """``s' = c x'``, ``c' = s x'``."""
    s: Series = [jnp.sinh(x[0])]
    c: Series = [jnp.cosh(x[0])]
    for k in range(1, len(x)):
        a = b = None
        for j in range(1, k + 1):
            a = _plus(a, _times(x[j], _times(c[k - j], j / k)))
            b = _plus(b, _times(x[j], _times(s[k - j], j / k)))
        s.append(a)
        c.append(b)
    return s, c


def square_coefficient(y: Sequence[Any], m: int) -> Any:
    """Coefficient ``m`` of ``y^2`` from ``y_0 .. y_m``."""
    return cauchy(y, y, m)
