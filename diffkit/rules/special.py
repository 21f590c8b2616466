"""Rows of the rule table (:mod:`diffkit.rules.table`): special functions and complex numbers.

Each row is built by one of the constructors in :mod:`diffkit.rules.kinds`;
:mod:`diffkit.rules.table` merges ``ROWS`` into its ``RULES`` table. The partials are JAX's own
(``jax/_src/lax/special.py``, ``lax.py``, ``fft.py``), so values at the edges of the domains
agree too. Where JAX defines no derivative in an argument (``polygamma``'s order,
``regularized_incomplete_beta``'s ``a`` and ``b``), the row refuses it with
:class:`~diffkit._core.errors.UnsupportedPrimitiveError`, as JAX raises. ``zeta`` and
``igamma_grad_a`` have no derivative in JAX at all, so they have no row
(``jax.scipy.special.zeta`` carries its own rule, a ``custom_jvp``).

Complex values follow JAX's convention: a cotangent is the transpose of the tangent map (no
conjugation), pairing ``u`` with ``v`` by ``Re(u v)``. So ``real`` and ``complex`` transpose to
each other, ``imag``'s transpose is ``complex(0, -ct)``, and ``fft``'s transposes follow.

Example:
    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> x = jnp.array(1.5)
    >>> y = lax.bessel_i0e(x)
    >>> [round(float(t), 6) for t in ROWS["bessel_i0e"].jvp(None, [x], [1.0], [y], {})]
    [-0.148394]
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.types import Array
from diffkit.rules.kinds import Rule, elementwise, linear, unbroadcast, zero


def _refuse(prim: str, arg: str):
    """A partial that refuses: JAX defines no derivative of ``prim`` in ``arg``."""

    def partial(*_: Any, **__: Any) -> Array:
        raise UnsupportedPrimitiveError(
            f"{prim}: no derivative in its argument {arg} (JAX defines none either); "
            f"keep {arg} constant (independent of the differentiated inputs)"
        )

    return partial


def _bessel_i1e(out: Array, x: Array) -> Array:
    """d i1e / dx = i0e(x) - i1e(x) (sign(x) + 1/x), and 1/2 where |x| <= eps (as JAX)."""
    eps = jnp.finfo(jnp.result_type(x)).eps
    big = jnp.abs(x) > eps
    safe = jnp.where(big, x, eps)
    dy = lax.bessel_i0e(safe) - out * (jnp.sign(safe) + 1 / safe)
    return jnp.where(big, dy, 0.5)


def _igamma_x(out: Array, a: Array, x: Array) -> Array:
    """d P(a, x) / dx = x^(a-1) e^(-x) / Gamma(a)."""
    return jnp.exp(-x + (a - 1) * jnp.log(x) - lax.lgamma(a))


def _betainc_x(out: Array, a: Array, b: Array, x: Array) -> Array:
    """d I_x(a, b) / dx = x^(a-1) (1-x)^(b-1) / B(a, b)."""
    lbeta = lax.lgamma(a) + lax.lgamma(b) - lax.lgamma(a + b)
    return jnp.exp((b - 1) * jnp.log1p(-x) + (a - 1) * jnp.log(x) - lbeta)


def _gamma_sample(out: Array, key: Array, a: Array, *, log_space: bool) -> Array:
    """d sample / d a of ``random_gamma`` (implicit reparametrisation, as JAX's rule), from
    ``lax.random_gamma_grad``; in log space, of the sample's log (a zero sample as the
    smallest normal number)."""
    if not log_space:
        return lax.random_gamma_grad(a, out)
    sample = jnp.exp(out)
    sample = jnp.where(sample == 0, jnp.finfo(sample.dtype).tiny, sample)
    return lax.random_gamma_grad(a, sample) / sample


# ------------------------------------------------------------------ complex


def _complex_t(i: int, ct: Array, x: Array, y: Array) -> Array:
    part = lax.real(ct) if i == 0 else -lax.imag(ct)
    return unbroadcast(part, x if i == 0 else y)


def _conj_t(i: int, ct: Array, x: Array, *, input_dtype: Any) -> Array:
    return jnp.conj(ct) if jnp.issubdtype(input_dtype, jnp.complexfloating) else lax.real(ct)


def _hermitian_weights(n: int, m: int, dtype: Any) -> Array:
    """Along an rfft's last axis of ``m = n // 2 + 1`` entries: 1 for the entries that stand
    for themselves only (the constant term, and the Nyquist one when ``n`` is even), 2 for
    the others (each also stands for its conjugate)."""
    w = np.full(m, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return jnp.asarray(w, dtype)


def _fft_t(i: int, ct: Array, x: Array, *, fft_type: Any, fft_lengths: tuple[int, ...]) -> Array:
    """The transpose of each fft type. FFT and IFFT are symmetric matrices: themselves.
    RFFT (real x to the first half of the spectrum): ``Re(F^T ct)`` over the kept half, which
    is ``N irfft(conj(ct) / w)`` (irfft adds each entry's conjugate twin, hence ``w``).
    IRFFT: its adjoint is the rfft scaled by ``w / N``; the transpose is its conjugate."""
    kind = getattr(fft_type, "name", str(fft_type)).split(".")[-1]
    size = math.prod(fft_lengths)
    if kind == "RFFT":
        w = _hermitian_weights(fft_lengths[-1], ct.shape[-1], lax.real(ct).dtype)
        return size * lax.fft(jnp.conj(ct) / w, "IRFFT", fft_lengths)
    if kind == "IRFFT":
        spectrum = lax.fft(ct, "RFFT", fft_lengths)
        w = _hermitian_weights(fft_lengths[-1], spectrum.shape[-1], ct.dtype)
        return jnp.conj(spectrum * (w / size))
    return lax.fft(ct, fft_type, fft_lengths)


ROWS: dict[str, Rule] = {
    # special functions
    "polygamma": elementwise(
        _refuse("polygamma", "m (the order)"), lambda out, m, x: lax.polygamma(m + 1, x)
    ),
    "bessel_i0e": elementwise(lambda out, x: lax.bessel_i1e(x) - jnp.sign(x) * out),
    "bessel_i1e": elementwise(_bessel_i1e),
    "igamma": elementwise(lambda out, a, x: lax.igamma_grad_a(a, x), _igamma_x),
    "igammac": elementwise(
        lambda out, a, x: -lax.igamma_grad_a(a, x), lambda out, a, x: -_igamma_x(out, a, x)
    ),
    "regularized_incomplete_beta": elementwise(
        _refuse("regularized_incomplete_beta", "a"),
        _refuse("regularized_incomplete_beta", "b"),
        _betainc_x,
    ),
    "random_gamma": elementwise(_refuse("random_gamma", "key"), _gamma_sample, params=True),
    # bit patterns: no derivative flows (JAX: a zero tangent)
    "bitcast_convert_type": zero(),
    # complex numbers
    "real": linear(lambda i, ct, x: lax.complex(ct, jnp.zeros_like(ct))),
    "imag": linear(lambda i, ct, x: lax.complex(jnp.zeros_like(ct), -ct)),
    "complex": linear(_complex_t),
    "conj": linear(_conj_t),
    "fft": linear(_fft_t),
}
