"""Issue 17, "nothing lost, nothing silently wrong": every problem family through the harness
in both dtypes for every method; results files never lose a finished case (re-runs, --fresh,
concurrent runs, kill -9); no orphaned worker; the memory limit; one-line errors for bad
input; readable plots."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _proc import alive, children

import diffkit as dk
from diffkit import pytest_plugin
from diffkit.cli import main, parse_memory
from diffkit.harness.measure import run_case, tolerance
from diffkit.harness.results import read_records
from diffkit.harness.sweeps import _Lock, sweep
from diffkit.harness.worker import default_memory_limit
from diffkit.testing import GradCheckError, check_grads

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = [p for p in dk.harness.problems() if p != "user"]


def one_line_error(code: int, err: str, *needles: str, after_progress: bool = False) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    lines = lines[-1:] if after_progress else lines  # the header and progress bar come first
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("diffkit: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


# ------------------------------------------------------------------ every family


#: The unit tier sweeps a sample of four families (a scalar reduction, the essay's network,
#: a Jacobian with many outputs, an ODE solved by a loop); the others are marked slow and
#: swept by the full suite. Measured per family and dtype on a lightly loaded 2-core
#: machine, the sample takes 0.2-0.7 s; the rest up to 9 s: AD, fd and the forward modes over
#: 1312 (rnn: 3 s) or 1056 (deep-mlp, resnet at size 1) parameters, Jacobians (ht: 3 s, ba),
#: gmm's 1000 points; symbolic, building and compiling the expressions (lstm, kmeans, llsq:
#: 5-10 s), or running into its time budget (particle: 10 s) or size budget (deep-mlp,
#: resnet, rnn: 2 s).
UNIT_SAMPLE = {"lse", "tiny-net", "wide-output", "ode"}


def _family_params() -> list[Any]:
    return [
        pytest.param(family, dtype, marks=() if family in UNIT_SAMPLE else pytest.mark.slow)
        for family in FAMILIES
        for dtype in ("float32", "float64")
    ]


#: The float64 references (jax.grad / jax.jacrev) of each family and dtype, computed once per
#: process and shared by its AD and symbolic tests.
_REFERENCES: dict[tuple[str, str], dict[str, Any]] = {}


def _smallest(prob: Any) -> int:
    """The family's smallest size; a family whose smallest size has thousands of parameters
    (the depth problems: n = 8448 at L = 8, seconds of forward-mode and fd gradients per
    dtype) at size 1 instead (n = 1056), as ``steps`` below."""
    return prob.sizes[0] if prob.build(prob.sizes[0]).n <= 2_000 else 1


def _check_family(family: str, dtype: str, methods: list[str]) -> None:
    """Smallest size (:func:`_smallest`), in this process: ok and within the harness's
    tolerance of the float64 reference (jax.grad / jax.jacrev), or for symbolic a clear
    refusal: no rule, or (gmm, whose 1000 data points make a large expression) its size
    budget, kept small here so that the refusal takes seconds."""
    prob = dk.harness.get_problem(family)
    size = _smallest(prob)
    shared = _REFERENCES.setdefault((family, dtype), {})
    for method in methods:
        options = {"size_budget": 20_000, "time_budget": 10.0} if method == "symbolic" else {}
        rec = run_case(
            prob, size, method, dtype, min_time=0.001, reference_cache=shared,
            method_options=options,
        )  # fmt: skip
        what = f"{family} {dtype} {method}: {rec['outcome']} {rec['message']}"
        if rec["outcome"] == "unsupported" and method == "symbolic":
            assert "symbolic: " in rec["message"] and " use " in rec["message"], what
            continue
        if rec["outcome"] == "timeout" and method == "symbolic":  # a budget, named
            assert re.search(
                r"over size_budget=20,000|ran past time_budget=10 s", rec["message"]
            ), what
            continue
        assert rec["outcome"] == "ok", what
        assert rec["reference_crosscheck"] < 1e-8, what  # the reference agrees with jax.jvp
        if rec["accurate"]:
            continue
        # The one exception: central differences in float32 on a function of large magnitude
        # (gmm's log-likelihood, about -1.8e4) cannot beat the rounding floor
        # eps * |f| / h, h = eps^(1/3): assert that this floor explains the error.
        assert (method, dtype) == ("fd", "float32"), what
        inst = prob.build(size, dtype)
        eps = float(np.finfo(np.float32).eps)
        floor = eps ** (2 / 3) * abs(float(inst.fun(*inst.args)))
        assert tolerance("numerical", dtype) < floor and rec["rho_max"] <= floor, what


@pytest.mark.parametrize(("family", "dtype"), _family_params())
def test_every_family_runs_every_method_accurately(family: str, dtype: str) -> None:
    """Every deterministic method but symbolic (estimators are judged by bias:
    tests/test_stochastic.py)."""
    methods = [m for m in dk.names() if dk.get(m).mode != "stochastic" and m != "symbolic"]
    _check_family(family, dtype, methods)


@pytest.mark.parametrize(("family", "dtype"), _family_params())
def test_every_family_runs_symbolic_or_refuses_clearly(family: str, dtype: str) -> None:
    _check_family(family, dtype, ["symbolic"])


# ------------------------------------------------------------ results and workers

FAKES = """
import time
from diffkit import Differentiator


