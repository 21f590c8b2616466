"""The array-level symbolic differentiator (``dk.get("symbolic", level="array")``): exact
against JAX's own AD in float64, textbook printing, sizes flat in n, refusals in one line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit.accuracy import rho


def _sym() -> dk.Differentiator:
    return dk.get("symbolic", level="array")


def _data(n: int = 6, d: int = 3) -> tuple[jax.Array, jax.Array, jax.Array]:
    k = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(k[0], (d,))
    X = jax.random.normal(k[1], (n, d))
    y = jnp.sign(jax.random.normal(k[2], (n,)))
    return w, X, y


def least_squares(w, X, y):
    return jnp.sum((X @ w - y) ** 2) / y.shape[0]


def logistic(w, X, y):
    return jnp.mean(jnp.log1p(jnp.exp(-y * (X @ w))))


def quadratic(x, A):
    return x @ A @ x


def test_gradients_match_jax_grad(x64: None) -> None:
    w, X, y = _data()
    d = _sym()
    for f in (least_squares, logistic):
        got = d.grad(f, argnums=(0, 1, 2))(w, X, y)
        want = jax.grad(f, argnums=(0, 1, 2))(w, X, y)
        assert max(rho(a, b) for a, b in zip(got, want, strict=True)) <= 1e-14, f.__name__
    A = X[:3]
    assert rho(d.grad(quadratic)(w, A), jax.grad(quadratic)(w, A)) <= 1e-14


def test_hessians_match_jax_hessian(x64: None) -> None:
    w, X, y = _data()
    d = _sym()
    A = X[:3]
    assert rho(d.hessian(quadratic)(w, A), jax.hessian(quadratic)(w, A)) <= 1e-14
    f = lambda w: logistic(w, X, y)  # noqa: E731
    assert rho(jax.jit(d.hessian(f))(w), jax.hessian(f)(w)) <= 1e-14


@pytest.mark.slow
def test_mlp_gradient_is_exact_under_jit(x64: None) -> None:
    from diffkit.harness import get_problem

    inst = get_problem("mlp").build(60, "float64", 0)
    got = jax.tree.leaves(jax.jit(_sym().grad(inst.fun))(*inst.args))
    want = jax.tree.leaves(jax.grad(inst.fun)(*inst.args))
    assert len(got) == len(want)
    assert max(rho(a, b) for a, b in zip(got, want, strict=True)) <= 1e-14


@pytest.mark.slow
def test_custom_vjp_and_jacobian(x64: None) -> None:
    @jax.custom_vjp
    def clip(x):
        return x

    clip.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -0.5, 0.5),))
    f = lambda x: jnp.sum(jnp.sin(clip(x)) * 3.0)  # noqa: E731
    x = jnp.linspace(-1.0, 1.0, 5)
    assert np.array_equal(_sym().grad(f)(x), jax.grad(f)(x))
    g = lambda x: jnp.tanh(jnp.outer(x, x)).sum(0)  # noqa: E731
    assert rho(_sym().jacobian(g)(x), jax.jacobian(g)(x)) <= 1e-14
    _y, y_dot = _sym().jvp(g, (x,), (jnp.ones(5),))
    assert rho(y_dot, jax.jvp(g, (x,), (jnp.ones(5),))[1]) <= 1e-14


def test_textbook_gradients_and_latex(x64: None) -> None:
    w, X, y = _data()
    e = _sym().expression(least_squares, w, X, y)
    assert str(e) == "2*X.T*(X*w - y)/n"
    assert e.latex == r"\frac{2}{n} X^{\top} \left(X w - y\right)"
    assert "-X.T*(y.*(t1./(1 + t1)))/n" in str(_sym().expression(logistic, w, X, y))
    assert str(_sym().expression(quadratic, w, X[:3])) == "A.T*x + A*x"


def test_array_level_size_is_flat_in_n(x64: None) -> None:
    d = _sym()
    small = d.array_sizes(least_squares, *_data(10))
    large = d.array_sizes(least_squares, *_data(1000))
    assert small is not None and large is not None
    assert small[1].array_nodes == large[1].array_nodes  # the expression: the same
    assert large[1].scalar_ops > 50 * small[1].scalar_ops  # its scalarised expansion grows


def test_swell_reports_both_levels() -> None:
    report = dk.get("symbolic").swell(lambda x: jnp.sum(jnp.sin(x) ** 2), jnp.ones(4))
    assert report.array_function is not None and report.array_derivative is not None
    assert report.array_function.scalar_tree == report.function.tree_ops  # same expansion
    assert "array level" in repr(report)


def test_refusal_is_one_line(x64: None) -> None:
    def f(x):  # a while loop with a trip count set by x: no reverse mode anywhere
        return jax.lax.while_loop(lambda c: c[0] < 10.0, lambda c: (c[0] * 2.0, c[1]), (x, x))[0]

    with pytest.raises(dk.UnsupportedPrimitiveError) as info:
        _sym().grad(f)(1.0)
    assert "\n" not in str(info.value) and "while" in str(info.value)


def test_level_is_checked() -> None:
    with pytest.raises(dk.DiffkitError, match="level must be 'array' or 'scalar'"):
        dk.get("symbolic", level="tensor")


def test_semantics_follow_jax_grad(x64: None) -> None:
    """The array level follows the rule table, as jax.grad: a NaN derivative in the branch a
    select does not take leaks in (the scalar level gives JAX's JVP value, 0), and
    exp(x) - exp(x) is not simplified away (inf - inf at x = 1000 is NaN, as in JAX)."""
    f = lambda x: jnp.where(x > 0.0, jnp.sqrt(x), 0.0)  # noqa: E731
    assert np.isnan(_sym().grad(f)(-1.0)) and np.isnan(jax.grad(f)(-1.0))
    g = lambda x: jnp.exp(x) - jnp.exp(x) + x  # noqa: E731
    assert np.isnan(_sym().grad(g)(1000.0)) and np.isnan(jax.grad(g)(1000.0))
    assert _sym().passes("jacobian", n=50, m=7) == 7  # rows by VJPs


def test_closed_over_constants_are_not_mixed_up(x64: None) -> None:
    """A scalar constant is folded into the program (cached by value); an array constant is
    its argument (new values, no new symbolic work): both follow the function's values."""
    x = jnp.arange(3.0)
    for c in (2.0, 3.0):
        s, v = jnp.array(c), jnp.full(3, c)
        f = lambda x, s=s, v=v: jnp.sum(jnp.sin(x * s) * v)  # noqa: E731
        assert rho(_sym().grad(f)(x), jax.grad(f)(x)) <= 1e-15, c


def test_size_budget_bounds_the_array_level() -> None:
    """The size budget counts array nodes while the expression is built, before XLA sees it:
    going over is one line naming the stage (no fallback to the slower scalar level)."""
    f = lambda x: jnp.sum(jnp.tanh(jnp.tanh(x) * x) ** 2)  # noqa: E731
    with pytest.raises(dk.BudgetExceeded) as info:
        dk.get("symbolic", level="array", size_budget=5).grad(f)(jnp.ones(3))
    assert info.value.stage == "build" and "\n" not in str(info.value)
    assert "array nodes" in str(info.value)
