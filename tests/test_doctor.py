"""The gradient doctor names the equation and the user's line that broke a gradient
(tests/doctor_corpus.py: 31 broken gradients), raises no false alarm on correct code (every
harness problem family, the real-code cases of tests/test_real_code.py, float32 and float64),
and its gradient is JAX's own (checked against jax.grad)."""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from doctor_corpus import CASES
from test_real_code import CASES as REAL
from test_real_code import case_id

import diffkit as dk
from diffkit.diagnosis import doctor
from diffkit.testing import GradCheckError, check_grads


def _culprit_lines(build) -> set[int]:
    lines, start = inspect.getsourcelines(build)
    return {start + k for k, line in enumerate(lines) if "# culprit" in line}


@pytest.mark.slow  # 31 functions, each walked twice: 25-115 s on 2 loaded cores
def test_corpus_culprits_are_named_with_the_users_line() -> None:
    """At least 90 % of the corpus: the first culprit is the expected primitive, of the
    expected kind, at a line marked ``# culprit`` in tests/doctor_corpus.py."""
    assert len(CASES) >= 25
    wrong = []
    for name, case in CASES.items():
        with jax.enable_x64(True):
            f, args = case.build()
            report = doctor(f, *args)
        first = report.first
        assert not report.ok and report.symptoms, name
        site = re.match(r"doctor_corpus\.py:(\d+) ", first.site) if first else None
        if (
            first is None
            or first.primitive.split("[")[0] != case.primitive
            or first.kind != case.kind
            or site is None
            or int(site.group(1)) not in _culprit_lines(case.build)
        ):
            wrong.append((name, first and (first.kind, first.primitive, first.site)))
    assert len(wrong) <= 0.1 * len(CASES), wrong


def test_report_text_names_equation_line_reason_and_fix() -> None:
    with jax.enable_x64(True):
        f, args = CASES["where_sqrt"].build()
        report = doctor(f, *args)
    text = str(report)
    assert "first culprit" in text and "[masked-nan]" in text and "(sqrt)" in text
    assert "doctor_corpus.py:" in text and "double where" in text
    assert report.culprits[0] is report.first


def test_float64_value_is_shown_beside_the_overflowed_one() -> None:
    with jax.enable_x64(True):
        f, args = CASES["float16_norm_overflow"].build()
        first = doctor(f, *args).first
    assert first.kind == "overflow"
    assert "in float64 it is 9e+04" in first.what  # 300**2, above float16's 65504


def test_inf_minus_inf_in_the_cotangents_is_found(x64: None) -> None:
    """sqrt(z) - sqrt(z) at z = 0: the two cotangents of z are +inf and -inf."""

    def f(x):
        z = x - 1.0
        return jnp.sum(jnp.sqrt(z) - jnp.sqrt(z))

    report = doctor(f, jnp.array([1.0, 2.0]))
    assert report.first.kind == "infinite-derivative" and report.first.primitive == "sqrt"
    meet = [c for c in report.culprits if c.kind == "inf-minus-inf"]
    assert [c.primitive for c in meet] == ["sub"]  # z's cotangents, +inf and -inf, meet


def test_healthy_function_is_ok_and_its_gradient_is_jaxs(x64: None) -> None:
    from diffkit.diagnosis.walk import flatten, reference_run

    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ w) ** 2) + jnp.sum(jax.nn.relu(w))

    w, x = jnp.array([[0.5, -1.0], [2.0, 0.3]]), jnp.array([[1.0, 2.0], [-0.5, 0.1]])
    report = doctor(loss, w, x)
    assert report.ok and not report.culprits and "healthy" in str(report)
    closed = jax.make_jaxpr(loss)(w, x)
    run = reference_run(flatten(closed, 1), closed, [True, False], None, [w, x], [1.0], 0.0)
    np.testing.assert_allclose(run["grads"][0], jax.grad(loss)(w, x), rtol=1e-12)


