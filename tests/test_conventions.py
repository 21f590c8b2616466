"""JAX's conventions where the spec table's random inputs do not reach: derivatives at exact
special points (0, -0, ties, bounds, inf), gradients of real functions of complex inputs, and
the refusals where JAX defines no derivative. Every check compares dual and tape with JAX's
own jax.jvp / jax.vjp / jax.grad, in float32 and float64, bit for bit where the points are
exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import diffkit as dk

INF = np.inf
# function of one scalar, and the exact points where its rule has a special case
KINKS = {
    "abs": (lax.abs, [0.0, -0.0, 1.0, -INF]),
    "sqrt": (lax.sqrt, [0.0, -0.0, INF]),
    "cbrt": (lax.cbrt, [0.0, -0.0]),
    "pow x": (lambda x: lax.pow(x, 2.0), [0.0, -1.0]),
    "pow int y": (lambda x: lax.pow(x, jnp.int32(0)), [0.0, INF]),
    "pow y": (lambda y: lax.pow(0.0, y), [0.0, 1.0, 2.0, -1.0]),
    "clamp x": (lambda x: lax.clamp(-1.0, x, 1.0), [-1.0, 1.0, 2.0]),
    "clamp lo": (lambda lo: lax.clamp(lo, 0.5, 1.0), [0.5, 0.0, 2.0]),
    "clamp hi": (lambda hi: lax.clamp(0.0, 0.5, hi), [0.5, 1.0, -1.0]),
    "clamp of inf": (lambda x: lax.clamp(-1.0, lax.sqrt(x), 1.0) * 0.5, [0.0]),
    "max tie": (lambda x: lax.max(x, 1.0), [1.0]),
    "sign": (lax.sign, [0.0, -0.0]),
    "round": (lax.round, [0.5, -0.5]),
    "atanh": (lax.atanh, [1.0]),
    "log": (lax.log, [0.0, INF]),
    "div": (lambda x: lax.div(1.0, x), [0.0]),
    "bessel_i1e": (lax.bessel_i1e, [0.0, -0.0, 1e-30]),
    "bessel_i0e": (lax.bessel_i0e, [0.0]),
}


def _same(got, want) -> bool:
    """Equal bit for bit up to the sign of zero, NaN equal to NaN."""
    a, b = np.asarray(got), np.asarray(want)
    return a.dtype == b.dtype and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _derivatives(d_fwd, d_rev, f, x):
    """JVP, VJP and the second order (forward over reverse) of ``f`` at ``x``."""
    one = jnp.ones_like(x)
    pulled = lambda x: d_rev(f, x)[1](one)[0]  # noqa: E731
    return (
        d_fwd(f, (x,), (one,))[1],
        d_rev(f, x)[1](one)[0],
        d_fwd(pulled, (x,), (one,))[1],
    )


@pytest.mark.parametrize("name", KINKS)
def test_kinks_match_jax(name: str, dtype: str) -> None:
    f, points = KINKS[name]
    dual, tape = dk.get("dual"), dk.get("tape")
    ours = jax.jit(lambda x: _derivatives(dual.jvp, tape.vjp, f, x))
    theirs = jax.jit(lambda x: _derivatives(jax.jvp, jax.vjp, f, x))
    for p in points:
        x = jnp.asarray(p, dtype)
        for what, got, want in zip(("jvp", "vjp", "jvp of vjp"), ours(x), theirs(x), strict=True):
            assert _same(got, want), f"{name} at {p} ({dtype}) {what}: ours {got}, JAX's {want}"


COMPLEX_FUNS = {
    "abs squared": lambda z: jnp.sum(jnp.abs(z) ** 2),
    "real of exp": lambda z: jnp.real(jnp.sum(jnp.exp(z) * z)),
    "imag of log": lambda z: jnp.sum(jnp.imag(jnp.log(z)) * jnp.abs(z)),
    "angle": lambda z: jnp.sum(jnp.angle(z)),
    "power spectrum": lambda z: jnp.sum(jnp.abs(jnp.fft.fft(z)) ** 2),
    "sqrt, div, pow": lambda z: jnp.real(jnp.sum(jnp.sqrt(z) / (z + 2) + z ** (0.5 + 1j))),
}


@pytest.mark.parametrize("name", COMPLEX_FUNS)
def test_grad_of_real_function_of_complex_input(name: str, dtype: str) -> None:
    """grad and jacobian of a real function of complex inputs: JAX's d/dRe - i d/dIm."""
    f = COMPLEX_FUNS[name]
    cdtype = jnp.complex128 if dtype == "float64" else jnp.complex64
    z = jnp.asarray([1 + 2j, -0.5 + 0.3j, 0.7 - 1.1j], cdtype)
    two = lambda z: jnp.stack([f(z), f(2 * z)])  # noqa: E731

    @jax.jit
    def run(z):
        got = {d: (dk.get(d).grad(f)(z), dk.get(d).jacobian(two)(z)) for d in ("dual", "tape")}
        return got, (jax.grad(f)(z), jax.jacrev(two)(z))

    got, want = run(z)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for d, (g, jac) in got.items():
        assert g.dtype == want[0].dtype and jac.dtype == want[1].dtype
        for a, b in ((g, want[0]), (jac, want[1])):
            err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            assert err <= tol, f"{d} {name}: {err:.1e}"


