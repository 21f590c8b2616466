"""The comparison harness: problems against independent NumPy formulas, case records,
outcome handling in isolated workers, resume, and the scaling fit on synthetic timings."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import diffkit as dk
from diffkit.accuracy import rho
from diffkit.harness import Results, get_problem, load, run_case, sweep
from diffkit.harness.results import read_records

# ------------------------------------------------------------------ NumPy references


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_mlp(theta, x, y, depth=2, activation=np.tanh):
    h, start, width = x, 0, None
    n_in = x.shape[1]
    # recover the width from n = (n_in + 1) w + (depth - 1)(w^2 + w) + w + 1
    for w in range(1, 2000):
        if (n_in + 1) * w + (depth - 1) * (w * w + w) + w + 1 == theta.size:
            width = w
            break
    dims = [n_in, *([width] * depth), 1]
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        W = theta[start : start + a * b].reshape(a, b)
        h = h @ W + theta[start + a * b : start + a * b + b]
        h = activation(h) if i < depth else h
        start += a * b + b
    return np.mean((h[:, 0] - y) ** 2)


def np_logistic(l0, steps):
    l, dl = l0[0], 1.0
    for _ in range(steps):
        l, dl = 4 * l * (1 - l), dl * 4 * (1 - 2 * l)
    return l, np.array([dl])


def np_sigmoid_chain(theta, h0, depth):
    w = h0.size
    h = h0
    for k in range(depth):
        layer = theta[k * (w * w + w) : (k + 1) * (w * w + w)]
        h = sigmoid(layer[: w * w].reshape(w, w) @ h + layer[w * w :])
    return h.sum()


def np_rosenbrock(x):
    value = sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(x.size - 1))
    g = np.zeros_like(x)
    for i in range(x.size - 1):
        g[i] += -400 * x[i] * (x[i + 1] - x[i] ** 2) - 2 * (1 - x[i])
        g[i + 1] += 200 * (x[i + 1] - x[i] ** 2)
    return value, g


def np_llsq(x, points):
    t = np.array([-1.0 + 2.0 * i / (points - 1) for i in range(points)])
    P = np.array([[ti**j for j in range(x.size)] for ti in t])
    r = np.sign(t) - P @ x
    return 0.5 * r @ r, -P.T @ r


def np_gmm(alpha, mu, q, l, x, gamma=1.0, wm=0):
    k, d = mu.shape
    N = x.shape[0]
    total = -N * d * 0.5 * math.log(2 * math.pi)
    inner = np.zeros((N, k))
    for j in range(k):
        Q = np.diag(np.exp(q[j]))
        idx = 0
        for c in range(d):  # strictly-lower part, column by column
            for r in range(c + 1, d):
                Q[r, c] = l[j, idx]
                idx += 1
        z = (x - mu[j]) @ Q.T
        inner[:, j] = alpha[j] + q[j].sum() - 0.5 * (z**2).sum(1)
    mx = inner.max(1, keepdims=True)
    total += np.sum(np.log(np.exp(inner - mx).sum(1)) + mx[:, 0])
    total -= N * (np.log(np.exp(alpha - alpha.max()).sum()) + alpha.max())
    dof = d + wm + 1
    lmgamma = d * (d - 1) / 4 * math.log(math.pi) + sum(
        math.lgamma(0.5 * dof + (1 - j) / 2) for j in range(1, d + 1)
    )
    for j in range(k):
        frob = (np.exp(q[j]) ** 2).sum() + (l[j] ** 2).sum()
        total += -(0.5 * gamma**2 * frob - wm * q[j].sum())
        total += dof * d * math.log(gamma / math.sqrt(2)) - lmgamma
    return total


def np_ode(x, steps=10, tf=2.0):
    h = tf / steps
    f = lambda y: x * np.concatenate([[1.0], y[:-1]])  # noqa: E731
    y = np.zeros_like(x)
    for _ in range(steps):
        k1 = f(y)
        k2 = f(y + h / 2 * k1)
        k3 = f(y + h / 2 * k2)
        k4 = f(y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y[-1]


def np_wide(knobs, t):
    i = np.arange(1, knobs.size + 1)
    phase = i * knobs * t[:, None]
    decay = np.exp(-0.1 * knobs**2 * t[:, None])
    y = (np.sin(phase) * decay).sum(1)
    J = np.cos(phase) * i * t[:, None] * decay + np.sin(phase) * decay * (-0.2 * knobs * t[:, None])
    return y, J


def central_diff(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), tree)


# (problem, size, expected n, expected m, numpy value, numpy derivative or None for FD)
def _cases():
    return [
        ("rosenbrock", 7, 7, 1, lambda a: np_rosenbrock(a[0])[0], lambda a: np_rosenbrock(a[0])[1]),
        (
            "lse",
            9,
            9,
            1,
            lambda a: np.log(np.exp(a[0]).sum()),
            lambda a: np.exp(a[0]) / np.exp(a[0]).sum(),
        ),
        (
            "llsq",
            5,
            5,
            1,
            lambda a: np_llsq(a[0], 256)[0],
            lambda a: np_llsq(a[0], 256)[1],
        ),
        (
            "logistic-map",
            6,
            1,
            1,
            lambda a: np_logistic(a[0], 6)[0],
            lambda a: np_logistic(a[0], 6)[1],
        ),
        ("sigmoid-chain", 5, 30, 1, lambda a: np_sigmoid_chain(a[0], a[1], 5), None),
        ("mlp", 100, 99, 1, lambda a: np_mlp(*a), None),
        ("ode", 6, 6, 1, lambda a: np_ode(a[0]), None),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_problem_matches_numpy(case, x64) -> None:
    name, size, n, m, value, derivative = case
    inst = get_problem(name).build(size, "float64")
    assert (inst.n, inst.m, inst.quantity) == (n, m, "grad")
    args = _np(inst.args)
    got_value, grad = jax.jit(jax.value_and_grad(inst.fun))(*inst.args)
    assert rho(got_value, value(args)) <= 1e-12
    if derivative is not None:
        want = derivative(args)
    else:
        want = central_diff(lambda x: value((x, *args[1:])), args[0])
    assert rho(grad, want) <= (1e-12 if derivative is not None else 1e-7)


def test_gmm_matches_numpy(x64) -> None:
    inst = get_problem("gmm", d=3, points=20).build(20, "float64")
    k = 2  # per component: 1 + 2 d + d (d - 1) / 2 = 10
    assert (inst.n, inst.m) == (k * 10, 1)
    p, x = _np(inst.args)
    value, grad = jax.jit(jax.value_and_grad(inst.fun))(*inst.args)
    assert rho(value, np_gmm(p["alpha"], p["mu"], p["q"], p["l"], x)) <= 1e-12
    for leaf in ("alpha", "mu", "q", "l"):

        def f(v, leaf=leaf):
            return np_gmm(**{**p, leaf: v.reshape(p[leaf].shape)}, x=x)

        assert rho(np.ravel(grad[leaf]), central_diff(f, p[leaf].ravel())) <= 1e-6, leaf


def test_wide_output_jacobian(x64) -> None:
    inst = get_problem("wide-output", k=3).build(50, "float64")
    assert (inst.n, inst.m, inst.quantity) == (3, 50, "jacobian")
    y, J = np_wide(*_np(inst.args))
    assert rho(jax.jit(inst.fun)(*inst.args), y) <= 1e-12
    assert rho(jax.jit(jax.jacrev(inst.fun))(*inst.args), J) <= 1e-12


def test_tiny_net_and_user_problem(tmp_path: Path, x64) -> None:
    inst = get_problem("tiny-net").build(None, "float64")
    assert (inst.n, inst.m) == (9, 1) and rho(jax.jit(inst.fun)(*inst.args), 0.46285625) <= 1e-8
    mod = tmp_path / "user_fun.py"
    mod.write_text("import jax.numpy as jnp\ndef f(x, A):\n    return jnp.sum(jnp.tanh(A @ x))\n")
    inst = dk.harness.user_problem(f"{mod}:f", "n,3xn").build(4, "float64")
    assert (inst.n, inst.m) == (4, 1)
    x, A = _np(inst.args)
    want = A.T @ (1 - np.tanh(A @ x) ** 2)
    assert rho(jax.jit(jax.grad(inst.fun))(*inst.args), want) <= 1e-12
    with pytest.raises(dk.DiffkitError, match="input spec"):
        dk.harness.user_problem(f"{mod}:f", "n,3by4").build(4)
    with pytest.raises(dk.DiffkitError, match="cannot load"):
        dk.harness.user_problem(f"{tmp_path}/missing.py:f").build(4)
    with pytest.raises(dk.DiffkitError, match="unknown problem"):
        get_problem("nope")
    with pytest.raises(dk.DiffkitError, match="unknown option"):
        get_problem("mlp", widht=3)


def test_mlp_sizes_track_the_request() -> None:
    prob = get_problem("mlp", activation="relu", depth=3)
    for size in (10, 1_000, 100_000):
        n = prob.build(size).n
        assert size / 2 <= n <= size * 2, (size, n)


# ------------------------------------------------------------------- single cases

FIELDS = {
    "problem", "size", "n", "m", "method", "mode", "dtype", "outcome", "message", "trace_s",
    "compile_s", "first_call_s", "time_min", "time_median", "time_iqr", "primal_median", "ratio",
    "passes", "xla_bytes", "rss_peak_bytes", "rho_max", "rho_mean", "accurate", "tolerance",
    "reference_crosscheck", "meta", "key", "date",
}  # fmt: skip


@pytest.mark.parametrize("method", ["jax-rev", "jax-fwd"])
def test_run_case_float64_is_exact(method: str) -> None:
    rec = run_case("rosenbrock", 12, method, "float64", min_time=0.01)
    assert FIELDS <= set(rec), FIELDS - set(rec)
    assert rec["outcome"] == "ok" and rec["accurate"] and rec["rho_max"] <= 1e-12
    assert rec["reference_crosscheck"] <= 1e-12
    assert rec["passes"] == (12 if method == "jax-fwd" else 1)
    assert rec["time_min"] <= rec["time_median"] and rec["ratio"] > 0
    assert {"backend", "jax", "jaxlib", "numpy", "sympy", "python", "cpu_count"} <= set(rec["meta"])
    json.dumps(rec, allow_nan=False)


def test_reference_crosscheck_of_a_dict_argument_jacobian(x64) -> None:
    """The float64 reference of a Jacobian in a pytree argument (two outputs): jax.jacrev's
    blocks, and its forward-mode cross-check contracts block by block (a dict-based ba came
    out 1.0 when the flat reference was read as one (m, n) matrix)."""
    from diffkit.harness.families import Problem
    from diffkit.harness.measure import reference

    def build(size, dtype, rng):
        def f(p, c):
            return p["a"] * c, jax.numpy.sin(p["b"]).sum() * p["a"][:2] ** 2

        p = {"a": rng.standard_normal(size), "b": rng.standard_normal((2, size))}
        return f, (p, rng.standard_normal(size))

    inst = Problem("dict-jacobian", "test", "n", (3,), build).build(3, "float64")
    ref, check = reference(inst)
    want = jax.jacrev(inst.fun)(*inst.args)
    assert rho(ref, jax.flatten_util.ravel_pytree(want)[0]) <= 1e-12
    assert check <= 1e-12


def test_run_case_reports_errors_without_raising() -> None:
    rec = run_case("rosenbrock", 4, "no-such-method", min_time=0.01)
    assert rec["outcome"] == "error" and "no-such-method" in rec["message"]
    assert "\n" not in rec["message"]


# ------------------------------------------------------- isolated sweeps and outcomes

FAKES = """
import os, time
import jax
from diffkit import Differentiator, UnsupportedPrimitiveError


