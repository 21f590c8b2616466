"""JAX's own autodiff test list, run against dual and tape.

The elementwise operations that JAX's ``tests/lax_autodiff_test.py`` differentiates (its grad
specs and special values), with each form of broadcasting its shape groups test, in float64
and, where JAX tests them, complex128: dual's JVP and tape's VJP must equal ``jax.jvp`` /
``jax.vjp`` to rho <= 1e-12, and so must the second order (dual's JVP of tape's VJP against
``jax.jvp`` of ``jax.vjp``). One compiled program per dtype keeps the suite fast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import diffkit as dk
from diffkit.accuracy import rho_tree

# op -> (number of arguments, input domain, complex too?)
OPS = {
    lax.neg: (1, "real", True),
    lax.floor: (1, "fraction", False),
    lax.ceil: (1, "fraction", False),
    lax.round: (1, "fraction", False),
    lax.exp: (1, "small", True),
    lax.exp2: (1, "small", True),
    lax.expm1: (1, "real", True),
    lax.log: (1, "positive", True),
    lax.log1p: (1, "positive", True),
    lax.sinh: (1, "real", True),
    lax.cosh: (1, "real", True),
    lax.tanh: (1, "real", True),
    lax.sin: (1, "real", True),
    lax.cos: (1, "real", True),
    lax.tan: (1, "unit", True),
    lax.asin: (1, "unit", False),
    lax.acos: (1, "unit", False),
    lax.atan2: (2, "real", False),
    lax.erf: (1, "small", False),
    lax.erfc: (1, "small", False),
    lax.erf_inv: (1, "small", False),
    lax.bessel_i0e: (1, "real", False),
    lax.bessel_i1e: (1, "real", False),
    lax.abs: (1, "positive", True),
    lax.pow: (2, "positive", True),
    lax.sqrt: (1, "positive", True),
    lax.rsqrt: (1, "positive", True),
    lax.cbrt: (1, "not_small", False),
    lax.logistic: (1, "real", True),
    lax.add: (2, "real", True),
    lax.sub: (2, "real", True),
    lax.mul: (2, "real", True),
    lax.div: (2, "not_small", True),
    lax.max: (2, "real", False),
    lax.min: (2, "real", False),
}
COMPLEX_ONLY = {lax.real: 1, lax.imag: 1, lax.conj: 1}  # real -> complex: lax.complex
SPECIAL_VALUES = {
    lax.sinh: [0.0],
    lax.cosh: [0.0],
    lax.tanh: [0.0, 1000.0],
    lax.sin: [0.0, np.pi, np.pi / 2, np.pi / 4],
    lax.cos: [0.0, np.pi, np.pi / 2, np.pi / 4],
    lax.tan: [0.0],
    lax.asin: [0.0],
    lax.acos: [0.0],
    lax.atan: [0.0, 1000.0],
    lax.erf: [0.0, 10.0],
    lax.erfc: [0.0, 10.0],
}
# From JAX's broadcast-compatible shape groups: every form of broadcasting its groups test
# (equal shapes, a scalar, a row against a column, a size-1 axis), once each: its full
# product of shapes and its rank-3 group test nothing more here, at three times the compile.
SHAPES = {
    1: [((3,),), ((3, 4),)],
    2: [((3,), (3,)), ((), (3, 4)), ((3, 1), (1, 4)), ((3, 4), (1, 4))],
}


def _sample(rng, domain: str, shape, dtype):
    draw = {
        "real": lambda: rng.normal(size=shape) * 3,
        "small": lambda: rng.normal(size=shape) * 1e-1,
        "positive": lambda: rng.uniform(0.1, 3.0, size=shape),
        "not_small": lambda: np.sign(rng.normal(size=shape)) * rng.uniform(0.5, 3.0, size=shape),
        "unit": lambda: rng.uniform(-0.9, 0.9, size=shape),
        "fraction": lambda: rng.uniform(0.1, 0.4, size=shape),
    }[domain]
    x = draw()
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * (draw() if domain != "positive" else rng.uniform(-0.5, 0.5, size=shape))
    return jnp.asarray(x, dtype)


def _cases(dtype):
    rng = np.random.default_rng(0)
    ops = {op: spec for op, spec in OPS.items() if dtype == "float64" or spec[2]}
    if dtype == "complex128":
        ops.update({op: (n, "real", True) for op, n in COMPLEX_ONLY.items()})
    for op, (nargs, domain, _) in ops.items():
        for shapes in SHAPES[nargs]:
            xs = tuple(_sample(rng, domain, s, dtype) for s in shapes)
            yield f"{op.__name__}{list(shapes)}", op, xs
    if dtype == "float64":
        yield "complex", lax.complex, (_sample(rng, "real", (3,), dtype),) * 2
        for op, values in SPECIAL_VALUES.items():
            for value in values:
                yield f"{op.__name__}({value})", op, (jnp.asarray(value, dtype),)


def _second(vjp, f, ct):
    return lambda *xs: vjp(f, *xs)[1](ct)


@pytest.mark.parametrize(
    "dtype", [pytest.param("float64", marks=pytest.mark.slow), "complex128"]
)  # float64: ~3 s on 2 cores (complex128 covers the same functions in the unit tier)
def test_jax_autodiff_list(x64: None, dtype: str) -> None:
    dual, tape = dk.get("dual"), dk.get("tape")
    cases = list(_cases(dtype))
    rng = np.random.default_rng(1)

    def direction(x):
        return _sample(rng, "real", jnp.shape(x), x.dtype)

    inputs = []
    for _, op, xs in cases:
        ts = tuple(direction(x) for x in xs)
        out = jax.eval_shape(op, *xs)
        inputs.append((xs, ts, _sample(rng, "real", out.shape, out.dtype)))

    @jax.jit
    def run(inputs):
        got, want = [], []
        for (_, op, _), (xs, ts, ct) in zip(cases, inputs, strict=True):
            got.append(
                (
                    dual.jvp(op, xs, ts)[1],
                    tape.vjp(op, *xs)[1](ct),
                    dual.jvp(_second(tape.vjp, op, ct), xs, ts)[1],
                )
            )
            want.append(
                (
                    jax.jvp(op, xs, ts)[1],
                    jax.vjp(op, *xs)[1](ct),
                    jax.jvp(_second(jax.vjp, op, ct), xs, ts)[1],
                )
            )
        return got, want

    bad = []
    for (name, _, _), got, want in zip(cases, *run(inputs), strict=True):
        for what, g, w in zip(("jvp", "vjp", "jvp of vjp"), got, want, strict=True):
            err = rho_tree(g, w)
            if not err <= 1e-12:
                bad.append(f"{name} {what}: rho {err:.1e}")
    assert not bad, f"{len(bad)} of {3 * len(cases)} disagree: {bad[:10]}"
