"""The common interface, checked on every registered differentiator.

Golden numbers of the 9-parameter example come from the issue's worked example and from an
independent NumPy float64 implementation of the analytic formulas; the JAX differentiators are
compared with jax.grad / jax.jacfwd / jax.jvp / jax.vjp directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit.accuracy import rho, rho_tree
from diffkit.examples import TINY_NAMES, tiny_network

ALL = dk.names()
JAX = ["jax-fwd", "jax-rev"]
# Stochastic estimators take part in every contract test but these exact-value ones (their
# values are checked statistically in tests/test_stochastic.py).
EXACT = [name for name in ALL if dk.get(name).mode != "stochastic"]


def tol(name: str, dtype: str) -> float:
    """Tolerance on rho against an exact reference: AD is exact to rounding; finite
    differences carry their truncation and rounding error."""
    numerical = dk.get(name).mode == "numerical"
    if dtype == "float64":
        return 1e-8 if numerical else 1e-12
    return 1e-3 if numerical else 1e-5


# The worked example's gradients, to four digits (from the issue text, not from our code).
GOLDEN_4 = dict(
    zip(
        TINY_NAMES,
        [-0.2223, -0.1112, -0.2223, 0.1482, 0.0741, 0.1482, -0.2779, -0.0185, -0.3705],
        strict=True,
    )
)


def analytic_tiny_gradient() -> dict[str, float]:
    """dL/dv = (y_hat - y) h, dL/db3 = y_hat - y, dL/dW = outer(dz, x), dL/db = dz, in NumPy."""
    W = np.array([[0.3, 0.7], [-0.2, 0.5]])
    b, v, b3 = np.array([0.1, 0.0]), np.array([0.6, -0.4]), 0.1
    x, y = np.array([1.0, 0.5]), 1.0
    z = W @ x + b
    h = np.maximum(z, 0.0)
    y_hat = 1.0 / (1.0 + np.exp(-(v @ h + b3)))
    dz = (y_hat - y) * v * (z > 0)
    dW = np.outer(dz, x)
    return dict(
        zip(
            TINY_NAMES,
            [dW[0, 0], dW[0, 1], dz[0], dW[1, 0], dW[1, 1], dz[1], *((y_hat - y) * h), y_hat - y],
            strict=True,
        )
    )


@pytest.mark.parametrize("name", EXACT)
def test_tiny_network_golden_float32(name: str) -> None:
    ex = tiny_network()
    got = ex.names(jax.jit(dk.get(name).grad(ex.fun))(*ex.args))  # compiled; float64 runs eager
    for p in TINY_NAMES:  # four printed digits: +-5e-5, plus the method's own float32 error
        assert got[p] == pytest.approx(GOLDEN_4[p], abs=5e-5 + tol(name, "float32")), p


@pytest.mark.parametrize("name", EXACT)
def test_tiny_network_float64_matches_analytic(name: str, x64: None) -> None:
    ex = tiny_network()
    assert float(ex.fun(*ex.args)) == pytest.approx(0.46285625, abs=1e-7)
    got = ex.names(dk.get(name).grad(ex.fun)(*ex.args))
    want = analytic_tiny_gradient()
    assert rho([got[p] for p in TINY_NAMES], [want[p] for p in TINY_NAMES]) <= tol(name, "float64")


def mlp_loss(params, x, y):
    h = x
    for W, b in params["layers"]:
        h = jnp.tanh(h @ W + b)
    return jnp.mean((h @ params["out"] - y) ** 2)


def mlp_params(key, sizes=(3, 5, 4), dtype=None):
    dtype = dtype or jnp.result_type(float)
    keys = jax.random.split(key, len(sizes) + 1)
    layers = [
        (jax.random.normal(k, (a, b), dtype) / np.sqrt(a), jnp.zeros(b, dtype))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)
    ]
    return {"layers": layers, "out": jax.random.normal(keys[-1], (sizes[-1],), dtype)}


@pytest.mark.parametrize("name", EXACT)
def test_pytree_gradient_matches_jax_grad(name: str, dtype: str) -> None:
    params = mlp_params(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    y = jnp.sin(x[:, 0])
    value, grads = jax.jit(dk.get(name).value_and_grad(mlp_loss))(params, x, y)
    want_value, want = jax.jit(jax.value_and_grad(mlp_loss))(params, x, y)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(want)
    assert rho(value, want_value) <= tol("jax-rev", dtype)
    assert rho_tree(grads, want) <= tol(name, dtype)
    assert all(
        g.dtype == w.dtype
        for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True)
    )


@pytest.mark.parametrize("name", JAX)
def test_argnums_and_has_aux(name: str) -> None:
    f = lambda a, b, c: (jnp.sum(a * b) + c, {"ab": a * b})  # noqa: E731
    a, b, c = jnp.arange(3.0), jnp.ones(3) * 2, 1.5
    d = dk.get(name)
    (ga, gc), aux = d.grad(f, argnums=(0, 2), has_aux=True)(a, b, c)
    (wa, wc), waux = jax.grad(f, argnums=(0, 2), has_aux=True)(a, b, c)
    assert rho(ga, wa) == 0 and rho(gc, wc) == 0 and rho(aux["ab"], waux["ab"]) == 0
    (v, aux2), g = d.value_and_grad(f, argnums=-2, has_aux=True)(a, b, c)
    assert float(v) == pytest.approx(7.5) and rho(g, a) == 0 and rho(aux2["ab"], a * b) == 0


@pytest.mark.parametrize("name", JAX)
@pytest.mark.parametrize("strategy", [None, "fwd", "rev"])
def test_jacobian_pytree_in_and_out(name: str, strategy: str | None, x64: None) -> None:
    def f(p):
        return {"u": jnp.sin(p["a"]) * p["b"][0], "v": jnp.outer(p["a"], p["b"])}

    p = {"a": jnp.linspace(0.1, 0.9, 3), "b": jnp.array([2.0, -1.0])}
    got = dk.get(name).jacobian(f, strategy=strategy)(p)
    want = jax.jacfwd(f)(p)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    assert all(
        g.shape == w.shape for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    )
    assert rho_tree(got, want) <= 1e-14


@pytest.mark.parametrize("name", JAX)
def test_jvp_and_vjp_match_jax(name: str, dtype: str) -> None:
    f = lambda x, y: (jnp.tanh(x) * y[0], jnp.cumsum(x) ** 2)  # noqa: E731
    x, y = jnp.linspace(-1.0, 1.0, 4), jnp.array([0.5, 2.0])
    tx, ty = jnp.arange(4.0), jnp.array([1.0, -1.0])
    d = dk.get(name)
    out, out_dot = d.jvp(f, (x, y), (tx, ty))
    w_out, w_dot = jax.jvp(f, (x, y), (tx, ty))
    tol = 1e-13 if dtype == "float64" else 1e-5
    assert rho_tree(out, w_out) <= tol and rho_tree(out_dot, w_dot) <= tol
    out, vjp_fn = d.vjp(f, x, y)
    _, w_vjp = jax.vjp(f, x, y)
    u = (jnp.ones(4), jnp.linspace(0.0, 1.0, 4))
    assert rho_tree(vjp_fn(u), w_vjp(u)) <= tol


@pytest.mark.parametrize("name", JAX)
def test_hessian_matches_jax(name: str, x64: None) -> None:
    f = lambda x: jnp.sum(jnp.sin(x) * x[::-1]) + x[0] ** 3  # noqa: E731
    x = jnp.linspace(0.2, 1.4, 5)
    assert rho(dk.get(name).hessian(f)(x), jax.hessian(f)(x)) <= 1e-13


@pytest.mark.parametrize("name", JAX)
def test_composes_with_jit_and_vmap(name: str) -> None:
    d = dk.get(name)
    f = lambda x: jnp.sum(jnp.exp(x) * jnp.arange(x.size))  # noqa: E731
    xs = jax.random.normal(jax.random.PRNGKey(0), (3, 6))
    got = jax.jit(jax.vmap(d.grad(f)))(xs)
    assert rho(got, jax.vmap(jax.grad(f))(xs)) <= 1e-6


def test_forward_gradient_is_chunked_to_the_budget(x64: None) -> None:
    f = lambda x: jnp.sum(jnp.sin(x) ** 2)  # noqa: E731
    x = jnp.linspace(0.0, 3.0, 1000)
    tiny_budget = dk.get("jax-fwd", memory_budget=200_000)
    # one direction needs the input, its one-hot tangent and each intermediate: >= 8 kB
    assert tiny_budget._chunk(1000, 4 * 8000) < 1000
    assert rho(tiny_budget.grad(f)(x), jax.grad(f)(x)) <= 1e-14
    assert rho(dk.get("jax-fwd", chunk_size=7).grad(f)(x), jax.grad(f)(x)) <= 1e-14
    # reverse Jacobian by chunked VJP rows, 1000 outputs
    g = lambda x: jnp.sin(x) * x[0]  # noqa: E731
    assert rho(dk.get("jax-rev", chunk_size=64).jacobian(g)(x), jax.jacrev(g)(x)) <= 1e-14


def test_declared_costs() -> None:
    fwd, rev = dk.get("jax-fwd"), dk.get("jax-rev")
    assert (fwd.name, fwd.mode, rev.name, rev.mode) == ("jax-fwd", "forward", "jax-rev", "reverse")
    assert fwd.passes("grad", n=500) == 500 and rev.passes("grad", n=500) == 1
    assert fwd.passes("jvp", n=500, m=3) == 1 and fwd.passes("vjp", n=500, m=3) == 500
    assert rev.passes("jvp", n=500, m=3) == 3 and rev.passes("vjp", n=500, m=3) == 1
    assert fwd.passes("jacobian", n=3, m=500) == 3 and rev.passes("jacobian", n=3, m=500) == 500


# ------------------------------------------------------------------ bad input


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(
        dk.UnknownDifferentiatorError, match=r"unknown differentiator 'tapee'.*jax-fwd"
    ):
        dk.get("tapee")
    with pytest.raises(KeyError):
        dk.get("tapee")


def test_unknown_option() -> None:
    with pytest.raises(dk.DiffkitError, match=r"jax-rev: unknown option 'stepp'.*chunk_size"):
        dk.get("jax-rev", stepp=1)


@pytest.mark.parametrize("name", ALL)
def test_grad_of_non_scalar(name: str) -> None:
    with pytest.raises(
        dk.DiffkitError, match=r"must return a scalar, got an array of shape \(3,\)"
    ):
        dk.get(name).grad(jnp.sin)(jnp.ones(3))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [3, True, jnp.arange(3), {"w": jnp.arange(2)}])
def test_integer_or_boolean_inputs(name: str, bad) -> None:
    with pytest.raises(
        dk.InputTypeError, match=r"dtype (int|bool)\w*; diffkit differentiates real"
    ):
        dk.get(name).grad(lambda x: jnp.sum(jax.tree.leaves(x)[0] * 1.0))(bad)


@pytest.mark.parametrize("name", ALL)
def test_non_array_inputs(name: str) -> None:
    with pytest.raises(dk.InputTypeError, match=r"argument 0 at \['w'\] is a str"):
        dk.get(name).grad(lambda p: 0.0)({"w": "hello"})


@pytest.mark.parametrize("name", ALL)
def test_argnums_out_of_range(name: str) -> None:
    with pytest.raises(dk.DiffkitError, match=r"argnums=2 is out of range .* 2 positional"):
        dk.get(name).grad(lambda a, b: a * b, argnums=2)(1.0, 2.0)


@pytest.mark.parametrize("name", ALL)
def test_jvp_mismatched_tangents(name: str) -> None:
    d = dk.get(name)
    with pytest.raises(dk.DiffkitError, match=r"tangents\[0\] has shape \(2,\), expected \(3,\)"):
        d.jvp(jnp.sin, (jnp.ones(3),), (jnp.ones(2),))
    with pytest.raises(dk.DiffkitError, match=r"has dtype int32, expected float32"):
        d.jvp(jnp.sin, (jnp.ones(3),), (jnp.ones(3, dtype=jnp.int32),))
    with pytest.raises(dk.DiffkitError, match=r"same pytree structure"):
        d.jvp(jnp.sin, (jnp.ones(3),), (jnp.ones(3), jnp.ones(3)))


@pytest.mark.parametrize("name", ALL)
def test_vjp_wrong_cotangent_shape(name: str) -> None:
    _, vjp_fn = dk.get(name).vjp(lambda x: {"y": jnp.sin(x)}, jnp.ones(3))
    with pytest.raises(
        dk.DiffkitError, match=r"cotangent\['y'\] has shape \(4,\), expected \(3,\)"
    ):
        vjp_fn({"y": jnp.ones(4)})


def test_third_party_registration() -> None:
    @dk.register("test-rev")
    class TestRev(dk.differentiators.JaxReverse):
        """A subclass under a new name, as a plugin would register it."""

    try:
        assert "test-rev" in dk.names() and dk.get("test-rev").name == "test-rev"
        with pytest.raises(dk.DiffkitError, match="is taken"):
            dk.register("jax-rev")(TestRev)
    finally:
        dk.unregister("test-rev")
    assert "test-rev" not in dk.names()