def _like(v, x):
    """``v`` with ``x``'s dtype (its real part where ``x`` is real)."""
    return (v if jnp.iscomplexobj(x) else jnp.real(v)).astype(x.dtype)


def test_complex_jvp_vjp_derived(x64: None) -> None:
    """dual's VJP (from JVPs) and tape's JVP (from VJPs) follow JAX's pairing Re(u v)."""
    z = jnp.asarray([1 + 2j, -0.5 + 0.3j])
    cases = [
        (lambda z: jnp.exp(z) * jnp.conj(z), z),
        (lambda z: jnp.abs(z), z),
        (lambda x: jnp.exp(1j * x), jnp.real(z)),
    ]
    for f, x in cases:
        y = f(x)
        ct = _like(jnp.ones(y.shape) * (1.3 - 0.4j), y)
        t = _like(jnp.ones(x.shape) * (0.3 + 0.9j), x)
        want_vjp, want_jvp = jax.vjp(f, x)[1](ct)[0], jax.jvp(f, (x,), (t,))[1]
        assert np.allclose(dk.get("dual").vjp(f, x)[1](ct)[0], want_vjp, rtol=1e-13, atol=0)
        assert np.allclose(dk.get("tape").jvp(f, (x,), (t,))[1], want_jvp, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["dual", "tape"])
def test_complex_output_grad_refused_as_jax(name: str) -> None:
    z = jnp.asarray([1 + 2j])
    f = lambda z: jnp.sum(z * z)  # noqa: E731
    with pytest.raises(TypeError):  # JAX: grad requires real-valued outputs
        jax.grad(f)(z)
    with pytest.raises(TypeError, match="real floating-point outputs"):
        dk.get(name).grad(f)(z)


REFUSED = {  # where JAX defines no derivative: (function, argument index)
    "polygamma's order": (lambda m: lax.polygamma(m, jnp.full_like(m, 2.0)), (1.0,)),
    "betainc's a": (lambda a: lax.betainc(a, jnp.full_like(a, 2.0), jnp.full_like(a, 0.3)), (1.5,)),
    "zeta": (lambda q: lax.zeta(jnp.full_like(q, 3.0), q), (1.5,)),
    "igamma_grad_a": (lambda a: lax.igamma_grad_a(a, jnp.full_like(a, 2.0)), (1.5,)),
}


@pytest.mark.parametrize("name", REFUSED)
def test_refused_where_jax_raises(name: str, x64: None) -> None:
    f, args = REFUSED[name]
    x = jnp.asarray(args[0])
    with pytest.raises((ValueError, NotImplementedError)):
        jax.jvp(f, (x,), (x,))
    for d in ("dual", "tape"):
        with pytest.raises(dk.UnsupportedPrimitiveError):
            dk.get(d).grad(f)(x)