class Slow(Differentiator):
    mode, native = "reverse", frozenset({"vjp"})

    def _vjp(self, fun, primals):
        time.sleep(600)  # hangs while tracing
"""


@pytest.mark.slow  # two command-line runs and a worker killed with its parent: ~4 s
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_results_are_never_lost_and_the_worker_dies_with_its_parent(tmp_path, capsys) -> None:
    (tmp_path / "slow_fakes.py").write_text(textwrap.dedent(FAKES))
    out = tmp_path / "res"
    results = out / "results.jsonl"
    argv = ["compare", "--problem", "lse", "--sizes", "3", "--min-time", "0.01", "--out"]
    argv += [str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-m", "diffkit", *argv, "--methods", "jax-rev,slow_fakes:Slow"],
        cwd=tmp_path,  # slow_fakes resolves from the working directory
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (results.exists() and results.read_text().strip()):
            time.sleep(0.1)
        kept = results.read_text()
        assert json.loads(kept)["outcome"] == "ok" and json.loads(kept)["run"]
        workers = children(first.pid)
        assert len(workers) == 1 and alive(workers[0])  # now measuring Slow

        # a second run into the same folder while the first runs: refused in one line
        code, err = cli([*argv, "--methods", "jax-rev", "--resume"], capsys)
        one_line_error(code, err, "another run", after_progress=True)
        code, err = cli([*argv, "--methods", "jax-rev"], capsys)  # no --resume: refused
        one_line_error(code, err, "--resume", "--fresh")
        assert results.read_text() == kept

        first.kill()  # kill -9 of the parent during a case
        first.wait(timeout=10)
        # that it dies, not how fast: a deadline, not a timing (a loaded machine takes
        # seconds to tear down a JAX process; a worker left running never ends)
        end = time.time() + 60.0
        while time.time() < end and alive(workers[0]):
            time.sleep(0.05)
        assert not alive(workers[0]), "the worker outlived its parent (60 s)"
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()  # type: ignore[union-attr]
        for pid in children(first.pid):
            os.kill(pid, signal.SIGKILL)

    # --resume keeps the finished case; --fresh moves the file aside, never deletes it
    assert main([*argv, "--methods", "jax-rev", "--resume", "--format", "csv"]) == 0
    assert results.read_text() == kept
    assert main([*argv, "--methods", "jax-rev", "--fresh", "--format", "csv"]) == 0
    capsys.readouterr()
    aside = [p for p in out.glob("results.*.jsonl")]
    assert len(aside) == 1 and aside[0].read_text() == kept
    new = read_records(results)
    assert len(new) == 1 and new[0]["run"] != json.loads(kept)["run"]


def test_a_locked_results_file_refuses_a_second_sweep(tmp_path) -> None:
    out = tmp_path / "r.jsonl"
    lock = _Lock(out)
    try:
        with pytest.raises(dk.DiffkitError, match="being written by another run"):
            sweep("lse", [3], ["jax-rev"], out=out, isolate=False, min_time=0.01)
    finally:
        lock.release()
    assert len(sweep("lse", [3], ["jax-rev"], out=out, isolate=False, min_time=0.01)) == 1


def _stored(path: Path, **change: Any) -> None:
    """Append the last record of ``path`` changed (a stand-in for an earlier run's outcome;
    the last record of a case wins)."""
    rec = read_records(path)[-1]
    with open(path, "a") as f:
        f.write(json.dumps({**rec, **change}) + "\n")


def test_resume_retries_what_more_time_or_memory_can_change(tmp_path) -> None:
    out = tmp_path / "r.jsonl"
    kw: dict[str, Any] = dict(out=out, isolate=False, min_time=0.01, accuracy=False)
    first = sweep("lse", [3], ["jax-rev"], budget=5.0, memory_limit=2**30, **kw)[0]
    assert first["budget"] == 5.0 and first["memory_limit"] == 2**30 and first["run"]

    def again(**options: Any) -> dict[str, Any]:
        return sweep("lse", [3], ["jax-rev"], **{**kw, **options})[0]

    assert again(budget=50.0)["run"] == first["run"]  # ok: kept whatever the budget
    _stored(out, outcome="timeout", message="exceeded the budget of 5 s")
    assert again(budget=5.0)["outcome"] == "timeout"  # same budget: kept
    assert again(budget=4.0, memory_limit=None)["outcome"] == "timeout"  # memory: no matter
    assert again(budget=6.0)["outcome"] == "ok"  # more time: retried
    _stored(out, outcome="out-of-memory", memory_limit=2**30, budget=5.0)
    assert again(memory_limit=2**30)["outcome"] == "out-of-memory"
    assert again(memory_limit=None)["outcome"] == "ok"  # no limit: retried
    _stored(out, outcome="skipped", message="skipped: timeout at size 2", budget=5.0)
    assert again(budget=5.0)["outcome"] == "skipped"
    assert again(budget=5.0, retry_failed=True)["outcome"] == "ok"
    _stored(out, outcome="error", outcome_by="harness", budget=5.0, memory_limit=2**30)
    assert again(budget=5.0, memory_limit=2**30)["outcome"] == "error"  # a crash, as it was
    assert again(budget=5.0, memory_limit=2**31)["outcome"] == "ok"
    _stored(out, outcome="error", budget=5.0)  # the method's own error: never retried
    assert again(budget=500.0)["outcome"] == "error"
    lines = out.read_text().splitlines()  # 1 first run, 5 stand-ins, 4 retries: appended
    assert len(lines) == 10 and len({json.loads(line)["key"] for line in lines}) == 1


def test_a_foreign_line_stops_a_resume_before_anything_is_measured(tmp_path) -> None:
    out = tmp_path / "r.jsonl"
    sweep("lse", [3], ["jax-rev"], out=out, isolate=False, min_time=0.01, accuracy=False)
    text = out.read_text() + '{"name": "not ours"}\n'
    out.write_text(text)
    with pytest.raises(dk.DiffkitError, match=r"r\.jsonl:2: not a diffkit record \(no 'key'\)"):
        sweep("lse", [3, 4], ["jax-rev"], out=out, isolate=False, min_time=0.01)
    assert out.read_text() == text  # nothing measured, nothing appended
    with pytest.raises(dk.DiffkitError, match="not a diffkit record"):
        dk.harness.load(out)


# ------------------------------------------------------------------------ memory


def test_memory_limit_parsing_and_default() -> None:
    assert parse_memory("300M") == 300 * 2**20 and parse_memory("2G") == 2 * 2**30
    assert parse_memory("1.5GiB") == 1.5 * 2**30 and parse_memory("4096") == 4096.0
    limit = default_memory_limit()
    available = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemAvailable:")
    )
    assert limit is not None and 0.5 * available < limit < available  # head-room left


def test_a_case_estimated_over_the_limit_is_not_run() -> None:
    rec = run_case("lse", 100_000, "jax-rev", min_time=0.01, memory_limit=2**20)
    assert rec["outcome"] == "out-of-memory"
    assert rec["message"].startswith("out-of-memory (estimated)")
    assert rec["estimated_bytes"] > 2**20 and "compile_s" not in rec  # never compiled
    rec = run_case("lse", 100_000, "jax-rev", min_time=0.01, memory_limit=2**30)
    assert rec["outcome"] == "ok" and rec["estimated_bytes"] < 2**30


@pytest.mark.slow  # an isolated worker per case, one of them out of memory: ~3 s on 2 cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA semantics")
def test_the_worker_enforces_a_small_memory_limit_itself(tmp_path) -> None:
    """300 MB: mlp at n = 2e7 needs ~230 MB more for its inputs alone; the worker's own
    allocation fails (not the kernel's killer, not the parent's watchdog), a small size
    still runs under the same limit, and the sweep goes on."""
    res = sweep(
        "mlp", [10, 20_000_000], ["jax-rev"], memory_limit=300e6, out=tmp_path / "r.jsonl",
        min_time=0.01, budget=30.0,
    )  # fmt: skip
    small, big = sorted(res, key=lambda r: r["size"])
    assert small["outcome"] == "ok" and small["accurate"]
    assert big["outcome"] == "out-of-memory" and "outcome_by" not in big, big["message"]
    assert "MemoryError" in big["message"] or "RESOURCE_EXHAUSTED" in big["message"]
    assert big["memory_limit"] == 300e6


# --------------------------------------------------------------- one-line errors


def test_bad_harness_arguments_fail_in_one_line(tmp_path) -> None:
    cases = [
        (dict(sizes="10,100"), "sizes must be a list of ints"),
        (dict(budget=0), "budget must be a positive number"),
        (dict(budget=-5), "budget must be a positive number"),
        (dict(memory_limit=-5), "memory_limit must be a positive number"),
        (dict(out=tmp_path), "is a directory"),
    ]
    for options, needle in cases:
        kwargs: dict[str, Any] = dict(sizes=[3], out=tmp_path / "x.jsonl", isolate=False)
        with pytest.raises(dk.DiffkitError, match=needle) as info:
            sweep("lse", methods=["jax-rev"], **{**kwargs, **options})
        assert "\n" not in str(info.value)
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_inputs_to_the_api_fail_in_one_line(x64) -> None:
    fd = dk.get("fd")
    checks = [
        (lambda: fd.grad(jnp.sum)(jnp.zeros(0)), "no entries"),
        (lambda: fd.grad(lambda d: 0.0)({}), "no entries"),
        (lambda: fd.grad(jnp.sum)(jnp.array([1.0, jnp.inf])), "coordinate 1 is inf"),
        (lambda: dk.get("jax-rev").grad(jnp.sum)(None), "argument 0 is None"),
        (lambda: dk.get("tape").grad(42), "expected a function"),
        (lambda: dk.get("dual").jvp(jnp.sin, (jnp.array(1),), (jnp.array(1.0),)), "int"),
        (lambda: dk.get("jax-fwd").jvp(jnp.sin, (jnp.array(1),), (jnp.array(1.0),)), "int"),
    ]
    for call, needle in checks:
        with pytest.raises(dk.DiffkitError, match=needle) as info:
            call()
        assert "\n" not in str(info.value)
    # fd is still right on finite input (checked against the analytic 2x)
    x = jnp.array([0.5, -1.0])
    assert np.allclose(fd.grad(lambda v: jnp.sum(v**2))(x), 2 * x, rtol=1e-7)


def test_bad_command_lines_fail_in_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "afile").write_text("")
    cases = [
        (["compare", "--budget", "0"], "--budget", "positive"),
        (["compare", "--budget", "-5"], "--budget", "positive"),
        (["compare", "--memory-limit", "lots"], "--memory-limit", "2G"),
        (["compare", "--problem", "user"], "--problem user needs your function"),
        (["compare", "nowhere.py:f"], "file not found"),
        (["compare", "--problem", "no_such_module:f"], "module 'no_such_module' not found"),
        (["compare", "--out", "afile"], "--out", "is a file"),
        (["compare", "--resume", "--fresh"], "give one"),
    ]
    for argv, *needles in cases:
        code, err = cli(argv, capsys)
        one_line_error(code, err, *needles)


@pytest.mark.slow  # ~1.5 s on 2 cores
def test_a_function_in_the_working_directory_as_module_colon_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_cubes.py").write_text("def f(x):\n    return (x**3).sum()\n")
    argv = ["compare", "--problem", "my_cubes:f", "--sizes", "3", "--methods", "jax-rev"]
    assert main([*argv, "--min-time", "0.01", "--format", "json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["outcome"] == "ok" and rec["accurate"] and rec["n"] == 3


@pytest.mark.slow  # the command in a subprocess: ~2-3 s on 2 cores
def test_backend_without_the_device_is_one_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "diffkit", "list", "--backend", "tpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    if done.returncode == 0:  # a machine with a TPU
        return
    one_line_error(done.returncode, done.stderr, "--backend tpu", "--backend cpu")


def _fixture(ini: dict[str, str], **marker: Any) -> Any:
    request = SimpleNamespace(
        config=SimpleNamespace(getini=lambda name: ini.get(name)),
        node=SimpleNamespace(
            iter_markers=lambda name: [SimpleNamespace(args=(), kwargs=marker)] if marker else []
        ),
    )
    options = pytest_plugin.gradcheck_options(request.config, request.node)
    return functools.partial(check_grads, **options)


def test_bad_gradcheck_options_fail_in_one_line() -> None:
    f, args = (lambda x: jnp.sum(jnp.sin(x))), (jnp.array([0.3, 1.2]),)
    _fixture({}, rtol=1e-5)(f, args)  # a good marker: passes
    for ini, marker, needle in [
        ({"diffkit_gradcheck_rtol": "abc"}, {}, "diffkit_gradcheck_rtol = 'abc'"),
        ({}, {"rtoll": 1e-5}, "unknown option"),
        ({}, {"rtol": "abc"}, "rtol must be a non-negative number"),
        ({}, {"directions": 0}, "directions must be a positive int"),
    ]:
        with pytest.raises(dk.DiffkitError, match=needle) as info:
            _fixture(ini, **marker)(f, args)
        assert "\n" not in str(info.value)
    with pytest.raises(GradCheckError):  # and a wrong derivative is still caught
        wrong = jax.custom_jvp(lambda x: jnp.sum(jnp.sin(x)))
        wrong.defjvp(lambda p, t: (wrong(*p), jnp.sum(2 * t[0])))
        _fixture({}, rtol=1e-5)(wrong, args)


# ------------------------------------------------------------------- steps, plots


def test_steps_with_defaults_exits_0(tmp_path, capsys) -> None:
    assert main(["steps", "--out", str(tmp_path)]) == 0  # lse: the complex step left out
    assert "complex step left out" in capsys.readouterr().err


#: The unit tier runs ``steps`` on two quick families (0.5-1 s each on a lightly loaded
#: 2-core machine; lse's default run is the test above); the full suite on every family. A
#: family of more than 1 000 parameters at its smallest size runs one rule (central) instead of
#: the four defaults: rnn's 1312 took 34-39 s with all four, every rule's path being already
#: run on the small families.
UNIT_STEPS = {"wide-output", "det"}


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=() if f in UNIT_STEPS else pytest.mark.slow) for f in FAMILIES]
)
def test_steps_on_every_problem_exits_0(family: str, tmp_path, capsys) -> None:
    """Smallest size; a family whose smallest size has thousands of parameters (the depth
    problems: n = 8448 at L = 8, minutes of fd gradients) runs at size 1 instead."""
    prob = dk.harness.get_problem(family)
    size = _smallest(prob)
    argv = ["steps", "--problem", family, "--size", str(size), "--out", str(tmp_path)]
    if prob.build(size, "float32").n > 1_000:
        argv += ["--rules", "central"]
    assert main(argv) == 0, family
    assert (tmp_path / f"steps-{family}-float64.png").exists()
    capsys.readouterr()


def _rec(method: str, size: int, n: int, m: int, t: float) -> dict[str, Any]:
    return {
        "problem": "p", "dtype": "float32", "method": method, "size": size, "n": n, "m": m,
        "outcome": "ok", "time_median": t, "primal_median": 1e-6, "ratio": t / 1e-6,
        "rho_max": 1e-7, "passes": 1, "meta": {"backend": "cpu"}, "key": f"{method}{size}",
    }  # fmt: skip


def test_plots_are_readable_with_one_point_per_method() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffkit.harness.plots import figure

    methods = ["dual", "fd", "jax-fwd", "jax-rev", "tape"]
    one = [_rec(m, 9, 9, 1, 2e-6 * (1 + 0.01 * i)) for i, m in enumerate(methods)]
    fig = figure(one, "p", "float32", {}, plt)
    fig.canvas.draw()
    for ax in fig.axes:  # a row per method, named; numbers on the value axis
        assert [t.get_text() for t in ax.get_yticklabels()] == methods
        assert sum(bool(t.get_text()) for t in ax.get_xticklabels()) >= 2
    plt.close(fig)

    wide = [_rec(m, s, 4, s, 1e-6 * s) for m in methods[:2] for s in (16, 64)]
    fig = figure(wide, "p", "float32", {}, plt)
    fig.canvas.draw()
    assert all(ax.get_xlabel() == "m (outputs)" for ax in fig.axes)
    assert all(sum(bool(t.get_text()) for t in ax.get_yticklabels()) >= 2 for ax in fig.axes)
    markers = {line.get_marker() for line in fig.axes[1].get_lines()}
    assert len(markers) == 2  # each method its own marker
    plt.close(fig)
