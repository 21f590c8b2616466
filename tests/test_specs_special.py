"""Spec rows for the special-function and complex-number section of the rule table
(:mod:`diffkit.rules.special`), and for JAX's conventions at kinks and through casts.

Complex values are built inside each row from real inputs (``lax.complex``) and leave it as
real and imaginary parts, so the spec table's real tangents and cotangents reach every
complex intermediate. Exact special points (inf, nan, +-0 one at a time) are checked in
``tests/test_conventions.py``; the ``kinks`` domain here puts ties, bounds and zeros in the
random inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _spec import DTYPES, R34, R34_2, Spec, check_rows, ew, row_params
from jax import lax


def _c(x, y):
    return lax.complex(x, y)


def _parts(z):
    """A complex result as real outputs (the spec table draws real cotangents)."""
    return jnp.real(z), jnp.imag(z)


def _full(x, v):
    """A constant shaped like ``x`` (no dependence on it)."""
    return jnp.full(jnp.shape(x), v, jnp.result_type(x))


KEY = jax.random.key(7)
P34 = (("pos", (3, 4)),)
P34_2 = (("pos", (3, 4)), ("pos", (3, 4)))
K34 = (("kinks", (3, 4)),)
R6 = (("real", (6,)),)

SECTIONS: dict[str, list[Spec]] = {
    "special2": [
        Spec("polygamma", lambda x: lax.polygamma(_full(x, 2.0), x), P34, tol32=1e-4),
        ew("bessel_i0e", lax.bessel_i0e, "real"),
        ew("bessel_i1e", lax.bessel_i1e, "zeros"),  # the |x| <= eps branch at 0
        Spec("igamma", lambda x: lax.igamma(_full(x, 1.7), 2 * x), P34, tol32=1e-4),
        Spec(  # JAX has no derivative of igamma_grad_a: no second order in a
            "igamma", lambda a, x: lax.igamma(a, x), P34_2, tol32=1e-3, label="a", order2=False
        ),
        Spec("igammac", lambda x: lax.igammac(_full(x, 0.8), 2 * x), P34, tol32=1e-4),
        Spec("igammac", lax.igammac, P34_2, tol32=1e-3, label="a", order2=False),
        Spec(
            "regularized_incomplete_beta",
            lambda x: lax.betainc(_full(x, 1.5), _full(x, 2.5), x / 2.5),
            P34,
            tol32=1e-4,
        ),
        Spec("random_gamma", lambda a: jax.random.gamma(KEY, a), P34, tol32=1e-4),
        Spec(
            "random_gamma",
            lambda a: jax.random.loggamma(KEY, a),
            P34,
            tol32=1e-4,
            label="log space",
        ),
        Spec(
            "bitcast_convert_type",
            lambda x: (
                lax.bitcast_convert_type(x.astype(jnp.float16), jnp.bfloat16).astype(x.dtype) + x
            ),
            R34,
        ),
    ],
    "complex": [
        Spec("complex", lambda x, y: _parts(_c(x, y) * _c(y, 2 * x)), R34_2),
        Spec("real", lambda x, y: jnp.real(_c(x, y) ** 2) * x, R34_2),
        Spec("imag", lambda x, y: jnp.imag(_c(x, y) ** 2) * y, R34_2),
        Spec("conj", lambda x, y: _parts(jnp.conj(_c(x, y)) * _c(y, x) ** 2), R34_2),
        Spec("conj", lambda x: _parts(lax.conj(x) * (1 + 2j)), R34, label="of a real"),
        Spec("abs", lambda x, y: jnp.abs(_c(x, y)) * x, R34_2, label="complex"),
        Spec("mul", lambda x, y: _parts(_c(x, y) * _c(y, x)), R34_2, label="complex"),
        Spec("div", lambda x, y: _parts(_c(x, y) / _c(y, x)), R34_2, label="complex"),
        Spec("exp", lambda x, y: _parts(jnp.exp(_c(x, y))), R34_2, label="complex"),
        Spec("log", lambda x, y: _parts(jnp.log(_c(x, y))), R34_2, label="complex"),
        Spec("sqrt", lambda x, y: _parts(jnp.sqrt(_c(x, y))), R34_2, label="complex"),
        Spec("pow", lambda x, y: _parts(_c(x, y) ** _c(y, x)), P34_2, label="complex"),
        Spec("integer_pow", lambda x, y: _parts(_c(x, y) ** 3), R34_2, label="complex"),
        Spec("tanh", lambda x, y: _parts(jnp.tanh(_c(x, y) / 2)), R34_2, label="complex"),
        Spec("sin", lambda x, y: _parts(jnp.sin(_c(x, y))), R34_2, label="complex"),
        Spec("dot_general", lambda x, y: _parts(_c(x, y) @ _c(y, x).T), R34_2, label="complex"),
        Spec(
            "convert_element_type",
            lambda x, y: lax.convert_element_type(_c(x, y), x.dtype) * y,
            R34_2,
            label="c2r",
        ),
        Spec("fft", lambda x, y: _parts(jnp.fft.fft(_c(x, y))), R34_2),
        Spec("fft", lambda x, y: _parts(jnp.fft.ifft2(_c(x, y))), R34_2, label="ifft2"),
        Spec("fft", lambda x: _parts(jnp.fft.rfft(x)), R6, label="rfft even"),
        Spec("fft", lambda x: _parts(jnp.fft.rfft2(x[:, :3])), R34, label="rfft2 odd"),
        Spec("fft", lambda x, y: jnp.fft.irfft(_c(x, y), 6), R34_2, label="irfft even"),
        Spec("fft", lambda x, y: jnp.fft.irfftn(_c(x, y), (3, 7)), R34_2, label="irfft2 odd"),
    ],
    "kinks": [
        Spec("abs", lax.abs, K34, label="kinks"),
        Spec("max", lambda x, y: lax.max(x, jnp.round(y)), (K34[0], K34[0]), label="ties"),
        Spec("min", lambda x, y: lax.min(x, y), (K34[0], K34[0]), label="ties"),
        Spec("clamp", lambda x: lax.clamp(-0.5, x, 0.5), K34, label="at bounds"),
        Spec(
            "clamp",
            lambda lo, x, hi: lax.clamp(lo, x, hi),
            (K34[0], K34[0], K34[0]),
            label="bounds at x",
        ),
        Spec("sign", lambda x: lax.sign(x) * x, K34, label="kinks"),
        Spec("round", lambda x: lax.round(x) * x, K34, label="halves"),
        Spec("pow", lambda x: lax.pow(x, jnp.arange(12).reshape(3, 4) % 3), K34, label="int y"),
        Spec("pow", lambda y: lax.pow(_full(y, 0.0), y), P34, label="x = 0"),
        Spec("rem", lambda x: lax.rem(x, 0.5), K34, label="kinks"),
    ],
    "casts": [
        Spec(
            "convert_element_type",
            lambda x: x.astype(jnp.float16).astype(jnp.float32).astype(x.dtype) * x,
            R34,
            label="through float32",
        ),
        Spec(
            "convert_element_type",
            lambda x: (
                x.astype(jnp.bfloat16).astype(x.dtype) * x.astype(jnp.float16).astype(x.dtype)
            ),
            R34,
            label="bfloat16, float16",
        ),
        Spec(
            "convert_element_type",
            lambda x: x.astype(jnp.int32).astype(x.dtype) * x,
            (("kinks", (3, 4)),),
            label="integer",
        ),
        Spec("bitcast_convert_type", lambda x: jnp.frexp(x)[0] * x, R34, label="frexp"),
        Spec("bitcast_convert_type", lambda x: jnp.ldexp(x, 3) * x, R34, label="ldexp"),
    ],
}


@pytest.mark.parametrize("spec", row_params(SECTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_match_jax(spec: Spec, dtype: str) -> None:
    """The row against jax.jvp / jax.vjp, first and second order: rho <= 1e-12 in float64,
    the row's ``tol32`` in float32 (float32 is marked slow for time only; the full suite runs
    it)."""
    with jax.enable_x64(dtype == "float64"):
        failures = check_rows([spec], dtype)
    assert not failures, "\n".join(failures)
