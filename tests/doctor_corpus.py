"""Broken gradients, as users write them, for the gradient doctor (tests/test_doctor.py).

Each case is a builder returning ``(f, args)``; ``@case(primitive)`` names the primitive of
the equation that must be the doctor's first culprit, and the user's line it comes from is
marked ``# culprit`` inside the builder. The kinds follow the bugs people file against JAX:
masked NaN through ``where``, ``sqrt`` at 0 inside a norm, ``log(0)`` in a masked softmax,
``xlogy``-style custom rules, float16 overflow, underflow in float32/float16, custom rules
wrong by 50 % on one element or with a wrong transpose, a ``stop_gradient`` in the wrong
place, kinks, vanishing and exploding gradients. Builders run with ``jax_enable_x64`` on;
low-precision cases give their dtype explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class Case(NamedTuple):
    build: Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]
    primitive: str  # the first culprit's primitive
    kind: str  # the first culprit's kind


CASES: dict[str, Case] = {}


def case(primitive: str, kind: str) -> Callable:
    def register(build: Callable) -> Callable:
        CASES[build.__name__] = Case(build, primitive, kind)
        return build

    return register


# ------------------------------------------------------------------ masked NaN (where)


@case("sqrt", "masked-nan")
def where_sqrt():
    def loss(x):
        return jnp.sum(jnp.where(x > 0, jnp.sqrt(x), 0.0))  # culprit

    return loss, (jnp.array([4.0, -1.0, 2.0]),)


@case("log", "masked-nan")
def masked_softmax_log():
    mask = jnp.array([True, True, False, True])

    def neg_log_likelihood(logits):
        p = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf))
        logp = jnp.log(p)  # culprit
        return -jnp.sum(jnp.where(mask, logp, 0.0))

    return neg_log_likelihood, (jnp.array([0.5, -1.0, 2.0, 0.1]),)


@case("mul", "masked-nan")
def naive_xlogx():
    def entropy(p):
        terms = jnp.where(p > 0, p * jnp.log(p), 0.0)  # culprit
        return -jnp.sum(terms)

    return entropy, (jnp.array([0.5, 0.0, 0.5]),)


@case("div", "masked-nan")
def masked_mean():
    def mean_per_group(s, n):
        return jnp.sum(jnp.where(n > 0, s / n, 0.0))  # culprit

    return mean_per_group, (jnp.array([3.0, 0.0, 1.0]), jnp.array([2.0, 0.0, 1.0]))


@case("log", "masked-nan")
def masked_log_barrier():
    def barrier(x):
        inside = x < 1.0
        return jnp.sum(jnp.where(inside, -jnp.log(1.0 - x), 1e3))  # culprit

    return barrier, (jnp.array([0.2, 1.0, 0.5]),)


@case("pow", "masked-nan")
def masked_power():
    def loss(x):
        return jnp.sum(jnp.where(x >= 0, x**1.5, 0.0))  # culprit

    return loss, (jnp.array([1.0, -2.0]),)


# ------------------------------------------------------------------ infinite derivatives


@case("sqrt", "infinite-derivative")
def norm_at_zero():
    def distance(x, y):
        return jnp.sqrt(jnp.sum((x - y) ** 2))  # culprit

    x = jnp.array([1.0, 2.0, 3.0])
    return distance, (x, x)


@case("sqrt", "infinite-derivative")
def linalg_norm_at_zero():
    def loss(w, w0):
        return 0.5 * jnp.linalg.norm(w - w0)  # culprit

    w = jnp.array([[0.5, 1.0], [2.0, -1.0]])
    return loss, (w, w)


@case("pow", "infinite-derivative")
def power_half_at_zero():
    def rms(x):
        return jnp.mean(x**2) ** 0.5  # culprit

    return rms, (jnp.zeros(4),)


@case("asin", "infinite-derivative")
def arcsin_at_one():
    def angle(c):
        return jnp.sum(jnp.arcsin(jnp.clip(c, -1.0, 1.0)))  # culprit

    return angle, (jnp.array([0.3, 1.0]),)


@case("sqrt", "zero-times-inf")
def sqrt_squared():
    def loss(x):
        r = jnp.sqrt(x)  # culprit
        return jnp.sum(r**2)

    return loss, (jnp.array([0.0, 1.0]),)


@case("log", "non-finite-value")
def entropy_with_zero():
    def entropy(p):
        return -jnp.sum(p * jnp.log(p))  # culprit

    return entropy, (jnp.array([0.25, 0.0, 0.75]),)


# ------------------------------------------------------------------ custom rules


@case("custom_jvp_call", "custom-rule")
def xlogy_rule_missing_term():
    @jax.custom_jvp
    def xlogy(x, y):
        return jnp.where(x == 0, 0.0, x * jnp.log(y))

    @xlogy.defjvp
    def xlogy_jvp(primals, tangents):
        x, y = primals
        x_dot, _y_dot = tangents  # the bug: y_dot is never used
        return xlogy(x, y), jnp.log(y) * x_dot  # forgot x / y * _y_dot

    p = jnp.array([0.2, 0.3, 0.5])

    def cross_entropy(q):
        return -jnp.sum(xlogy(p, q))  # culprit

    return cross_entropy, (jnp.array([0.3, 0.3, 0.4]),)


@case("custom_vjp_call", "custom-rule")
def custom_vjp_fifty_percent_on_one_element():
    @jax.custom_vjp
    def activation(x):
        return jnp.sin(x)

    def fwd(x):
        return jnp.sin(x), x

    def bwd(x, y_bar):
        return ((jnp.cos(x) * y_bar).at[417].multiply(1.5),)

    activation.defvjp(fwd, bwd)

    def loss(x):
        return jnp.sum(activation(x) ** 2)  # culprit

    return loss, (jnp.linspace(-2.0, 2.0, 1000),)


@case("custom_vjp_call", "custom-rule")
def custom_vjp_wrong_transpose():
    a = jnp.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]])

    @jax.custom_vjp
    def apply(x):
        return a @ x

    def fwd(x):
        return a @ x, None

    def bwd(_, y_bar):
        return (a @ y_bar,)  # should be a.T @ y_bar

    apply.defvjp(fwd, bwd)

    def loss(x):
        return jnp.sum(jnp.tanh(apply(x)))  # culprit

    return loss, (jnp.array([0.1, -0.2, 0.3]),)


@case("custom_jvp_call", "custom-rule")
def custom_jvp_fifty_percent_on_one_element():
    @jax.custom_jvp
    def cube(x):
        return x**3

    @cube.defjvp
    def cube_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return cube(x), 3 * x**2 * t * jnp.where(jnp.arange(x.size) == 7, 1.5, 1.0)

    def loss(x):
        return jnp.mean(cube(x))  # culprit

    return loss, (jnp.linspace(0.5, 1.5, 20),)


@case("custom_jvp_call", "custom-rule")
def safe_log_wrong_rule():
    @jax.custom_jvp
    def safe_log(x):
        return jnp.log(jnp.maximum(x, 1e-12))

    @safe_log.defjvp
    def safe_log_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return safe_log(x), t / x**2  # should be t / x

    def loss(p):
        return -jnp.sum(safe_log(p))  # culprit

    return loss, (jnp.array([0.2, 0.5, 0.3]),)


@case("custom_vjp_call", "custom-rule")
def softplus_wrong_sign():
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def fwd(x):
        return softplus(x), x

    def bwd(x, y_bar):
        return (jax.nn.sigmoid(-x) * y_bar,)  # should be sigmoid(x)

    softplus.defvjp(fwd, bwd)

    def loss(w):
        return jnp.sum(softplus(w) * jnp.array([1.0, 2.0, 3.0]))  # culprit

    return loss, (jnp.array([0.5, -1.0, 2.0]),)


# ------------------------------------------------------------------ stop_gradient


@case("stop_gradient", "stop-gradient")
def stop_gradient_on_parameters():
    x = jnp.array([1.0, 2.0, -1.0])

    def loss(w):
        prediction = lax.stop_gradient(w) * x  # culprit
        return jnp.sum((prediction - 1.0) ** 2)

    return loss, (jnp.array([0.3, 0.1, 0.2]),)


@case("stop_gradient", "stop-gradient")
def stop_gradient_on_the_mean():
    weights = jnp.array([1.0, 3.0, 0.5, 2.0])

    def spread(x):
        mu = lax.stop_gradient(jnp.mean(x))  # culprit
        return jnp.sum(weights * (x - mu) ** 2)

    return spread, (jnp.array([0.1, 0.7, -0.3, 0.4]),)


# ------------------------------------------------------------------ low precision


@case("integer_pow", "overflow")
def float16_norm_overflow():
    def norm(x):
        return jnp.sqrt(jnp.sum(x**2))  # culprit

    return norm, (jnp.full(4, 300.0, jnp.float16),)


@case("exp", "overflow")
def float16_softmax_overflow():
    def softmax_loss(z):
        e = jnp.exp(z)  # culprit
        return -jnp.log(e[0] / jnp.sum(e))

    return softmax_loss, (jnp.array([12.0, 1.0, 3.0], jnp.float16),)


@case("mul", "underflow")
def expm1_underflow():
    def log_hazard(t):
        rate_t = 1e-30 * t  # culprit
        return jnp.sum(jnp.log(jnp.expm1(rate_t)))

    return log_hazard, (jnp.array([1e-16, 2e-16], jnp.float32),)


@case("reduce_prod", "underflow")
def float32_likelihood_product():
    def log_likelihood(p):
        return jnp.log(jnp.prod(p))  # culprit

    return log_likelihood, (jnp.full(100, 0.3, jnp.float32),)


@case("exp", "underflow")
def float16_exp_underflow():
    def loss(x):
        return 1e4 * jnp.sum(jnp.exp(-x))  # culprit

    return loss, (jnp.array([20.0, 19.0], jnp.float16),)


# ------------------------------------------------------------------ kinks


@case("abs", "kink")
def abs_at_target():
    target = jnp.array([1.0, 2.0, 3.0])

    def l1(x):
        return jnp.sum(jnp.abs(x - target))  # culprit

    return l1, (target,)


@case("custom_jvp_call", "kink")
def relu_at_zero():
    def hinge(w):
        return jnp.sum(jax.nn.relu(w - 1.0))  # culprit

    return hinge, (jnp.array([1.0, 1.0, 1.0]),)


@case("reduce_max", "kink")
def max_with_ties():
    def worst(x):
        return jnp.max(x)  # culprit

    return worst, (jnp.array([1.0, 1.0, 0.0]),)


# ------------------------------------------------------------------ repeated structure


@case("logistic", "vanishing")
def sigmoid_stack():
    def deep(w):
        h = jnp.ones(2)
        for k in range(16):
            h = jax.nn.sigmoid(w[k] * h)  # culprit
        return jnp.sum(h)

    return deep, (jnp.ones((16, 2)),)


@case("add", "exploding")
def scan_exploding():
    def unstable(h0):
        def step(h, _):
            h = 2.5 * h + 0.1 * jnp.tanh(h)  # culprit
            return h, None

        h, _ = lax.scan(step, h0, None, length=20)
        return jnp.sum(h)

    return unstable, (jnp.array([0.1, -0.2]),)


@case("mul", "vanishing")
def scan_vanishing():
    def damped(h0):
        def step(h, _):
            h = 0.1 * jnp.tanh(h)  # culprit
            return h, None

        h, _ = lax.scan(step, h0, None, length=20)
        return jnp.sum(h)

    return damped, (np.array([0.5, 1.0]),)