def _n(primals):
    return sum(p.size for p in primals)


class Slow(Differentiator):
    mode, native = "reverse", frozenset({"vjp"})

    def _vjp(self, fun, primals):
        time.sleep(600)  # hangs while tracing


class Crash(Differentiator):
    mode, native = "reverse", frozenset({"vjp"})

    def _vjp(self, fun, primals):
        if _n(primals) >= 8:
            os._exit(3)  # the process dies
        return jax.vjp(fun, *primals, has_aux=True)


class NoRule(Differentiator):
    mode, native = "reverse", frozenset({"vjp"})

    def _vjp(self, fun, primals):
        raise UnsupportedPrimitiveError("fake: no rule for sub")
"""


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "harness_fakes.py").write_text(textwrap.dedent(FAKES))
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = ["harness_fakes:Slow", "harness_fakes:Crash", "harness_fakes:NoRule"]
    yield specs
    for spec in specs:
        dk.unregister(spec)


@pytest.mark.slow  # isolated workers, a hang to time out, a crash: ~11 s on 2 cores
def test_isolated_sweep_outcomes_skip_and_resume(tmp_path: Path, fakes: list[str]) -> None:
    out = tmp_path / "sweep.jsonl"
    seen: list[tuple[str, int, str]] = []
    methods = ["jax-rev", fakes[0], fakes[2], fakes[1]]
    res = sweep(
        "rosenbrock", [4, 8], methods, out=out, budget=8.0, min_time=0.01,
        progress=lambda r, i, total: seen.append((r["method"], r["size"], r["outcome"])),
    )  # fmt: skip
    outcome = {(r["method"], r["size"]): r for r in res}
    assert outcome[("jax-rev", 4)]["outcome"] == outcome[("jax-rev", 8)]["outcome"] == "ok"
    assert outcome[(fakes[0], 4)]["outcome"] == "timeout"
    assert outcome[(fakes[0], 8)]["outcome"] == "skipped"
    assert outcome[(fakes[2], 4)]["outcome"] == "unsupported"
    assert "no rule for sub" in outcome[(fakes[2], 4)]["message"]
    assert outcome[(fakes[1], 4)]["outcome"] == "ok"
    assert outcome[(fakes[1], 8)]["outcome"] == "error"
    assert "exit 3" in outcome[(fakes[1], 8)]["message"]
    assert len(seen) == 8 and seen[-1] == (fakes[1], 8, "error")
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(line)["key"] for line in lines)
    assert outcome[("jax-rev", 8)]["rho_max"] <= 1e-4
    assert res.overhead()["worker_start_s"] > 0

    again = sweep("rosenbrock", [4, 8], methods, out=out, budget=8.0, min_time=0.01)
    assert [r["key"] for r in again] == [r["key"] for r in res]  # nothing re-run
    assert len(out.read_text().splitlines()) == 8


def test_resume_after_a_torn_line_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    kwargs = dict(min_time=0.01, isolate=False, out=out, accuracy=False)
    first = sweep(["tiny-net", "lse"], [3, 6], ["jax-rev"], **kwargs)
    assert len(first) == 3  # tiny-net has one size
    text = out.read_text()
    out.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # torn last line
    assert len(read_records(out)) == 2
    second = sweep(["tiny-net", "lse"], [3, 6], ["jax-rev"], **kwargs)
    assert len(second) == 3 and len(read_records(out)) == 3
    assert [r["date"] for r in second][:2] == [r["date"] for r in first][:2]  # not re-run
    assert sorted(r["key"] for r in load(out)) == sorted(r["key"] for r in first)

    table = str(second)
    assert "jax-rev" in table and "tiny-net" in table and "ratio" in table.splitlines()[0]
    assert second._repr_html_().startswith("<table>")
    rows = list(csv.DictReader(io.StringIO(second.to_csv(tmp_path / "r.csv"))))
    assert len(rows) == 3 and rows[0]["meta.backend"] == jax.default_backend()
    assert (tmp_path / "r.csv").exists()
    paths = second.plot(tmp_path / "plots")
    assert paths and all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_sweep_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(dk.DiffkitError, match="unknown differentiator"):
        sweep("lse", [3], ["nope"], out=tmp_path / "x.jsonl")
    with pytest.raises(dk.DiffkitError, match="dtype"):
        sweep("lse", [3], ["jax-rev"], "float16", out=tmp_path / "x.jsonl")
    with pytest.raises(dk.DiffkitError, match="method_sizes names fd, not among the methods"):
        sweep("lse", [3], ["jax-rev"], method_sizes={"fd": [3]}, out=tmp_path / "x.jsonl")


def test_method_sizes_give_some_methods_sizes_of_their_own(tmp_path: Path) -> None:
    res = sweep(
        ["lse", "tiny-net"], [3, 6], ["jax-rev", "fd"], method_sizes={"fd": {"lse": [2, 3]}},
        min_time=0.01, isolate=False, accuracy=False, out=tmp_path / "s.jsonl",
    )  # fmt: skip
    cases = [(r["problem"], r["size"], r["method"]) for r in res]
    assert cases == [  # size by size; fd only at its own sizes, and not on tiny-net
        ("lse", 2, "fd"),
        ("lse", 3, "jax-rev"), ("lse", 3, "fd"),
        ("lse", 6, "jax-rev"),
        ("tiny-net", 9, "jax-rev"),
    ]  # fmt: skip


def test_a_slow_derivative_is_timed_by_its_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("diffkit.harness.measure.SLOW_CALL", 0.0)  # every call counts as slow
    rec = run_case("lse", 3, "jax-rev", min_time=0.01, accuracy=False)
    assert rec["outcome"] == "ok" and rec["time_n"] == 1
    assert rec["time_median"] == rec["time_min"] == rec["first_call_s"]
    assert rec["primal_n"] >= 3  # the primal is still timed in full


# ------------------------------------------------------------------ analysis


def _synthetic(method: str, times, passes, ns=(10, 100, 1_000, 10_000, 100_000)):
    return [
        {
            "problem": "p", "method": method, "dtype": "float32", "size": n, "n": n, "m": 1,
            "outcome": "ok", "time_median": times(n), "primal_median": 1e-5 + 1e-9 * n,
            "ratio": times(n) / (1e-5 + 1e-9 * n), "passes": passes(n), "meta": {"backend": "cpu"},
        }
        for n in ns
    ]  # fmt: skip


def test_fit_exponents_on_synthetic_timings() -> None:
    records = (
        _synthetic("quadratic", lambda n: max(1e-5, 1e-9 * n**2), lambda n: n)
        + _synthetic("linear", lambda n: 1e-5 + 3e-8 * n, lambda n: n)
        + _synthetic("flat", lambda n: 1e-5 * (1 + 0.01 * math.log(n)), lambda n: 1)
    )
    fits = {f["method"]: f for f in Results(records).fit_exponents()}
    assert fits["quadratic"]["slope_time"] == pytest.approx(2.0, abs=1e-9)
    assert fits["quadratic"]["range"] == [1_000, 100_000]
    assert fits["quadratic"]["expected_ratio"] == pytest.approx(1.0)
    assert fits["linear"]["slope_time"] == pytest.approx(1.0, abs=0.1)  # the floor bends it
    assert fits["linear"]["points"] == 3  # 1e3 (4e-5 > 3x the floor), 1e4, 1e5
    assert fits["flat"]["slope_time"] is None and fits["flat"]["range"] is None
    assert "dispatch-bound" in Results(records).exponents_table()


def test_fit_exponents_keep_problem_options_apart() -> None:
    """Nested pairs (particle x inner) differ only in problem_options: one fit each."""
    quadratic = _synthetic("jax-rev", lambda n: max(1e-5, 1e-9 * n**2), lambda n: 1)
    linear = _synthetic("jax-rev", lambda n: 1e-5 + 3e-8 * n, lambda n: 1)
    for rec, inner in [(r, "dual") for r in quadratic] + [(r, "tape") for r in linear]:
        rec["problem_options"] = {"inner": inner}
    fits = Results(quadratic + linear).fit_exponents()
    by_inner = {f["problem_options"]["inner"]: f["slope_time"] for f in fits}
    assert by_inner == {"dual": pytest.approx(2.0, abs=1e-9), "tape": pytest.approx(1.0, abs=0.1)}


def test_crossover_on_synthetic_timings() -> None:
    rows = []
    for method, cost in (("fwd", lambda m: 4.0), ("rev", lambda m: float(m))):
        for m in (1, 2, 8, 32):
            rows.append(
                {"problem": "wide-output", "method": method, "dtype": "float32", "size": m,
                 "n": 4, "m": m, "outcome": "ok", "time_median": cost(m)}
            )  # fmt: skip
    cross = Results(rows).crossover("fwd", "rev")
    assert cross["m_over_n"] == pytest.approx(1.0)  # rev costs m, fwd costs n = 4
    assert [r["m_over_n"] for r in cross["rows"]] == [0.25, 0.5, 2.0, 8.0]


def test_the_float64_reference_is_not_rounded_to_float32() -> None:
    """The reference was flattened outside the x64 scope, which rounded it to float32 (and
    warned): rho below ~1e-7 could not be told from zero."""
    import warnings

    from diffkit.harness.families import get_problem
    from diffkit.harness.measure import reference

    inst = get_problem("rosenbrock").build(10, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JAX's "float64 ... truncated" warning
        # an entry another xdist worker is still writing: JAX compiles the program again
        warnings.filterwarnings("ignore", message="Error reading persistent compilation cache")
        ref, _ = reference(inst)
    assert ref.dtype == np.float64
    assert np.abs(ref - ref.astype(np.float32).astype(np.float64)).max() > 0
