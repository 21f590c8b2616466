"""Real library code, differentiated six ways: flax, optax, numpyro and jax.scipy as written.

Each case is code nobody here wrote (a flax CNN and attention block, optax's losses, a
Gaussian process through ``cholesky`` + ``cho_solve``, numpyro's log densities and a
hierarchical model's potential energy, JAX's special points), at a few dozen parameters.
Every method's gradient is compared with ``jax.grad`` (jitted) of the same function:

- dual, tape, jax-fwd, jax-rev in float64 to rho <= 1e-10, dual and tape in float32 to 1e-5;
- fd (central differences) within its own error estimate (:meth:`fd.gradient`, ``2|D(h) -
  D(2h)|`` plus rounding), an estimate asserted to be small, so the check can fail;
- symbolic where it supports the function; else it must refuse with a one-line
  :class:`diffkit.UnsupportedPrimitiveError`.

Each case, method and dtype is a test of its own (``test_real_code_gradient_matches_jax[
flax_cnn-tape-float64]``). flax, optax and numpyro (the ``realcode`` extra) are imported
where a case is built: the cases that use them are marked slow, so that the unit tier, which
does not install them, deselects them; the full suite runs every case.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import jax.scipy.special as jsp
import numpy as np
import pytest

import diffkit as dk
from diffkit.accuracy import rho_tree


class Case(NamedTuple):
    """``build(dtype) -> (f, x)``: a scalar function of one pytree and the point."""

    build: Callable[[Any], tuple[Callable, Any]]
    symbolic: bool  # whether symbolic supports it (else it must refuse, one line)
    marks: tuple = ()  # pytest marks of the symbolic case
    realcode: bool = True  # uses flax, optax or numpyro (the realcode extra): marked slow


#: Building, differentiating and compiling the unrolled expressions takes 1-30 s here.
SLOW_SYMBOLIC = (pytest.mark.slow,)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _cast(tree: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype), tree, is_leaf=lambda a: isinstance(a, list)
    )


# ----------------------------------------------------------------------------- 1. flax CNN
@functools.cache
def _cnn_module() -> type:
    import flax.linen as nn

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(features=3, kernel_size=(3, 3), padding="SAME", dtype=x.dtype)(x)
            x = nn.LayerNorm(dtype=x.dtype)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))  # 6x6 -> 3x3
            x = nn.avg_pool(x, window_shape=(2, 2), strides=(1, 1))  # 3x3 -> 2x2
            return nn.Dense(features=2, dtype=x.dtype)(x.reshape(x.shape[0], -1))

    return CNN


def _cnn(dtype):
    images = jnp.asarray(_rng(1).normal(size=(2, 6, 6, 1)), dtype)
    targets = jnp.asarray(_rng(2).normal(size=(2, 2)), dtype)
    model = _cnn_module()()
    params = _cast(model.init(jax.random.key(0), images)["params"], dtype)

    def loss(params):
        return jnp.mean((model.apply({"params": params}, images) - targets) ** 2)

    return loss, params


# ----------------------------------------------------------------------- 2. attention
def _attention(dtype):
    import flax.linen as nn

    x = jnp.asarray(_rng(3).normal(size=(1, 3, 2)), dtype)  # batch 1, length 3, features 2
    layer = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=2, dtype=dtype)
    mask = nn.make_causal_mask(jnp.ones((1, 3)))  # flax masks with jnp.where(mask, w, min)
    params = _cast(layer.init(jax.random.key(1), x, mask=mask)["params"], dtype)

    def loss(inputs):
        params, x = inputs
        return jnp.sum(jnp.tanh(layer.apply({"params": params}, x, mask=mask)) ** 2)

    return loss, (params, x)


def _attention_einsum(dtype):
    """Written out: softmax over scores masked with -inf above the diagonal."""
    r = _rng(4)
    x = jnp.asarray(r.normal(size=(3, 2)), dtype)
    w = jnp.asarray(r.normal(size=(3, 2, 2)) / 2, dtype)  # query, key, value projections
    causal = jnp.tril(jnp.ones((3, 3), bool))

    def loss(inputs):
        w, x = inputs
        q, k, v = (x @ w[i] for i in range(3))
        scores = jnp.where(causal, jnp.einsum("qd,kd->qk", q, k) / jnp.sqrt(2.0), -jnp.inf)
        return jnp.sum(jnp.einsum("qk,kd->qd", jax.nn.softmax(scores, axis=-1), v) ** 2)

    return loss, (w, x)


# -------------------------------------------------------------------------- 3. optax
def _logits(dtype, shape=(2, 3), seed=5):
    return jnp.asarray(_rng(seed).normal(size=shape), dtype)


def _focal(dtype):
    import optax

    labels = jnp.asarray([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype)
    return (
        lambda z: jnp.sum(optax.sigmoid_focal_loss(z, labels, alpha=0.25, gamma=2.0)),
        _logits(dtype),
    )


def _softmax_xent(dtype):
    import optax

    labels = jnp.asarray([[0.2, 0.0, 0.8], [0.0, 1.0, 0.0]], dtype)
    return lambda z: jnp.sum(optax.softmax_cross_entropy(z[0], z[1])), (_logits(dtype), labels)


def _safe_softmax_xent(dtype):
    import optax

    labels = jnp.asarray([[0.2, 0.0, 0.8], [0.0, 1.0, 0.0]], dtype)
    return lambda z: jnp.sum(optax.safe_softmax_cross_entropy(z, labels)), _logits(dtype)


def _kl(dtype):
    import optax

    targets = jnp.asarray([[0.0, 0.3, 0.7], [0.5, 0.5, 0.0]], dtype)  # zero probabilities

    def loss(z):
        return jnp.sum(optax.kl_divergence(jax.nn.log_softmax(z), targets))

    return loss, _logits(dtype)


def _ctc(dtype):
    import optax

    labels = jnp.asarray([[1, 2]], jnp.int32)  # T = 4, K = 3 (blank 0)
    label_paddings = jnp.asarray([[0.0, 0.0]], dtype)
    logit_paddings = jnp.asarray([[0.0, 0.0, 0.0, 1.0]], dtype)  # the last step is padding

    def loss(z):
        return jnp.sum(optax.ctc_loss(z, logit_paddings, labels, label_paddings))

    return loss, _logits(dtype, (1, 4, 3), seed=6)


def _huber(dtype):
    import optax

    targets = jnp.asarray([0.0, 1.0, -1.0, 2.0], dtype)
    predictions = jnp.asarray([0.3, 3.0, -1.2, -0.5], dtype)  # both sides of delta = 1
    return lambda p: jnp.sum(optax.huber_loss(p, targets, delta=1.0)), predictions


# -------------------------------------------------------------------- 4. Gaussian process
def _gp(dtype):
    r = _rng(7)
    y = jnp.asarray(r.normal(size=5), dtype)
    x = jnp.asarray(r.normal(size=(5, 2)), dtype)
    theta = jnp.asarray([0.1, -0.2, -1.0], dtype)  # log length-scale, log amplitude, log noise

    def nlml(inputs):
        theta, x = inputs
        ls, amp, noise = jnp.exp(theta)
        d2 = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
        k = amp**2 * jnp.exp(-0.5 * d2 / ls**2) + noise**2 * jnp.eye(5, dtype=x.dtype)
        chol = jnp.linalg.cholesky(k)
        alpha = jsl.cho_solve((chol, True), y)
        z = jsl.solve_triangular(chol, y, lower=True)  # y' K^-1 y twice, both ways
        return 0.25 * (y @ alpha + z @ z) + jnp.sum(jnp.log(jnp.diag(chol)))

    return nlml, (theta, x)


# --------------------------------------------------------------------------- 5. numpyro
def _densities(dtype):
    import numpyro.distributions as dist

    p = _cast(
        {
            "normal": [0.3, 1.5, -0.4],  # loc, scale, x
            "gamma": [2.0, 1.5, 0.7],  # concentration, rate, x
            "beta": [2.5, 1.5, 0.3],  # a, b, x
            "dirichlet": [1.5, 2.0, 3.0],  # concentrations (x fixed)
            "student": [4.0, 0.2, 1.3, 0.9],  # df, loc, scale, x
        },
        dtype,
    )
    simplex = jnp.asarray([0.2, 0.5, 0.3], dtype)

    def logp(p):
        n, g, b, s = p["normal"], p["gamma"], p["beta"], p["student"]
        return (
            dist.Normal(n[0], n[1]).log_prob(n[2])
            + dist.Gamma(g[0], g[1]).log_prob(g[2])
            + dist.Beta(b[0], b[1]).log_prob(b[2])
            + dist.Dirichlet(p["dirichlet"]).log_prob(simplex)
            + dist.StudentT(s[0], s[1], s[2]).log_prob(s[3])
        )

    return logp, p


def _schools(sigma, y=None):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", 3):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _hierarchical(dtype):
    from numpyro.infer.util import potential_energy

    sigma = jnp.asarray([15.0, 10.0, 16.0], dtype)
    y = jnp.asarray([28.0, 8.0, -3.0], dtype)
    params = _cast({"mu": 1.0, "tau": 0.5, "theta": [2.0, -1.0, 0.5]}, dtype)  # unconstrained
    return lambda q: potential_energy(_schools, (sigma,), {"y": y}, q), params


# ------------------------------------------------------------------ 6. special points, linalg
def _xlogy(dtype):
    y = jnp.asarray([0.5, 2.0, 1.5], dtype)
    return lambda x: jnp.sum(jsp.xlogy(x, y * (1.0 + x))), jnp.asarray([0.0, 0.7, 0.0], dtype)


def _relu(dtype):  # relu at its kink: x**2 and x * relu(x) are differentiable there
    return lambda x: jnp.sum(jax.nn.relu(x) * x + jax.nn.relu(x**3)), jnp.asarray(
        [0.0, 1.3, -0.6], dtype
    )


def _matrix(dtype, seed=8):
    return jnp.asarray(_rng(seed).normal(size=(3, 3)) + 2.0 * np.eye(3), dtype)


def _slogdet(dtype):
    return lambda a: jnp.linalg.slogdet(a)[1], _matrix(dtype)


def _solve(dtype):
    b = jnp.asarray([1.0, -2.0, 0.5], dtype)
    return lambda a: jnp.sum(jnp.linalg.solve(a, b) ** 2), _matrix(dtype)


def _eigh(dtype):
    weights = jnp.asarray([1.0, -0.5, 2.0], dtype)
    return lambda a: weights @ jnp.linalg.eigh(a + a.T)[0], _matrix(dtype, seed=9)


CASES: dict[str, Case] = {
    "flax cnn": Case(_cnn, symbolic=True),
    "flax attention": Case(_attention, symbolic=True, marks=SLOW_SYMBOLIC),
    "attention -inf mask": Case(
        _attention_einsum, symbolic=True, marks=SLOW_SYMBOLIC, realcode=False
    ),
    "optax sigmoid_focal_loss": Case(_focal, symbolic=True),
    "optax softmax_cross_entropy": Case(_softmax_xent, symbolic=True),
    "optax safe_softmax_cross_entropy": Case(_safe_softmax_xent, symbolic=True),
    "optax kl_divergence zeros": Case(_kl, symbolic=True),
    "optax ctc_loss": Case(_ctc, symbolic=True, marks=SLOW_SYMBOLIC),
    "optax huber_loss": Case(_huber, symbolic=True),
    "gp nlml cholesky": Case(_gp, symbolic=True, realcode=False),
    "numpyro log densities": Case(_densities, symbolic=True),
    "numpyro potential_energy": Case(_hierarchical, symbolic=True),
    "xlogy at 0": Case(_xlogy, symbolic=True, realcode=False),
    "relu at 0": Case(_relu, symbolic=True, realcode=False),
    "slogdet": Case(_slogdet, symbolic=True, realcode=False),
    "solve": Case(_solve, symbolic=True, realcode=False),
    "eigh eigenvalues": Case(_eigh, symbolic=True, realcode=False),
}

#: Marks of the cases that need the realcode extra: the unit tier deselects them (-m "not
#: slow"), the full suite runs them (the test extra installs flax, optax and numpyro).
NEEDS_REALCODE = (pytest.mark.slow,)


def case_id(case: str) -> str:
    """The case's name as a test id (no spaces): ``flax cnn`` -> ``flax_cnn``."""
    return case.replace(" ", "_")