def test_tape_rules_can_be_diagnosed_too(x64: None) -> None:
    with jax.enable_x64(True):
        f, args = CASES["custom_vjp_wrong_transpose"].build()
        assert doctor(f, *args, method="tape").first.kind == "custom-rule"
        assert doctor(jnp.sin, jnp.ones(2), method="tape").ok


def test_kink_whose_cotangent_is_zero_is_no_alarm(x64: None) -> None:
    """relu at 0 times x: relu's kink meets a zero cotangent; the function is smooth."""
    report = doctor(lambda x: jnp.sum(jax.nn.relu(x) * x), jnp.array([0.0, 1.0]))
    assert report.ok and not report.culprits and not report.notes
    kinked = doctor(lambda x: jnp.sum(jax.nn.relu(x)), jnp.array([0.0, 1.0]))
    assert kinked.first.kind == "kink"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: doctor(jnp.sin), "no arguments"),
        (lambda: doctor(jnp.sin, jnp.arange(3)), "real floating-point"),
        (lambda: doctor(jnp.sin, jnp.ones(2), argnums=3), "argnums=3"),
        (lambda: doctor(3.0, jnp.ones(2)), "must be a function"),
        (lambda: doctor(lambda x: x > 0, jnp.ones(2)), "floating-point arrays"),
    ],
)
def test_bad_input_is_one_line(call, message: str) -> None:
    with pytest.raises(dk.DiffkitError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_check_grads_failure_carries_the_first_culprit(x64: None) -> None:
    f, args = CASES["custom_jvp_fifty_percent_on_one_element"].build()
    with pytest.raises(GradCheckError, match=r"gradient doctor, first culprit: \[custom-rule\]"):
        check_grads(f, args)
    try:
        check_grads(f, args)
    except GradCheckError as error:
        assert error.report is not None and error.report.first.primitive.startswith("custom_jvp")


# ------------------------------------------------------------------ no false alarm

FAMILIES = [name for name in dk.harness.problems() if name != "user"]


# Both dtypes in one test: the float32 walk's float64 reference compiles the kernels the
# float64 walk then reuses (the walk is eager: compiling each primitive is most of its cost).
DTYPES = ("float32", "float64")


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_no_false_alarm_on_a_harness_family(name: str) -> None:
    """Every harness family at its smallest size is healthy, in float32 and float64."""
    for dtype_name in DTYPES:
        inst = dk.harness.get_problem(name).build(None, dtype_name)
        with jax.enable_x64(dtype_name == "float64"):
            report = doctor(inst.fun, *inst.args)
        assert report.ok, f"{dtype_name}: {report}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REAL), ids=case_id)
def test_no_false_alarm_on_real_code(name: str) -> None:
    """The real-code cases of tests/test_real_code.py (flax, optax, numpyro, jax.scipy), in
    float32 and float64."""
    for dtype_name in DTYPES:
        with jax.enable_x64(dtype_name == "float64"):
            f, x = REAL[name].build(jnp.dtype(dtype_name))
            report = doctor(f, x)
        assert report.ok, f"{dtype_name}: {report}"


def test_command_line_names_the_culprit_and_exits_1(tmp_path, capsys) -> None:
    from diffkit.cli import main

    model = tmp_path / "mymodel.py"
    model.write_text(
        "import jax.numpy as jnp\n\n\ndef loss(x):\n"
        "    return jnp.sum(jnp.where(x > 0, jnp.sqrt(x), 0.0))\n"
    )
    assert main(["doctor", f"{model}:loss", "--args", "n=6"]) == 1
    out = capsys.readouterr().out
    assert "[masked-nan] equation" in out and "mymodel.py:5 (loss)" in out
    assert main(["doctor", "rosenbrock", "--args", "n=4", "--dtype", "float64"]) == 0
    assert "healthy" in capsys.readouterr().out
    assert main(["doctor", "rosenbrock", "--args", "m=4"]) == 2
    assert "--args takes n=<size>" in capsys.readouterr().err
