"""The stochastic differentiators (forward-grad, spsa) and the harness's estimator metrics.

References are independent of the estimators: jax.grad / jax.jacfwd / jax.hessian for the
quantity estimated, and the textbook second moments E||g_hat||^2 / ||g||^2 (n + 2 for one
Gaussian tangent, 1 + (n - 1)/k for k Rademacher directions, n/k for k orthogonalised ones).
Statistical checks use a fixed set of keys (deterministic) and three standard errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit.differentiators.stochastic import ForwardGradient
from diffkit.harness.estimators import quality, train


def f(x):
    return jnp.sum(jnp.sin(x) * x[::-1]) + 0.5 * x @ x + jnp.prod(jnp.cos(x[:3]))


X = np.linspace(-1.0, 1.2, 6)
R = 4000  # repeats: standard errors of about 1.6% of the spread
CONFIGS = [
    ("forward-grad", {"tangents": 1}),
    ("forward-grad", {"tangents": 2, "distribution": "rademacher"}),
    ("forward-grad", {"tangents": 3, "orthogonal": True}),
    ("spsa", {"samples": 2}),
]


def estimates(d, fun, x, repeats: int = R, seed: int = 7):
    keys = jax.random.split(jax.random.key(seed), repeats)
    return np.asarray(jax.jit(jax.vmap(lambda k: d.with_key(k).grad(fun)(x)))(keys))


@pytest.mark.parametrize(("name", "options"), CONFIGS)
def test_unbiased_and_second_moment_as_theory(name, options, x64) -> None:
    """Over R fixed keys: the mean within 3 standard errors of jax.grad in every coordinate,
    and the mean of ||g_hat||^2 / ||g||^2 within 3 standard errors of the textbook value."""
    n, k = X.size, next(iter(options.values()))
    theory = {  # written out here, not taken from the code under test
        0: n + 2.0,  # one Gaussian tangent
        1: 1 + (n - 1) / k,  # Rademacher
        2: n / k,  # orthogonalised
        3: 1 + (n - 1) / k,  # SPSA: Rademacher directions
    }[CONFIGS.index((name, options))]
    x = jnp.asarray(X)
    g = np.asarray(jax.grad(f)(x))
    d = dk.get(name, **options)
    est = estimates(d, f, x)
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(mean - g) <= 3 * se), (mean - g) / se
    # the check has power: a 10% bias (the estimate scaled by 1.1) fails it
    assert np.any(np.abs(1.1 * mean - g) > 3 * 1.1 * se)
    ratio = np.sum(est**2, axis=1) / np.sum(g**2)
    assert abs(ratio.mean() - theory) <= 3 * ratio.std(ddof=1) / np.sqrt(R), ratio.mean()
    assert d.second_moment(n) == pytest.approx(theory) and d.passes("grad", n) == k


def loss(params, x, y):
    h = jnp.tanh(x @ params["w"] + params["b"])
    return jnp.mean((h @ params["v"] - y) ** 2), h.mean()


def test_orthogonal_tangents_at_k_equals_n_give_the_exact_pytree_gradient(x64) -> None:
    """With k = n orthogonal tangents scaled to sqrt(n), (n/k) Q Q^T = I: the exact gradient;
    pytrees, argnums and has_aux as jax.grad has them."""
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    v, x, y = rng.standard_normal(2), rng.standard_normal((5, 3)), rng.standard_normal(5)
    args = ({**params, "v": v}, x, y)
    fg = dk.get("forward-grad", tangents=10 + 15, orthogonal=True, seed=1)  # n = 6+2+2+15
    got, aux = jax.jit(fg.grad(loss, argnums=(0, 1), has_aux=True))(*args)
    want, want_aux = jax.grad(loss, argnums=(0, 1), has_aux=True)(*args)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert float(aux) == pytest.approx(float(want_aux))


@pytest.mark.slow  # 1.5-1.9 s each on 2 cores
@pytest.mark.parametrize("name", ["forward-grad", "spsa"])
def test_one_key_one_estimate(name) -> None:
    """Reproducible for a fixed seed, under jit and vmap alike; jvp, vjp and the Jacobian of
    one key are products with the same estimate."""
    fun = lambda x: jnp.stack([jnp.sum(x**2), jnp.sin(x[0]) * x[2], x[1]])  # noqa: E731
    x, x_dot, y_bar = jnp.arange(1.0, 5.0), jnp.array([1.0, -2.0, 0.5, 3.0]), jnp.ones(3)
    count = {"tangents" if name == "forward-grad" else "samples": 3}

    @jax.jit
    def per_key(key):
        d = dk.get(name, key=key, **count)
        return d.jacobian(fun)(x), d.jvp(fun, (x,), (x_dot,))[1], d.vjp(fun, x)[1](y_bar)[0]

    jac, y_dot, x_bar = per_key(jax.random.key(5))
    eager = dk.get(name, seed=5, **count).jacobian(fun)(x)
    np.testing.assert_allclose(eager, jac, rtol=1e-5)  # the same numbers, up to rounding
    np.testing.assert_array_equal(per_key(jax.random.key(5))[0], jac)
    assert not np.allclose(per_key(jax.random.key(6))[0], jac)
    np.testing.assert_allclose(y_dot, jac @ x_dot, rtol=1e-5)
    np.testing.assert_allclose(x_bar, y_bar @ jac, rtol=1e-5)
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(per_key))(keys)
    for i, key in enumerate(keys):
        for got, want in zip(batched, per_key(key), strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-6)
    if name == "forward-grad":  # exact on the directions it drew: J_hat V^T = J V^T (V V^T)/k
        v = dk.get(name, seed=5, **count).directions(4, jnp.float32)
        np.testing.assert_allclose(jac @ v.T, jax.jacfwd(fun)(x) @ v.T @ (v @ v.T) / 3, 1e-4)


def test_hessian_is_unbiased(x64) -> None:
    fun = lambda x: jnp.sum(jnp.sin(x) * x) + x[0] * x[1] ** 2  # noqa: E731
    x = jnp.array([0.3, -0.7, 1.1])
    fg = dk.get("forward-grad", tangents=2)
    keys = jax.random.split(jax.random.key(11), 3000)
    est = np.asarray(jax.jit(jax.vmap(lambda k: fg.with_key(k).hessian(fun)(x)))(keys))
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(keys))
    assert np.all(np.abs(mean - jax.hessian(fun)(x)) <= 3 * se)


def test_costs_and_theory() -> None:
    fg, sp = dk.get("forward-grad", tangents=4), dk.get("spsa", samples=8)
    assert (fg.mode, sp.mode) == ("stochastic", "stochastic")
    assert fg.passes("grad", 10**6) == 4 and fg.passes("jacobian", 10, 20) == 4
    assert sp.evaluations("grad", 10**6) == 16
    assert dk.get("forward-grad").second_moment(100) == 102.0  # n + 2
    assert fg.second_moment(100) == pytest.approx(1 + 101 / 4)
    assert dk.get("forward-grad", tangents=5, orthogonal=True).second_moment(100) == 20.0
    assert sp.second_moment(100) == pytest.approx(1 + 99 / 8)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tangents": 0}, r"forward-grad: tangents must be a positive int, got 0"),
        ({"distribution": "uniform"}, r"distribution must be one of gaussian, rademacher"),
        ({"orthogonal": True, "distribution": "rademacher"}, r"use distribution='gaussian'"),
        ({"seed": 1, "key": jax.random.key(1)}, r"give seed or key, not both"),
        ({"key": 3}, r"key must be a JAX PRNG key"),
        ({"key": jax.random.split(jax.random.key(0))}, r"key must be one PRNG key"),
    ],
)
def test_bad_options_are_one_line_errors(options, match) -> None:
    with pytest.raises(dk.DiffkitError, match=match):
        dk.get("forward-grad", **options)


def test_bad_calls_are_one_line_errors() -> None:
    with pytest.raises(dk.DiffkitError, match=r"spsa: samples must be a positive int"):
        dk.get("spsa", samples=-1)
    with pytest.raises(dk.DiffkitError, match=r"spsa: step must be a positive number"):
        dk.get("spsa", step=0.0)
    fg = dk.get("forward-grad", tangents=4, orthogonal=True)
    with pytest.raises(dk.DiffkitError, match=r"4 orthogonal directions need .* got n=3"):
        fg.grad(jnp.sum)(jnp.ones(3))
    with pytest.raises(dk.DiffkitError, match=r"complex inputs are not supported"):
        dk.get("spsa").jvp(jnp.sin, (jnp.ones(2, jnp.complex64),), (jnp.ones(2, jnp.complex64),))
    with pytest.raises(dk.DiffkitError, match=r"quality: jax-rev is not a stochastic"):
        quality(dk.get("jax-rev"), jnp.sum, (jnp.ones(2),), jnp.ones(2))


class Biased(ForwardGradient):
    """Tangents of mean 1: E[v v^T] = I + 1 1^T, biased by (1 . g) 1."""

    def directions(self, n, dtype):
        return super().directions(n, dtype) + 1.0


def test_harness_judges_estimators_by_bias(x64) -> None:
    """run_case records quality over 100 keys: the second moment as theory (n + 2), the bias
    within 3 standard errors; an estimator biased by (1 . g) 1 is recorded inaccurate."""
    shared: dict = {}
    rec = dk.harness.run_case(
        "lse", 10, "forward-grad", "float64", min_time=0.001, reference_cache=shared
    )
    assert (rec["outcome"], rec["mode"], rec["accurate"], rec["passes"]) == (
        "ok", "stochastic", True, 1
    )  # fmt: skip
    assert rec["second_moment_theory"] == 12.0 and rec["repeats"] == 100
    assert abs(rec["second_moment"] - 12.0) <= 3 * rec["second_moment_se"]
    assert rec["bias"] <= 3 * rec["bias_se"] and 0 < rec["cosine"] < 1
    dk.register("test-biased")(Biased)
    try:
        bad = dk.harness.run_case(
            "lse", 10, "test-biased", "float64", min_time=0.001, reference_cache=shared
        )
    finally:
        dk.unregister("test-biased")
    assert bad["outcome"] == "ok" and bad["accurate"] is False
    assert bad["bias"] > 3 * bad["bias_se"]


def test_train_spends_the_same_budget() -> None:
    runs = train(
        "logistic-regression", ["jax-rev", ("forward-grad", {"tangents": 2})], n=20,
        budget=400, lrs=(0.3, 3.0), points=5,
    )  # fmt: skip
    for run in runs.values():
        assert run.lr in (0.3, 3.0) and run.forward_passes > 0
        steps, passes, seconds, losses = zip(*run.curve, strict=True)
        assert passes[-1] <= 400 < passes[-1] + run.forward_passes  # the budget, spent
        np.testing.assert_allclose(passes, np.array(steps) * run.forward_passes)
        assert losses[0] == pytest.approx(np.log(2.0), rel=1e-6)  # w = 0: log 2
        assert run.final_loss < losses[0] and list(seconds) == sorted(seconds)
    with pytest.raises(dk.DiffkitError, match=r"unknown task 'mnist'"):
        train("mnist")


def test_verdict_says_what_estimators_cost_and_how_noisy() -> None:
    def rec(method, mode, ratio, **quality):
        return {
            "problem": "mlp", "quantity": "grad", "n": 10_000, "m": 1, "method": method,
            "mode": mode, "outcome": "ok", "ratio": ratio, "accurate": True,
            "dtype": "float32", **quality,
        }  # fmt: skip

    noisy = {"cosine": 0.01, "second_moment": 9950.0, "second_moment_theory": 10002.0}
    text = dk.harness.Results(
        [rec("jax-rev", "reverse", 2.9), rec("forward-grad", "stochastic", 3.1, passes=1, **noisy)]
    ).verdict()
    # an estimate is not the gradient: estimators are costed apart, among themselves
    assert "a gradient costs: reverse mode 2.9x the forward pass (jax-rev)." in text
    assert "(theory 1e+04), 3.1x the forward pass" in text
    assert "unbiased but noisy: at n=10 000 (mlp) forward-grad (1 pass) cosine 0.01" in text
    assert "E|g|²/|g|² 9.95e+03 (theory 1e+04)" in text


def test_list_shows_the_stochastic_mode(capsys) -> None:
    from diffkit.cli import main

    assert main(["list"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "stochastic" in line]
    assert any("forward-grad" in r and "tangents" in r for r in rows), rows
    assert any("spsa" in r and "samples" in r for r in rows), rows