def case_params(case: str, *rest: Any, marks: tuple = ()) -> Any:
    """``(case, *rest)`` as a pytest.param, with the case's marks and a readable id."""
    marks = (*marks, *(NEEDS_REALCODE if CASES[case].realcode else ()))
    return pytest.param(case, *rest, marks=marks, id="-".join([case_id(case), *rest]))


PARAMS = [
    case_params(c, m, "float64", marks=CASES[c].marks if m == "symbolic" else ())
    for c in CASES
    for m in dk.names()
    if dk.get(m).mode != "stochastic"  # estimators: judged by bias, tests/test_stochastic.py
]
PARAMS += [case_params(c, m, "float32") for c in CASES for m in ("dual", "tape")]


@functools.cache
def _reference(case: str, dtype: str) -> tuple[Callable, Any, Any]:
    """The function, the point and ``jax.grad`` there (jitted), built once per case and dtype."""
    f, x = CASES[case].build(jnp.dtype(dtype))
    return f, x, jax.jit(jax.grad(f))(x)


def _grad_and_error(result: Any) -> tuple[Any, Any]:
    return result.grad, result.error


@pytest.mark.parametrize(("case", "method", "dtype"), PARAMS)
def test_real_code_gradient_matches_jax(case: str, method: str, dtype: str) -> None:
    with jax.enable_x64(dtype == "float64"):
        f, x, want = _reference(case, dtype)
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(want))
        if method == "symbolic" and not CASES[case].symbolic:
            with pytest.raises(dk.UnsupportedPrimitiveError) as info:
                dk.get("symbolic").grad(f)(x)
            assert "\n" not in str(info.value)
            return
        if method == "fd":  # within its own error bound, a bound that is small
            grad, error = jax.jit(lambda x: _grad_and_error(dk.get("fd").gradient(f)(x)))(x)
            for got, err, ref in zip(
                *(jax.tree_util.tree_leaves(t) for t in (grad, error, want)),
                strict=True,
            ):
                got, err, ref = (np.asarray(a, np.float64) for a in (got, err, ref))
                assert np.all(np.abs(got - ref) <= err), (np.abs(got - ref) - err).max()
                assert np.all(err <= 1e-5 * np.maximum(1.0, np.abs(ref))), err.max()
            return
        d = dk.get(method)
        grad = d.grad(f) if method == "symbolic" else jax.jit(d.grad(f))
        got = grad(x)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
        assert rho_tree(got, want) <= (1e-10 if dtype == "float64" else 1e-5)
