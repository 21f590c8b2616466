"""diffkit.testing.check_grads must catch every wrong derivative and pass every right one,
in float32 and float64, and the pytest plugin must expose it with project defaults."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from diffkit.testing import GradCheckError, NonDifferentiableError, check_grads, taylor_test

pytest_plugins = ["pytester"]


def scaled_sin(wrong_index: int | None, factor: float):
    """sin with a custom VJP that is off by ``factor`` on one element."""

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    def fwd(x):
        return jnp.sin(x), x

    def bwd(x, y_bar):
        x_bar = jnp.cos(x) * y_bar
        if wrong_index is not None:
            x_bar = x_bar.at[wrong_index].multiply(factor)
        return (x_bar,)

    f.defvjp(fwd, bwd)
    return f


def test_correct_custom_vjp_passes_in_both_precisions(dtype: str) -> None:
    x = jnp.linspace(-2.0, 2.0, 1000, dtype=dtype)
    check_grads(scaled_sin(None, 1.0), (x,), modes=("rev",))


def test_fifty_percent_wrong_on_one_of_1000_outputs_fails_in_float32() -> None:
    x = jnp.linspace(-2.0, 2.0, 1000, dtype=jnp.float32)
    with pytest.raises(GradCheckError, match=r"dot-product test"):
        check_grads(scaled_sin(417, 1.5), (x,), modes=("rev",))


def test_relative_1e_3_error_fails_in_float64(x64: None) -> None:
    x = jnp.linspace(-2.0, 2.0, 1000)
    with pytest.raises(GradCheckError):
        check_grads(scaled_sin(3, 1.001), (x,), modes=("rev",))


def test_wrong_custom_jvp_names_the_element(x64: None) -> None:
    @jax.custom_jvp
    def f(x):
        return x**2

    f.defjvp(lambda p, t: (f(p[0]), 2 * p[0] * t[0] * jnp.where(jnp.arange(5) == 2, 1.01, 1.0)))
    with pytest.raises(GradCheckError, match=r"element 2 expected .* obtained"):
        check_grads(f, (jnp.linspace(1.0, 2.0, 5),), modes=("fwd",))


def test_correct_gradient_of_a_sum_of_1e5_float32_terms_passes() -> None:
    x = jax.random.uniform(jax.random.PRNGKey(0), (100_000,), jnp.float32, 0.5, 1.5)
    check_grads(lambda x: jnp.sum(x * jnp.log(x)), (x,))


def test_kink_away_from_the_point_passes_and_at_the_kink_is_explained() -> None:
    relu_sum = lambda x: jnp.sum(jax.nn.relu(x) * x)  # noqa: E731
    check_grads(relu_sum, (jnp.array([0.3, -0.7, 1.2]),))
    with pytest.raises(NonDifferentiableError, match=r"not differentiable .* relu at 0"):
        check_grads(jax.nn.relu, (jnp.array([0.0, 1.0]),))


def test_second_order_catches_a_wrong_second_derivative(x64: None) -> None:
    @jax.custom_jvp
    def cube(x):
        return x**3

    # right first derivative, but its own derivative ignores x (stop_gradient): wrong f''
    cube.defjvp(lambda p, t: (cube(p[0]), 3 * jax.lax.stop_gradient(p[0]) ** 2 * t[0]))
    x = (jnp.array([0.5, 1.5]),)
    check_grads(cube, x, order=1)
    with pytest.raises(GradCheckError, match="second derivative"):
        check_grads(cube, x, order=2)


@pytest.mark.slow  # 1.5-2.3 s on 2 cores
def test_diffkit_differentiator_as_the_checked_method(x64: None) -> None:
    f = lambda p: jnp.tanh(p["w"]) @ p["v"]  # noqa: E731
    p = {"w": jnp.array([0.1, -0.4]), "v": jnp.array([2.0, 3.0])}
    check_grads(f, (p,), methods=["jax-fwd", "jax-rev"], order=2)


def test_taylor_test_slope() -> None:
    f = lambda x: jnp.sum(jnp.exp(jnp.sin(x)))  # noqa: E731
    x = (jnp.linspace(0.0, 1.0, 4),)
    assert abs(taylor_test(f, x).slope - 2.0) < 0.2
    check_grads(f, x, reference="taylor")

    @jax.custom_vjp
    def g(x):
        return f(x)

    g.defvjp(lambda x: (f(x), x), lambda x, y_bar: (1.01 * jax.grad(f)(x) * y_bar,))
    assert abs(taylor_test(g, x).slope - 1.0) < 0.2
    with pytest.raises(GradCheckError, match=r"h\^1\.\d+, not h\^2"):
        check_grads(g, x, reference="taylor")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modes": ("sideways",)}, "modes must be"),
        ({"order": 3}, "order must be 1 or 2"),
        ({"reference": "oracle"}, "reference must be"),
    ],
)
def test_bad_options(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_grads(jnp.sin, (jnp.ones(2),), **kwargs)


def test_integer_argument_is_refused() -> None:
    with pytest.raises(ValueError, match=r"dtype int32; check_grads differentiates real"):
        check_grads(jnp.sin, (jnp.arange(3),))


def test_pytest_plugin_is_declared_as_an_entry_point() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"diffkit": "diffkit.pytest_plugin"}


def test_pytest_plugin_fixture_marker_and_ini(
    pytester: pytest.Pytester, request: pytest.FixtureRequest
) -> None:
    pytester.makeini("[pytest]\ndiffkit_gradcheck_rtol = 1e-7\ndiffkit_gradcheck_modes = fwd\n")
    pytester.makepyfile(
        """
        import jax, jax.numpy as jnp, pytest

        @jax.custom_jvp
        def f(x):
            return jnp.sin(x)
        f.defjvp(lambda p, t: (f(p[0]), 1.0001 * jnp.cos(p[0]) * t[0]))

        def test_uses_ini_defaults(gradcheck):
            gradcheck(jnp.exp, (jnp.ones(3),))

        def test_catches_wrong_rule(gradcheck):
            with jax.enable_x64(True):
                gradcheck(f, (jnp.ones(3),))

        @pytest.mark.gradcheck(rtol=1e-2)
        def test_marker_loosens(gradcheck):
            with jax.enable_x64(True):
                gradcheck(f, (jnp.ones(3),))
        """
    )
    # installed (pip install -e .) the entry point loads it; from a bare checkout, load it by name
    installed = request.config.pluginmanager.has_plugin("diffkit")
    result = pytester.runpytest("-q", *([] if installed else ["-p", "diffkit.pytest_plugin"]))
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_catches_wrong_rule*", "*GradCheckError*J v (forward*"])


def test_custom_vjp_is_checked_by_default_and_fifty_percent_on_one_element_fails() -> None:
    """No modes given: forward mode is unavailable for a custom_vjp function, so its VJP is
    checked (the dot-product test against finite differences) and the message says so."""
    x = jnp.linspace(-2.0, 2.0, 1000, dtype=jnp.float32)
    check_grads(scaled_sin(None, 1.0), (x,))  # no TypeError from jax.jvp
    with pytest.raises(GradCheckError, match=r"dot-product test.*forward mode is unavailable"):
        check_grads(scaled_sin(417, 1.5), (x,))


def test_failure_message_names_the_doctors_culprit_line() -> None:
    x = jnp.linspace(-2.0, 2.0, 1000, dtype=jnp.float32)
    with pytest.raises(GradCheckError) as info:
        check_grads(scaled_sin(417, 1.5), (x,))
    assert "gradient doctor, first culprit: [custom-rule]" in str(info.value)
    assert "test_testing.py:" in info.value.report.first.site  # the rule's primal, line of f


def test_pytest_plugin_shows_the_doctor_in_the_failure_report(
    pytester: pytest.Pytester, request: pytest.FixtureRequest
) -> None:
    pytester.makepyfile(
        """
        import jax, jax.numpy as jnp

        @jax.custom_vjp
        def f(x):
            return jnp.sin(x)
        f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (2.0 * jnp.cos(x) * g,))

        def test_wrong_rule(gradcheck):
            gradcheck(f, (jnp.linspace(0.0, 1.0, 5),))
        """
    )
    installed = request.config.pluginmanager.has_plugin("diffkit")
    result = pytester.runpytest("-q", *([] if installed else ["-p", "diffkit.pytest_plugin"]))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gradient doctor*", "*first culprit:*", "*[[]custom-rule[]]*"])
