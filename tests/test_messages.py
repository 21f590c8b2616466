"""One test per poor message of issue 31: each is one line naming the bad value and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit._core.errors import (
    DiffkitError,
    GradCheckError,
    InputTypeError,
    UnsupportedPrimitiveError,
)
from diffkit.cli import main

pytest_plugins = ["pytester"]


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The command's one error line (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_negative_memory_limit_is_named(capsys) -> None:
    err = _cli_error(capsys, ["compare", "--memory-limit", "-1G"])
    assert "'-1G' is not positive" in err and "2G" in err
    assert "expected one argument" not in err


@pytest.mark.parametrize(
    "argv, flag",
    [(["memory", "--depths", "0"], "--depths"), (["compare", "--devices", "0"], "--devices")],
)
def test_zero_count_blames_its_own_flag(capsys, argv, flag) -> None:
    err = _cli_error(capsys, argv)
    assert f"argument {flag}: 0 is not positive" in err and "--sizes" not in err


def test_unknown_memory_method_fails_before_measuring() -> None:
    with pytest.raises(DiffkitError, match="unknown differentiator 'nope'; choose one of"):
        dk.harness.memory_sweep("rnn", [2, 4], ["tape", "nope"], min_time=0.01)


def test_doctor_unknown_problem_names_close_ones(capsys) -> None:
    err = _cli_error(capsys, ["doctor", "rosenbrok"])
    assert "unknown problem 'rosenbrok'; did you mean rosenbrock" in err  # (, rosenbrock-ext)
    assert "must look like" not in err


def test_doctor_on_a_vector_output_says_what_it_checked() -> None:
    text = str(dk.doctor(lambda x: 2.0 * x, jnp.ones(3)))
    assert text.count("\n") == 0
    assert "f returns an array of shape (3,), not a scalar loss" in text
    assert "the gradient is healthy" not in text and "doctor(lambda x: f(x)[i], x)" in text


def _branchy(x):
    if x.sum() > 0:  # the line the error must name
        return x.sum()
    return -x.sum()


@pytest.mark.parametrize("method", ["tape", "jax-rev"])
def test_python_if_on_a_traced_value_names_the_users_line(method) -> None:
    line = _branchy.__code__.co_firstlineno + 1
    with pytest.raises(DiffkitError) as info:
        dk.get(method).grad(_branchy)(jnp.ones(2))
    text = str(info.value)
    assert f"test_messages.py:{line} (_branchy)" in text and "jaxpr.py" not in text
    assert "jnp.where or jax.lax.cond" in text and "\n" not in text


def _host_sin(x, vmap_method=None):
    shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return jax.pure_callback(np.sin, shape, x, vmap_method=vmap_method).sum()


def test_fd_refuses_an_unbatchable_callback_in_one_line() -> None:
    with pytest.raises(UnsupportedPrimitiveError) as info:
        dk.get("fd").grad(_host_sin)(jnp.ones(3))
    text = str(info.value)
    assert "fd: cannot evaluate 'pure_callback'" in text and "test_messages.py:" in text
    assert "vmap_method='sequential'" in text and "\n" not in text
    g = dk.get("fd").grad(lambda x: _host_sin(x, "sequential"))(jnp.ones(3))  # the fix works
    np.testing.assert_allclose(g, np.cos(np.ones(3)), rtol=1e-3)


def test_holomorphic_grad_is_supported_like_jax() -> None:
    f = lambda z: jnp.sum(jnp.sin(z) * z)  # noqa: E731
    z = jnp.array([1 + 1j, 0.5 - 2j], jnp.complex64)
    want = jax.grad(f, holomorphic=True)(z)
    for method in ("tape", "dual", "jax-rev"):
        np.testing.assert_allclose(dk.get(method).grad(f, holomorphic=True)(z), want, rtol=1e-5)
    with pytest.raises(InputTypeError, match="holomorphic=True needs complex inputs"):
        dk.get("tape").grad(jnp.sum, holomorphic=True)(jnp.ones(2))


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_explain_refuses_a_non_finite_point(capsys, value) -> None:
    err = _cli_error(capsys, ["explain", "m.py:f", "--at", f"{value},1"])
    assert f"argument --at: '{value}' is not finite" in err and "--at 0.5,2" in err


# ------------------------------------------------------- gradient checks (issues 31, 32)

WRONG_RULE = """
import jax
import jax.numpy as jnp


@jax.custom_vjp
def square(x):
    return x * x


def square_fwd(x):
    return x * x, x


def square_bwd(x, g):
    return (x * g,)  # the wrong line: forgets the factor 2


