"""Differential operators (diffkit.operators) against independent references: jax.hessian,
nested jax.jvp, analytic formulas; stochastic estimators judged as estimators (bias within
three standard errors over fixed keys, variance against theory)."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit.harness.operator_families import mlp, mlp_params
from diffkit.operators import EXACT, biharmonic, hessian_trace, hvp, laplacian, linear_operator
from diffkit.operators import variance as theory


def _net(d: int = 4, width: int = 6, activation: str = "tanh"):
    params = mlp_params(d, width, 2, jnp.float64, np.random.default_rng(1))
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, d))
    return (lambda z: mlp(params, z, activation)), x


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_every_exact_laplacian_agrees_with_the_hessian_trace(activation: str, x64: None) -> None:
    f, x = _net(activation=activation)
    want = float(jnp.trace(jax.hessian(f)(x)))
    # jax.experimental.jet fails on softplus (a custom_jvp function: an UnexpectedTracerError
    # inside jet's custom_jvp handling), so the "jet" method runs on tanh only
    methods = [m for m in EXACT if not (m == "jet" and activation == "softplus")]
    got = jax.jit(lambda x: {m: laplacian(f, x, m) for m in methods})(x)
    for method, value in got.items():
        tol = 1e-5 if method == "fd" else 1e-10
        assert abs(float(value) - want) <= tol * max(1.0, abs(want)), (method, value, want)


def test_weighted_trace_and_shapes(x64: None) -> None:
    f, x = _net()
    sigma = jnp.asarray(np.random.default_rng(3).normal(size=(4, 2)))
    H = jax.hessian(f)(x)
    want = float(jnp.sum(sigma * (H @ sigma)))
    for method in ("collapsed", "taylor", "hvp", "nested-reverse"):
        got = jax.jit(lambda x, m=method: hessian_trace(f, x, m, sigma=sigma))(x)
        assert float(got) == pytest.approx(want, rel=1e-10)
    # x of any shape: the Laplacian over all its entries
    g = lambda z: jnp.sum(jnp.sin(z) ** 2)  # noqa: E731
    z = jnp.arange(6.0).reshape(2, 3) / 7
    assert float(jax.jit(laplacian, static_argnums=(0,))(g, z)) == pytest.approx(
        float(jnp.sum(2 * jnp.cos(2 * z))), rel=1e-12
    )


def test_hvp_methods_agree_with_the_hessian(x64: None) -> None:
    f, x = _net()
    v = jnp.asarray(np.random.default_rng(4).normal(size=4))
    want = jax.hessian(f)(x) @ v
    methods = ("forward-over-reverse", "reverse-over-reverse", "reverse-over-forward")
    methods += ("taylor-over-reverse",)
    got = jax.jit(lambda x, v: [hvp(f, x, v, m) for m in methods])(x, v)
    for method, value in zip(methods, got, strict=True):
        assert float(jnp.max(jnp.abs(value - want))) <= 1e-12, method


def test_biharmonic_three_ways_and_analytic(x64: None) -> None:
    f, x = _net(d=3, width=5)
    run = jax.jit(lambda x: {m: biharmonic(f, x, m) for m in ("nested", "taylor", "collapsed")})
    got = {m: float(v) for m, v in run(x).items()}
    assert got["taylor"] == pytest.approx(got["nested"], rel=1e-10)
    assert got["collapsed"] == pytest.approx(got["nested"], rel=1e-10)
    r4 = lambda z: jnp.sum(z**2) ** 2  # noqa: E731  Delta^2 |x|^4 = 8 d (d + 2)
    four = jax.jit(lambda x: biharmonic(r4, x, "collapsed"))(jnp.ones(3))
    assert float(four) == pytest.approx(120.0, rel=1e-12)


@pytest.mark.slow
def test_linear_operator_by_coefficients(x64: None) -> None:
    f, x = _net(d=3, width=5)
    coefficients = {(): 0.5, (1,): -1.0, (0, 0): 2.0, (0, 2): 1.5, (1, 1, 2): -0.25}
    H = jax.hessian(f)(x)
    d3 = jax.jacfwd(jax.jacfwd(jax.grad(f)))(x)
    want = 0.5 * f(x) - jax.grad(f)(x)[1] + 2 * H[0, 0] + 1.5 * H[0, 2] - 0.25 * d3[1, 1, 2]
    methods = ("taylor", "collapsed", "nested")
    got = jax.jit(lambda x: [linear_operator(f, x, coefficients, m) for m in methods])(x)
    for method, value in zip(methods, got, strict=True):
        assert float(value) == pytest.approx(float(want), rel=1e-10), method


@pytest.mark.parametrize(
    ("method", "probe"), [("hutchinson", "rademacher"), ("hutchinson", "gaussian"), ("stde", "")]
)
def test_stochastic_estimators_are_unbiased_with_the_theoretical_variance(
    method: str, probe: str, x64: None
) -> None:
    """Over fixed keys: the mean within 3 standard errors of the trace, and the samples'
    variance within 10 % of the theory (20 000 one-probe estimates: the variance's own
    relative error is about 2 %)."""
    f, x = _net()
    H = jax.hessian(f)(x)
    options = {"probe": probe} if probe else {}
    est = jax.jit(
        lambda x: laplacian(f, x, method, key=jax.random.key(7), samples=20_000, **options)
    )(x)
    trace = float(jnp.trace(H))
    assert abs(float(est.value) - trace) <= 3 * float(est.std_error), (est, trace)
    want = float(theory(H, method, probe or "rademacher"))
    assert float(est.variance) == pytest.approx(want, rel=0.10), (est.variance, want)


def test_bad_input_gets_one_line() -> None:
    f = lambda z: jnp.sum(z**2)  # noqa: E731
    with pytest.raises(dk.InputTypeError, match="unknown method 'hessian'"):
        laplacian(f, jnp.ones(2), "hessian")
    with pytest.raises(dk.InputTypeError, match="scalar"):
        laplacian(lambda z: z, jnp.ones(2))
    with pytest.raises(dk.InputTypeError, match="needs key"):
        laplacian(f, jnp.ones(2), "hutchinson")
    with pytest.raises(dk.InputTypeError, match="floating point"):
        laplacian(f, jnp.arange(2))
    with pytest.raises(dk.InputTypeError, match="coordinates"):
        linear_operator(f, jnp.ones(2), {(0, 5): 1.0})


def test_collapsed_through_control_flow_and_custom_rules(x64: None) -> None:
    """A loop and a custom_jvp function (softplus): per-direction jets inside, collapsed at
    their outputs."""

    def f(z):
        return jax.lax.fori_loop(0, 2, lambda i, c: jnp.sin(c), z).sum() + jnp.sum(
            jax.nn.softplus(z) ** 2
        )

    x = jnp.array([0.3, -0.5])
    got = jax.jit(lambda x: laplacian(f, x, "collapsed"))(x)
    assert float(got) == pytest.approx(float(jnp.trace(jax.hessian(f)(x))), rel=1e-12)


def test_a_primitive_taylor_refuses_is_refused_by_collapsed_in_one_line() -> None:
    def f(z):
        return jnp.sum(jax.pure_callback(jnp.sin, jax.ShapeDtypeStruct((2,), z.dtype), z) * z)

    with pytest.raises(dk.UnsupportedPrimitiveError) as info:
        laplacian(f, jnp.ones(2), "collapsed")
    assert "\n" not in str(info.value) and "pure_callback" in str(info.value)


def test_harness_families_compute_what_they_say(x64: None) -> None:
    """poisson-loss's Laplacian (collapsed Taylor inside) and taylor-order's K-th derivative
    against jax.hessian and nested jax.jvp."""
    inst = dk.harness.get_problem("poisson-loss").build(2, "float64")
    theta, xs = inst.args
    unravel = jax.flatten_util.ravel_pytree(
        mlp_params(2, 16, 2, jnp.float64, np.random.default_rng(0))
    )[1]

    def reference(theta, xs):
        u = lambda z: mlp(unravel(theta), z)  # noqa: E731
        lap = jax.vmap(lambda x: jnp.trace(jax.hessian(u)(x)))(xs)
        return jnp.mean((lap + jnp.sum(jnp.sin(jnp.pi * xs), axis=1)) ** 2)

    assert float(jax.jit(inst.fun)(*inst.args)) == pytest.approx(
        float(jax.jit(reference)(theta, xs)), rel=1e-10
    )
    inst = dk.harness.get_problem("taylor-order").build(3, "float64")
    x, v = inst.args
    params = mlp_params(8, 16, 2, jnp.float64, np.random.default_rng(0))
    g = lambda t: mlp(params, x + t * v)  # noqa: E731
    d3 = jax.jit(jax.grad(jax.grad(jax.grad(g))))(0.0)
    assert float(jax.jit(inst.fun)(x, v)) == pytest.approx(float(d3), rel=1e-10)
