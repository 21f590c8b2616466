"""``symbolic`` keeps JAX's semantics: NaN and infinities, integer conversions, rounding,
derivative conventions at kinks, library authors' custom_jvp rules, orders decided at the
point, and a spot-check that refuses to return a number from a wrong translation.

Every reference is JAX's own (jax.value_and_grad, jax.hessian) in float64, at ordinary points
and at the special ones (NaN-producing inputs, kinks, ties, zeros). Functions are grouped into
few scalar sums, each term weighted differently, because every symbolic build compiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
import pytest
from jax import lax

import diffkit as dk
from diffkit.symbolic.differentiator import SpotCheckError


def same(got, want) -> bool:
    """Equal to float64 rounding, NaN where JAX has NaN (value and every gradient entry)."""
    return all(
        np.allclose(np.asarray(g), np.asarray(w), rtol=1e-12, atol=1e-12, equal_nan=True)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    )


def check(f, *points) -> None:
    d = dk.get("symbolic")
    for x in points:
        got, want = d.value_and_grad(f)(x), jax.value_and_grad(f)(x)
        assert same(got, want), (x, got, want)


# ------------------------------------------------------------ NaN, inf (item 1)


def test_nan_handling_matches_jax(x64: None) -> None:
    """issue 17: nan_to_num / nansum / where(isnan) gave NaN and a nonzero gradient."""
    x = jnp.array([0.3, -1.2])
    check(lambda x: jnp.sum(jnp.nan_to_num(jnp.log(x))), x)
    check(lambda x: jnp.nansum(jnp.log(x)), x)

    def tests(x):
        y = jnp.log(x)  # NaN at -1.2
        parts = [
            jnp.where(jnp.isnan(y), 0.0, y),
            jnp.where(y != y, 2.0, 3.0 * x),  # ne on NaN
            jnp.where(y < 0.0, x, 2.0 * x) + jnp.where(y >= 0.0, x, 5.0 * x),  # NaN compares
            jnp.where(jnp.isnan(jnp.maximum(y, -1.0)), 4.0, x),  # max propagates NaN
            jnp.where(jnp.isnan(jnp.minimum(-1.0, y)), 6.0, x),
            jnp.where(jnp.isfinite(1.0 / (x - 0.3)), x, -x),  # inf at 0.3
            jnp.where(jnp.isnan(jnp.sign(y)), 7.0 * x, 2.0 * x),
        ]
        return sum(jnp.sum(p * (k + 1.0)) for k, p in enumerate(parts))

    check(tests, x, jnp.array([2.0, 0.5]))


def test_select_differentiates_as_jax_jvp(x64: None) -> None:
    """where(c, a, b) differentiates as JAX's JVP: the branch taken. (jax.grad multiplies
    the branch not taken by a zero cotangent, so a NaN derivative there leaks in: NaN.)"""
    f = lambda x: jnp.where(x > 0.0, jnp.sqrt(x), 0.0)  # noqa: E731
    got = dk.get("symbolic", level="scalar").grad(f)(-1.0)
    assert float(got) == float(jax.jvp(f, (-1.0,), (1.0,))[1]) == 0.0
    assert np.isnan(jax.grad(f)(-1.0))


def test_spot_check_refuses_a_wrong_value(x64: None) -> None:
    """SymPy simplifies exp(x) - exp(x) to 0; JAX computes inf - inf = NaN at x = 1000."""
    f = lambda x: jnp.exp(x) - jnp.exp(x) + x  # noqa: E731
    d = dk.get("symbolic", level="scalar")
    assert same(d.value_and_grad(f)(1.0), (1.0, 1.0))  # ordinary point: fine
    with pytest.raises(SpotCheckError, match=r"give 1000\.0 where JAX gives nan"):
        d.grad(f)(1000.0)
    assert (
        float(dk.get("symbolic", level="scalar", spot_check=False).grad(f)(1000.0)) == 1.0
    )  # opted out


# ---------------------------------------------- new rules and kinks (item 2)


def test_rounding_remainder_and_conversions_match_jax(x64: None) -> None:
    def f(x):
        parts = [
            jnp.floor(x) * x,
            jnp.ceil(x) * x,
            jnp.round(x * 2.0) * x,  # half to even (jnp.round)
            lax.round(x * 2.0, lax.RoundingMethod.AWAY_FROM_ZERO) * x,
            lax.rem(x, 0.75) + lax.rem(-2.0, x),  # C remainder: sign of the dividend
            jnp.sign(x) * x,
            (x * 3.0).astype(jnp.int32) * x,  # float -> int truncates toward 0
            ((x * 3.0).astype(jnp.int32) // 2).astype(x.dtype),  # integer division
            (x > 0.0).astype(jnp.int32) * x,
            jnp.cbrt(x),  # real cube root of negatives
        ]
        return sum(jnp.sum(p * (k + 1.0)) for k, p in enumerate(parts))

    check(f, jnp.array([1.25, -1.25, 0.3]), jnp.array([-0.75, 0.75, 2.5]))


def test_special_functions_match_jax(x64: None) -> None:
    f = lambda x: jnp.sum(  # noqa: E731
        jss.gammaln(x) + 2.0 * jss.digamma(x) + 3.0 * lax.erf_inv(x / 4.0) + jss.polygamma(1, x)
    )
    check(f, jnp.array([0.3, 2.5, -1.5]))


def test_kinks_follow_jax_conventions(x64: None) -> None:
    """abs at 0 (+1), max/min ties (1/2 each; reductions 1/k), clamp at its bounds (0),
    jnp.clip (a max and a min: 1/2 at a bound), relu at 0 (its rule: 0)."""

    def f(x):  # x = [0, 0.5, 0.5, 0.5, -1]
        parts = [
            jnp.abs(x),
            jnp.maximum(x, 0.5),
            jnp.minimum(x, 0.0),
            lax.clamp(-1.0, x, 0.5),
            jnp.clip(x, -1.0, 0.5),
            jax.nn.relu(x),
            jnp.max(x) + jnp.min(x),  # ties among three entries
        ]
        return sum(jnp.sum(p * (k + 1.0)) for k, p in enumerate(parts))

    check(f, jnp.array([0.0, 0.5, 0.5, 0.5, -1.0]), jnp.array([0.1, -0.4, 0.2, 0.7, 0.3]))


def test_cond_switch_and_boolean_reductions_match_jax(x64: None) -> None:
    def f(x):
        a = lax.cond(x[0] > 0.0, lambda y: y**2, lambda y: -y, x)
        k = jnp.clip(x[1] * 3.0, 0.0, 2.0).astype(jnp.int32)
        b = lax.switch(k, [lambda y: y[0], lambda y: y[1] ** 3, jnp.sum], x)
        c = jnp.where(jnp.any(x > 0.5), x[0], x[1]) + jnp.where(jnp.all(x > 0.0), 1.0, x[2])
        return jnp.sum(a) + 2.0 * b + 3.0 * c + jax.scipy.stats.norm.logcdf(x[2])

    check(f, jnp.array([0.3, 0.5, 0.7]), jnp.array([-0.3, 0.1, -0.7]))


def test_integer_conversions_of_inputs_and_constants(x64: None) -> None:
    """The dtype conversions inside optax.ctc_loss: lengths from float paddings (a closed-over
    constant, and an input), compared with an iota to mask a sum."""
    paddings = jnp.array([0.0, 0.0, 1.0, 1.0])

    def f(x):
        length = jnp.sum(1.0 - paddings).astype(jnp.int32)  # constant -> int
        mask = jnp.arange(4) < length
        n = jnp.floor(x[0] * 4.0).astype(jnp.int32)  # input -> int
        return jnp.sum(jnp.where(mask, x, 0.0) ** 2) + jnp.sum(jnp.where(jnp.arange(4) < n, x, 0))

    check(f, jnp.array([0.6, -0.2, 0.3, 0.9]))


def test_sort_and_argmax_hold_at_the_point(x64: None) -> None:
    f = lambda x: jnp.sum(jnp.sort(x) * jnp.arange(3.0)) + x[jnp.argmax(x)] * x[0]  # noqa: E731
    check(f, jnp.array([0.3, -1.2, 0.7]), jnp.array([0.9, 0.2, -0.5]))  # a new order: rebuilt
    check(lambda x: jnp.median(x) + jnp.sum(x.at[1].set(x[0] ** 2)), jnp.array([0.3, -1.2, 0.7]))


# ------------------------------------------------------ custom rules (item 3)


def test_custom_jvp_rules_are_used(x64: None) -> None:
    """The library's rules at their special points: relu at 0, xlogy / xlog1py at x = 0,
    entr at 0, softplus / logaddexp at a tie, and a straight-through estimator."""

    @jax.custom_jvp
    def straight_through(x):
        return jnp.round(x)

    straight_through.defjvp(lambda p, t: (straight_through(p[0]), t[0]))

    def f(x):  # x = [0, 0, 0.5]
        parts = [
            jax.nn.relu(x),
            jss.xlogy(x, x + 0.5),
            jss.xlog1py(x, x),
            jss.entr(x),
            jax.nn.softplus(x),
            jnp.logaddexp(x, 0.0),
            straight_through(3.0 * x),
        ]
        return sum(jnp.sum(p * (k + 1.0)) for k, p in enumerate(parts))

    check(f, jnp.array([0.0, 0.0, 0.5]), jnp.array([0.2, 1.5, 0.5]))


def test_second_derivative_through_a_rule(x64: None) -> None:
    """jnp.sinc's rule at 0 (a Maclaurin series, itself a custom_jvp): sinc''(0) = -pi^2/3."""
    f = lambda x: jnp.sum(jnp.sinc(x))  # noqa: E731
    x = jnp.array([0.0, 0.4])
    got = dk.get("symbolic").hessian(f)(x)
    assert np.allclose(got, jax.hessian(f)(x), rtol=1e-12, atol=1e-12)
    assert np.isclose(got[0, 0], -(np.pi**2) / 3, rtol=1e-12)


def test_stop_gradient_inside_a_custom_jvp_function(x64: None) -> None:
    """Its value uses the stopped expression (was: NameError for an undefined symbol); a rule
    whose tangent uses stop_gradient is refused in one line."""
    f = jax.custom_jvp(lambda x: x - jax.lax.stop_gradient(x) * 0.5)
    f.defjvp(lambda p, t: (f(*p), t[0]))
    g = lambda x: jnp.sum(f(x) * x)  # noqa: E731
    x = jnp.array([1.0, 2.0])
    assert np.array_equal(dk.get("symbolic", level="scalar").grad(g)(x), jax.grad(g)(x))

    h = jax.custom_jvp(lambda x: x * 2.0)
    h.defjvp(lambda p, t: (h(*p), t[0] * jax.lax.stop_gradient(p[0])))
    with pytest.raises(dk.UnsupportedPrimitiveError, match="stop_gradient"):
        dk.get("symbolic", level="scalar").grad(lambda x: jnp.sum(h(x)))(x)