square.defvjp(square_fwd, square_bwd)


def test_square(gradcheck):
    gradcheck(lambda x: jnp.sum(square(x)), (jnp.arange(1.0, 4.0),))
"""


def test_gradcheck_failure_report_is_short_and_names_the_wrong_bwd(
    pytester: pytest.Pytester, request: pytest.FixtureRequest
) -> None:
    source = pytester.makepyfile(test_wrong_rule=WRONG_RULE).read_text().splitlines()
    installed = request.config.pluginmanager.has_plugin("diffkit")
    result = pytester.runpytest("-q", *([] if installed else ["-p", "diffkit.pytest_plugin"]))
    result.assert_outcomes(failed=1)
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "FAILURES" in line)
    end = next(i for i, line in enumerate(lines) if "short test summary" in line)
    report = lines[start:end]
    assert len(report) <= 25, "\n".join(report)
    bwd_line = source.index("def square_bwd(x, g):") + 1
    assert any(f"its bwd at test_wrong_rule.py:{bwd_line} (square_bwd)" in line for line in report)
    assert not any("def check_grads(" in line for line in report)  # not check_grads' source


@jax.custom_vjp
def _mean_square(w):
    return jnp.mean(w**2)


def _mean_square_fwd(w):
    return _mean_square(w), w


def _mean_square_bwd(w, g):
    return (2.0 * w * g,)  # forgets to divide by n


_mean_square.defvjp(_mean_square_fwd, _mean_square_bwd)


def test_check_grads_with_a_mesh_still_checks_the_derivative() -> None:
    from diffkit.testing import check_grads

    with pytest.raises(GradCheckError) as info:
        check_grads(_mean_square, (jnp.linspace(0.5, 1.5, 4),), mesh=1)
    line = _mean_square_bwd.__code__.co_firstlineno
    assert f"its bwd at test_messages.py:{line} (_mean_square_bwd)" in str(info.value)
    assert info.value.report.first.kind == "custom-rule"


# ------------------------------------------------------------------------ symbolic


def test_symbolic_computes_large_coefficients_in_the_dtypes_range() -> None:
    """logistic-map at 16 steps holds 4**16 = 4294967296, beyond int32: once an
    OverflowError from JAX's argument parsing; now a float literal, as JAX's arithmetic."""
    inst = dk.harness.get_problem("logistic-map").build(16, "float32")
    got = dk.get("symbolic").grad(inst.fun)(*inst.args)
    want = jax.grad(inst.fun)(*inst.args)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-2)


def test_symbolic_alarm_rings_again_when_one_is_lost() -> None:
    import time

    from diffkit.symbolic.differentiator import BudgetExceeded, _Alarm, _Budget

    budget = _Budget(0.05, 10**9, advice="use backend='symengine', ")
    lost, start = [], time.perf_counter()
    with pytest.raises(BudgetExceeded) as info:
        with budget.stage("cse", "operations"):
            while time.perf_counter() - start < 5.0:  # a stage that never checks the budget
                try:
                    time.sleep(0.001)
                except _Alarm:  # dropped, as inside a garbage-collector callback
                    if lost:
                        raise
                    lost.append(time.perf_counter())
    assert lost and time.perf_counter() - start < 1.0
    text = str(info.value)
    assert "'cse' stage ran past time_budget=0.05 s" in text and "cse=True" not in text


def test_explain_page_refuses_a_non_finite_point() -> None:
    from diffkit.html import explain

    with pytest.raises(DiffkitError, match=r"explain: argument 0 is nan; .* give finite numbers"):
        explain(lambda w, b: w * b, float("nan"), 1.0, methods=False)


def test_memory_study_prints_progress_per_case(tmp_path, capsys) -> None:
    argv = ["memory", "--depths", "2,3", "--methods", "jax-rev,tape", "--min-time", "0.01"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "[1/4] L=2 jax-rev: ok" in err and "[4/4] L=3 tape: ok" in err
    assert "Explicitly requested dtype float64" not in err  # no raw JAX warnings


def test_a_target_given_too_few_input_shapes_says_how_many_it_takes(tmp_path) -> None:
    from diffkit.harness.families import get_problem

    (tmp_path / "two.py").write_text("def loss(x, y):\n    return (x * y).sum()\n")
    problem = get_problem("user", target=f"{tmp_path / 'two.py'}:loss", inputs="n")
    with pytest.raises(dk.DiffkitError) as info:
        problem.build(4)
    message = str(info.value)
    assert "loss(x, y) takes 2 argument(s)" in message and "--input n,n" in message
    assert "\n" not in message
