"""The ``fd`` differentiator against analytic derivatives written out by hand in NumPy.

Accuracy is rho (GradBench's relative error, largest over coordinates) with the default step;
the bounds are the issue's. Evaluation counts are counted with a callback inside the function.
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_interface import analytic_tiny_gradient

import diffkit as dk
from diffkit.accuracy import rho
from diffkit.examples import TINY_NAMES, tiny_network

X = np.array([-0.9, -0.4, 0.1, 0.7, 1.2])
A = np.arange(1.0, 6.0) / 5


def _tanh_mix(x, np_=jnp):
    return np_.tanh(x @ A) + np_.sum(np_.sqrt(1 + x**2))


# name: (f in jax.numpy, its gradient in NumPy float64, written out by hand)
FUNCTIONS = {
    "polynomial": (
        lambda x: jnp.sum(x**5 - 2 * x**3 + x) + x[0] * x[1] ** 2,
        lambda x: 5 * x**4 - 6 * x**2 + 1 + np.r_[x[1] ** 2, 2 * x[0] * x[1], 0, 0, 0],
    ),
    "exp-sin": (
        lambda x: jnp.sum(jnp.exp(jnp.sin(x)) * x**2),
        lambda x: np.exp(np.sin(x)) * (np.cos(x) * x**2 + 2 * x),
    ),
    "log-cos": (
        lambda x: jnp.sum(jnp.log(1 + x**2) * jnp.cos(3 * x)) + x[0] * x[1] * x[2],
        lambda x: (
            2 * x / (1 + x**2) * np.cos(3 * x)
            - 3 * np.log(1 + x**2) * np.sin(3 * x)
            + np.r_[x[1] * x[2], x[0] * x[2], x[0] * x[1], np.zeros(x.size - 3)]
        ),
    ),
    "tanh-sqrt": (
        _tanh_mix,
        lambda x: (1 - np.tanh(x @ A) ** 2) * A + x / np.sqrt(1 + x**2),
    ),
}

# scheme, order -> bound on rho in float64 with the default step (the numbers, but for
# order-1 rules: on log-cos, |f''| ~ 11 puts even the best forward step at 1.2e-7)
BOUNDS_64 = {
    ("forward", None): 2e-7,
    ("backward", None): 2e-7,
    ("central", 2): 1e-9,
    ("central", 4): 1e-11,
    ("richardson", None): 1e-12,
    ("complex", None): 1e-14,
}
SCHEMES = list(BOUNDS_64)


@pytest.mark.parametrize("fname", FUNCTIONS)
@pytest.mark.parametrize(("scheme", "order"), SCHEMES)
def test_float64_accuracy_and_error_estimate(scheme, order, fname, x64) -> None:
    f, grad = FUNCTIONS[fname]
    want = grad(X)
    r = dk.get("fd", scheme=scheme, order=order).gradient(f)(jnp.asarray(X))
    assert r.grad.dtype == jnp.float64
    assert rho(r.grad, want) <= BOUNDS_64[scheme, order]
    true_error = np.abs(np.asarray(r.grad) - want)
    assert np.all(np.asarray(r.error) >= true_error)  # the estimate is never optimistic
    assert r.max_error <= 100 * BOUNDS_64[scheme, order]  # ... nor useless
    assert float(r.value) == pytest.approx(float(f(jnp.asarray(X))), rel=1e-15)


@pytest.mark.parametrize("fname", ["exp-sin", "log-cos", "tanh-sqrt"])
@pytest.mark.parametrize(
    ("scheme", "order"), [("forward", None), ("central", 2), ("complex", None)]
)
def test_float32_error_estimate_and_central_accuracy(scheme, order, fname) -> None:
    f, grad = FUNCTIONS[fname]
    want = grad(X)
    r = dk.get("fd", scheme=scheme, order=order).gradient(f)(jnp.asarray(X, jnp.float32))
    assert r.grad.dtype == jnp.float32
    assert np.all(np.asarray(r.error, np.float64) >= np.abs(np.asarray(r.grad, np.float64) - want))
    if scheme in ("central", "complex"):
        assert rho(r.grad, want) <= 1e-4


def test_float64_precision_for_a_float32_function() -> None:
    f, grad = FUNCTIONS["log-cos"]
    x32 = jnp.asarray(X, jnp.float32)
    g = dk.get("fd", precision="float64").grad(f)(x32)
    assert g.dtype == jnp.float32
    # the float32 inputs are exact in float64: only the final cast to float32 rounds
    assert rho(g, grad(np.asarray(x32, np.float64))) <= 1e-7
    assert rho(dk.get("fd").grad(f)(x32), grad(np.asarray(x32, np.float64))) > 1e-6


def test_stencils_are_the_textbook_ones() -> None:
    exact = lambda scheme, order: dk.fd.stencil(scheme, order).exact_weights  # noqa: E731
    F = Fraction
    assert exact("central", 2) == (F(-1, 2), F(1, 2))
    assert exact("central", 4) == (F(1, 12), F(-2, 3), F(2, 3), F(-1, 12))
    assert exact("forward", 2) == (F(-3, 2), F(2), F(-1, 2))
    assert exact("backward", 1) == (F(-1), F(1))
    assert dk.fd.stencil("central", 6).offsets == (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)
    # Richardson on h, h/2 is the classic (4 D(h/2) - D(h)) / 3
    r4 = dk.fd.stencil("richardson", 4)
    assert r4.offsets == (-1.0, -0.5, 0.5, 1.0)
    assert r4.exact_weights == (F(1, 6), F(-4, 3), F(4, 3), F(-1, 6))


@pytest.mark.parametrize(("scheme", "order"), [("forward", 3), ("central", 8), ("richardson", 8)])
def test_stencil_has_its_order(scheme, order) -> None:
    s = dk.fd.stencil(scheme, order)
    o, w = np.array(s.offsets), np.array(s.weights)
    moments = [w @ o**k / np.prod(np.arange(1, k + 1)) for k in range(order + 2)]
    assert np.allclose(moments[: order + 1], np.eye(order + 1)[1], atol=1e-9)
    assert abs(moments[order + 1]) > 1e-12  # and no more


def test_error_shrinks_like_the_order(x64) -> None:
    f, grad = FUNCTIONS["exp-sin"]
    for scheme, order in [("forward", 1), ("forward", 2), ("central", 2), ("central", 4)]:
        errs = [
            rho(dk.get("fd", scheme=scheme, order=order, step=h).grad(f)(jnp.asarray(X)), grad(X))
            for h in (1e-2, 5e-3)
        ]
        assert errs[0] / errs[1] == pytest.approx(2**order, rel=0.2), (scheme, order)


def _counted(f):
    calls = [0]

    def g(x):
        jax.debug.callback(lambda v: calls.__setitem__(0, calls[0] + 1), x.ravel()[0])
        return f(x)

    return g, calls


@pytest.mark.parametrize(
    ("scheme", "order", "per_input", "shared"),
    [
        ("forward", 1, 1, 1),
        ("backward", 1, 1, 1),
        ("central", 2, 2, 0),
        ("central", 4, 4, 0),
        ("complex", 2, 1, 0),
        ("richardson", 6, 6, 0),
    ],
)
def test_evaluation_counts(scheme, order, per_input, shared) -> None:
    n = 7
    d = dk.get("fd", scheme=scheme, order=order)
    assert d.evaluations("grad", n) == per_input * n + shared
    assert d.evaluations("jvp", n, m=4) == per_input + shared
    assert (
        d.evaluations("jacobian", n, m=4) == d.evaluations("vjp", n, m=4) == per_input * n + shared
    )
    f, calls = _counted(lambda x: jnp.sum(jnp.sin(x)))
    d.grad(f)(jnp.ones(n))
    jax.effects_barrier()
    # grad also returns f(x): shared with one-sided rules, one more call for the others
    assert calls[0] == d.evaluations("grad", n) + (1 - shared)
    if scheme in ("forward", "central"):
        f, calls = _counted(lambda x: jnp.sum(jnp.sin(x)))
        r = d.gradient(f)(jnp.ones(n))
        jax.effects_barrier()
        assert r.evaluations == 2 * per_input * n + 1 and calls[0] >= r.evaluations
    with pytest.raises(dk.DiffkitError, match="unknown op"):
        d.evaluations("hvp", n)


def test_jvp_along_any_direction(x64) -> None:
    f, grad = FUNCTIONS["tanh-sqrt"]
    d = dk.get("fd", scheme="central", order=4)
    for scale in (1e-6, 1.0, 1e6):
        v = scale * np.linspace(-1.0, 2.0, 5)
        _, y_dot = d.jvp(f, (jnp.asarray(X),), (jnp.asarray(v),))
        assert rho(y_dot / scale, grad(X) @ v / scale) <= 1e-11
    _, zero = d.jvp(f, (jnp.asarray(X),), (jnp.zeros(5),))
    assert float(zero) == 0.0


def test_jacobian_and_vjp_of_a_vector_function(x64) -> None:
    def f(x):
        return {"s": jnp.sin(x) * x[0], "p": jnp.exp(x[:2]).prod()}

    x = jnp.asarray(X)
    want_s = np.diag(np.cos(X) * X[0]) + np.outer(np.sin(X), np.eye(5)[0])
    want_p = np.exp(X[:2]).prod() * np.eye(5)[0] + np.exp(X[:2]).prod() * np.eye(5)[1]
    d = dk.get("fd", scheme="richardson")
    jac = d.jacobian(f)(x)
    assert rho(jac["s"], want_s) <= 1e-12 and rho(jac["p"], want_p) <= 1e-12
    _, vjp_fn = d.vjp(f, x)
    (x_bar,) = vjp_fn({"s": jnp.ones(5), "p": jnp.asarray(2.0)})
    assert rho(x_bar, want_s.sum(0) + 2 * want_p) <= 1e-12


def test_pytree_argnums_and_per_coordinate_steps(x64) -> None:
    def f(p, scale, c):
        return scale * jnp.sum(p["a"] ** 3) + jnp.exp(p["b"]) * c

    p = {"a": jnp.array([1.0, 2.0]), "b": jnp.asarray(0.5)}
    steps = np.array([1e-6, 2e-6, 3e-6, 1e-5])  # p (3 coordinates) then scale
    d = dk.get("fd", step=steps)
    gp, gs = d.grad(f, argnums=(0, 1))(p, 2.0, 3.0)
    assert rho(gp["a"], [6.0, 24.0]) <= 1e-9 and rho(gp["b"], 3 * np.exp(0.5)) <= 1e-9
    assert rho(gs, 9.0) <= 1e-9
    r = d.gradient(f, argnums=(0, 1))(p, 2.0, 3.0)
    assert np.asarray(r.step[0]["a"]).tolist() == [1e-6, 2e-6] and float(r.step[1]) == 1e-5
    assert rho(r.grad[0]["a"], gp["a"]) == 0.0


def test_chunked_equals_unchunked(x64) -> None:
    f, grad = FUNCTIONS["log-cos"]
    x = jnp.asarray(np.linspace(-1.0, 1.0, 12))
    full = dk.get("fd").grad(f)(x)
    assert rho(full, grad(np.asarray(x))) <= 1e-9
    assert dk.get("fd", memory_budget=4096)._chunk(12, 1000.0) == 4  # what the budget allows
    # the same rule in chunks of 4; evaluations fused differently round differently, times 1/h
    assert rho(dk.get("fd", chunk_size=4).grad(f)(x), full) <= 1e-9


def test_tiny_network_richardson(x64) -> None:
    ex = tiny_network()
    want = analytic_tiny_gradient()
    got = ex.names(dk.get("fd", scheme="richardson").grad(ex.fun)(*ex.args))
    assert rho([got[p] for p in TINY_NAMES], [want[p] for p in TINY_NAMES]) <= 1e-12


# ------------------------------------------------------------------ complex step


@pytest.mark.parametrize(
    ("f", "primitive"),
    [
        (lambda x: jnp.sum(jnp.abs(x) ** 3), "abs"),
        (lambda x: jnp.sum(jnp.maximum(x, 0.0) * x), "max"),
        (lambda x: jnp.sum(jnp.minimum(x, 1.0)), "min"),
        (lambda x: jnp.sum(jax.nn.relu(x) ** 2), "max"),  # inside a custom_jvp and a jit
        (lambda x: jnp.sum(jnp.sign(x) * x**2), "sign"),
        (lambda x: jnp.sum(jnp.where(x > 0, x, x**2)), "gt"),
        (lambda x: jnp.sum(jax.lax.cond(x[0] < 1, jnp.sin, jnp.cos, x)), "lt"),
    ],
)
def test_complex_step_refuses_non_analytic_primitives(f, primitive) -> None:
    d = dk.get("fd", scheme="complex")
    with pytest.raises(
        dk.DiffkitError, match=rf"applies .*'{primitive}'.* \(first from .*not complex-analytic"
    ):
        d.grad(f)(jnp.asarray(X))


def test_complex_step_needs_complex_inputs() -> None:
    d = dk.get("fd", scheme="complex")
    with pytest.raises(dk.DiffkitError, match=r"applies 'real'.* dropping the imaginary"):
        d.grad(lambda x: jnp.sum(jnp.sin(x.real)))(jnp.asarray(X))
    with pytest.raises(dk.DiffkitError, match="does not accept complex inputs"):
        d.grad(lambda x: jnp.sum(jax.lax.erf_inv(x)))(jnp.asarray(X))
    with pytest.raises(dk.DiffkitError, match="applies 'max'"):
        d.grad(tiny_network().fun)(*tiny_network().args)


def test_complex_step_does_not_underflow_in_float32() -> None:
    f = lambda x: jnp.sum(jnp.exp(-(x**2)) * 1e-20)  # noqa: E731
    x = jnp.asarray(X, jnp.float32)
    want = -2 * X * np.exp(-(X**2)) * 1e-20
    g = dk.get("fd", scheme="complex").grad(f)(x)
    assert np.all(np.abs(np.asarray(g) - want) <= 1e-6 * np.abs(want))


# ------------------------------------------------------------------ the step sweep


def test_step_sweep_is_u_shaped(x64) -> None:
    f, grad = FUNCTIONS["exp-sin"]
    s = dk.fd.step_sweep(f, jnp.asarray(X), np.logspace(0, -14, 15), scheme="central")
    assert s.steps.size == s.errors.size == 15
    best = int(np.argmin(s.errors))
    assert 0 < best < s.steps.size - 1  # truncation left of it ... rounding right of it
    assert s.errors[0] > 1e3 * s.errors[best] < s.errors[-1] / 1e3
    assert 1e-7 < s.optimal_step < 1e-4 and s.optimal_error <= 1e-9
    assert s.default_error <= 1e-9
    assert "<- optimal" in repr(s) and "<svg" in s._repr_html_()
    # an explicit reference, float32 inputs: the reference is the analytic gradient
    s32 = dk.fd.step_sweep(
        f, jnp.asarray(X, jnp.float32), steps=[1e-1, 3e-3, 1e-6], reference=grad(X)
    )
    assert s32.optimal_step == 3e-3 and s32.dtype == "float32"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scheme": "centre"}, r"scheme must be one of forward, backward, central, complex"),
        ({"order": 0}, r"order must be an int from 1 to 12, got 0"),
        ({"order": 2.0}, r"order must be an int"),
        ({"order": True}, r"order must be an int"),
        ({"scheme": "central", "order": 3}, r"central differences have even orders"),
        ({"scheme": "richardson", "order": 5}, r"richardson differences have even orders"),
        ({"scheme": "complex", "order": 4}, r"complex step has order 2 only"),
        ({"step": -1e-3}, r"steps must be positive and finite, got -0.001"),
        ({"step": 0.0}, r"steps must be positive and finite"),
        ({"step": float("nan")}, r"steps must be positive and finite"),
        ({"step": np.array([1e-3, -1.0])}, r"steps must be positive and finite, got -1.0"),
        ({"step": "small"}, r"step must be None, a positive number or an array"),
        ({"step": []}, r"step must be None, a positive number or an array"),
        ({"precision": "float16"}, r"precision must be None or 'float64'"),
        ({"stepp": 1}, r"fd: unknown option 'stepp'; its options are: scheme, order, step"),
    ],
)
def test_bad_options(options, message) -> None:
    with pytest.raises(dk.DiffkitError, match=message):
        dk.get("fd", **options)


def test_bad_steps_at_call_time(x64) -> None:
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    with pytest.raises(dk.DiffkitError, match=r"step has 3 entries, but the inputs have 5"):
        dk.get("fd", step=np.full(3, 1e-4)).grad(f)(jnp.asarray(X))
    with pytest.raises(dk.DiffkitError, match=r"coordinate 0 is below the resolution of float64"):
        dk.get("fd", step=1e-30).grad(f)(jnp.asarray(X))
    with pytest.raises(dk.DiffkitError, match=r"steps must be a non-empty 1-d list of positive"):
        dk.fd.step_sweep(f, jnp.asarray(X), steps=[1e-3, -1.0])
