"""Library authors' derivative rules are part of the program: dual and tape apply them.

``custom_jvp`` / ``custom_vjp`` rules often exist for numerical safety at special points
(``relu`` at 0, ``xlogy`` at x = 0, ``entr`` at 0, ``logaddexp`` at a tie) or define a
different derivative altogether (straight-through estimators, gradient clipping). Each case
compares dual and tape with JAX at exactly those points, in float32 and float64, first order
and second (dual's JVP of tape's gradient against ``jax.jvp`` of ``jax.grad``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import pytest

import diffkit as dk


@jax.custom_jvp
def straight_through_round(x):
    return jnp.round(x)


straight_through_round.defjvp(lambda primals, tangents: (jnp.round(primals[0]), tangents[0]))


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -0.5, 0.5),))


def _solve(x):
    a = jnp.array([[2.0, 0.3, 0.1], [0.2, 1.5, 0.4], [0.0, 0.1, 1.0]], x.dtype)
    return jnp.linalg.solve(a + jnp.diag(x), jnp.sin(x))


#: name -> (function of one vector, the input: special points included)
CASES: dict[str, tuple[Callable, list[float]]] = {
    "relu at 0": (lambda x: jnp.sum(jax.nn.relu(x) * x + jax.nn.relu(x)), [0.0, 1.0, -1.0]),
    "xlogy at x=0": (lambda x: jnp.sum(jsp.xlogy(x, x + 1.0) + jsp.xlogy(x, x)), [0.0, 0.5]),
    "xlog1py at x=0": (lambda x: jnp.sum(jsp.xlog1py(x, x - 1.0)), [0.0, 0.5]),
    "entr at 0": (lambda x: jnp.sum(jsp.entr(x)), [0.0, 0.25, 1.0]),
    "kl with zeros": (lambda x: jnp.sum(jsp.rel_entr(x, x[::-1] + 0.5)), [0.0, 0.5, 0.25]),
    "sinc at 0": (lambda x: jnp.sum(jnp.sinc(x)), [0.0, 0.3]),
    "softplus": (lambda x: jnp.sum(jax.nn.softplus(x) ** 2), [0.0, -30.0, 30.0]),
    "logaddexp tie": (lambda x: jnp.sum(jnp.logaddexp(x, x[::-1]) ** 2), [0.5, 0.2, 0.5]),
    "logsumexp": (lambda x: jax.nn.logsumexp(x * x), [1.0, 1.0, -2.0]),
    "log_softmax": (lambda x: jnp.sum(jax.nn.log_softmax(x) * jnp.arange(3.0)), [0.1, 2.0, 0.1]),
    "straight-through": (lambda x: jnp.sum(straight_through_round(x) * x), [0.4, 1.6, -2.5]),
    "custom_linear_solve": (lambda x: jnp.sum(_solve(x) ** 2), [0.1, -0.2, 0.3]),
}


def _close(got, want, dtype: str) -> None:
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES)
def test_custom_rules_match_jax(case: str, dtype: str) -> None:
    f, point = CASES[case]
    x = jnp.asarray(point, dtype)
    v = jnp.asarray(np.linspace(0.5, -1.0, x.size), dtype)
    dual, tape = dk.get("dual"), dk.get("tape")

    @jax.jit
    def run(x, v):
        got = {
            "dual jvp": dual.jvp(f, (x,), (v,))[1],
            "tape grad": tape.grad(f)(x),
            "dual over tape": dual.jvp(tape.grad(f), (x,), (v,))[1],
        }
        want = {
            "dual jvp": jax.jvp(f, (x,), (v,))[1],
            "tape grad": jax.grad(f)(x),
            "dual over tape": jax.jvp(jax.grad(f), (x,), (v,))[1],
        }
        return got, want

    got, want = run(x, v)
    for key in got:
        assert np.isfinite(np.asarray(want[key])).all() <= np.isfinite(np.asarray(got[key])).all()
        _close(got[key], want[key], dtype)


def test_custom_vjp_rule_is_used_by_tape_and_refused_by_dual_as_jax_does(x64: None) -> None:
    f = lambda x: jnp.sum(clip_gradient(x) * 3.0)  # noqa: E731
    x = jnp.array([1.0, -2.0])
    assert np.array_equal(dk.get("tape").grad(f)(x), jax.grad(f)(x))  # clipped: 0.5, not 3
    assert np.array_equal(jax.grad(f)(x), [0.5, 0.5])
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(f, (x,), (x,))
    with pytest.raises(dk.UnsupportedPrimitiveError) as info:
        dk.get("dual").jvp(f, (x,), (x,))
    message = str(info.value)
    assert "custom_vjp" in message and "test_custom_rules.py" in message and "\n" not in message


def test_custom_vjp_closing_over_a_differentiated_value_is_refused_like_jax(x64: None) -> None:
    def f(w, x):
        @jax.custom_vjp
        def scale(x):
            return w * x

        scale.defvjp(lambda x: (w * x, None), lambda _, g: (g * w,))
        return jnp.sum(scale(x))

    w, x = jnp.array(2.0), jnp.array([1.0, 3.0])
    try:
        want = jax.grad(f)(w, x)
    except Exception:  # JAX refuses: so must the tape, with a clear error
        with pytest.raises(dk.UnsupportedPrimitiveError, match="custom_vjp"):
            dk.get("tape").grad(f)(w, x)
    else:
        assert np.array_equal(dk.get("tape").grad(f)(w, x), want)


@pytest.mark.slow  # ~1.7 s on 2 cores
def test_odeint_uses_its_adjoint_rule(x64: None) -> None:
    from jax.experimental.ode import odeint

    def f(theta):
        ys = odeint(lambda y, t, k: -k * y, jnp.array([1.0, 2.0]), jnp.array([0.0, 0.5]), theta)
        return jnp.sum(ys[-1] ** 2)

    theta = jnp.array(0.7)
    _close(dk.get("tape").grad(f)(theta), jax.grad(f)(theta), "float32")  # the solver's tol
    with pytest.raises(dk.UnsupportedPrimitiveError, match="custom_vjp"):
        dk.get("dual").grad(f)(theta)
