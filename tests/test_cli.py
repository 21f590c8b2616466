"""The `diffkit` command: each command in a subprocess (or in-process where that is enough)
on small sizes -- exit codes, table contents, files written, one-line errors, and the
explain numbers checked against the worked example's analytic formulas."""

from __future__ import annotations

import csv
import gc
import io
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

import diffkit as dk
from diffkit.cli import main, parse_sizes
from diffkit.harness import Results
from diffkit.html import report


def verdict(records: list[dict]) -> str:
    """The verdict moved to ``Results.verdict``; the tests below call it through this."""
    return Results(records).verdict()


ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "diffkit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=300,
    )


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the rich tables in ``text``."""
    return [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.strip().startswith("│")
    ]


def worked_example() -> tuple[float, dict[str, float]]:
    """Loss and gradient of the 9-parameter network, written out by hand (chain rule)."""
    x1, x2, y = 1.0, 0.5, 1.0
    w11, w12, b1, w21, w22, b2, v1, v2, b3 = 0.3, 0.7, 0.1, -0.2, 0.5, 0.0, 0.6, -0.4, 0.1
    z1, z2 = w11 * x1 + w12 * x2 + b1, w21 * x1 + w22 * x2 + b2
    h1, h2 = max(z1, 0.0), max(z2, 0.0)
    p = 1 / (1 + math.exp(-(v1 * h1 + v2 * h2 + b3)))
    loss = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    do = p - y  # d loss / d logit for sigmoid + cross-entropy
    d1, d2 = do * v1 * (z1 > 0), do * v2 * (z2 > 0)
    grads = dict(w11=d1 * x1, w12=d1 * x2, b1=d1, w21=d2 * x1, w22=d2 * x2, b2=d2)
    grads.update(v1=do * h1, v2=do * h2, b3=do)
    return loss, grads


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffkit: error:")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.slow  # a fresh interpreter importing diffkit and SymPy: ~2-4 s on 2 cores
def test_import_and_help_load_no_jax() -> None:
    """``import diffkit`` and ``diffkit --help`` stay light: JAX loads on first use, after
    ``--backend`` has been read; symbolic's scalar level imports SymPy only when it works."""
    code = (
        "import sys, diffkit, diffkit.cli as cli; assert 'jax' not in sys.modules\n"
        "try: cli.main(['compare', '--help'])\nexcept SystemExit: pass\n"
        "assert 'jax' not in sys.modules\n"
        "import diffkit as dk; d = dk.get('symbolic'); assert 'sympy' not in sys.modules\n"
        "assert float(d.grad(lambda x: x * x)(3.0)) == 6.0\n"  # the array level
        "s = dk.get('symbolic', level='scalar'); assert 'sympy' not in sys.modules\n"
        "assert float(s.grad(lambda x: x * x)(3.0)) == 6.0 and 'sympy' in sys.modules\n"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr


@pytest.mark.slow  # a command-line run in a subprocess: ~3 s on 2 cores
def test_compare_imports_matplotlib_in_a_thread_only_after_numpy(tmp_path) -> None:
    """Two threads importing NumPy at once can fail ("partially initialized module"): the
    thread that imports matplotlib ahead of the plots must start once NumPy is loaded."""
    code = (
        "import sys, threading, diffkit.cli as cli\n"
        "seen, start = [], threading.Thread.start\n"
        "def spy(t):\n"
        "    if getattr(t, '_target', None) is cli.import_plotting:\n"
        "        seen.append('numpy' in sys.modules)\n"
        "    start(t)\n"
        "threading.Thread.start = spy\n"
        "args = ['compare', '--problem', 'lse', '--sizes', '5', '--methods', 'jax-rev']\n"
        f"assert cli.main([*args, '--min-time', '0.01', '--out', {str(tmp_path)!r}]) == 0\n"
        "print(seen)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[True]"
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr


@pytest.mark.slow  # ~3 s: a garbage collection on a worker's large heap
def test_a_ctrl_c_that_python_swallows_is_still_noted(monkeypatch) -> None:
    """A KeyboardInterrupt raised inside a garbage-collector callback (JAX installs one) is
    dropped by Python; ``compare`` notes every Ctrl-C so that it can raise it again."""
    from diffkit.cli import noting_interrupts

    dropped: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_value))

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            signal.raise_signal(signal.SIGINT)

    flag = [False]
    before = signal.getsignal(signal.SIGINT)
    with noting_interrupts(flag):
        gc.callbacks.append(callback)
        try:
            gc.collect(0)  # the youngest generation: the callbacks run all the same, fast
        finally:
            gc.callbacks.remove(callback)
    assert any(isinstance(e, KeyboardInterrupt) for e in dropped)  # Python did drop it
    assert flag == [True]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_verdict_names_a_mode_measured_on_another_problem() -> None:
    def rec(problem: str, n: int, method: str, mode: str, ratio: float) -> dict:
        return {"problem": problem, "quantity": "grad", "n": n, "m": 1, "method": method,
                "mode": mode, "outcome": "ok", "ratio": ratio, "accurate": True,
                "dtype": "float32"}  # fmt: skip

    text = verdict([rec("mlp", 10_000, "tape", "reverse", 2.0), rec("tiny-net", 9, "symbolic",
                    "symbolic", 1.5)])  # fmt: skip
    assert "reverse mode 2x the forward pass (tape); symbolic 1.5x at n=9 on tiny-net" in text


def test_verdict_explains_tf32_on_gpu() -> None:
    meta = {"backend": "gpu", "matmul_precision": "default"}
    rec = {"problem": "mlp", "quantity": "grad", "n": 100, "m": 1, "method": "jax-rev",
           "mode": "reverse", "outcome": "ok", "ratio": 1.5, "accurate": False,
           "dtype": "float32", "meta": meta}  # fmt: skip
    assert "--matmul-precision highest" in verdict([rec])
    rec["meta"]["matmul_precision"] = "highest"  # then the error has another cause
    assert "--matmul-precision" not in verdict([rec])
    assert "--matmul-precision" not in verdict([dict(rec, meta={"backend": "cpu"})])


@pytest.mark.slow  # a command-line run and its worker in subprocesses: ~3 s on 2 cores
def test_matmul_precision_reaches_the_worker_and_the_results(tmp_path) -> None:
    out = tmp_path / "r"
    args = ["compare", "--problem", "lse", "--sizes", "3", "--methods", "jax-rev"]
    done = run(*args, "--matmul-precision", "highest", "--out", str(out), "--min-time", "0.01")
    assert done.returncode == 0, done.stderr
    assert "matmul precision highest" in done.stdout
    (rec,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rec["meta"]["matmul_precision"] == "highest" and "highest" in rec["key"]


def test_a_spare_worker_serves_only_its_own_environment(monkeypatch) -> None:
    from diffkit.harness import worker as workers

    workers.prestart()
    spare = workers._SPARE[0]
    monkeypatch.setenv("DIFFKIT_TEST_MARK", "1")  # the environment changed since
    fresh = workers.take()
    try:
        assert fresh is not spare and spare.proc.poll() is not None  # the stale one ended
        assert not workers._SPARE
    finally:
        fresh.close()


def test_parse_sizes() -> None:
    assert parse_sizes("10,100,1e3,1e4") == [10, 100, 1000, 10_000]
    assert parse_sizes("1..13") == list(range(1, 14))


def test_help_on_every_command(capsys) -> None:
    for command in ([], ["compare"], ["list"], ["swell"], ["steps"], ["explain"], ["plot"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "usage: diffkit" in out and "example" in out


@pytest.mark.slow  # the command in a subprocess: ~2-4 s on 2 cores
def test_explain_matches_the_worked_example() -> None:
    done = run("explain")
    assert done.returncode == 0, done.stderr
    loss, grads = worked_example()
    assert f"= {loss:.8f}" in done.stdout  # the output line
    rows = {r[0]: r for r in table_rows(done.stdout) if len(r) == 4}
    for name, g in grads.items():
        assert abs(float(rows[name][2]) - g) < 1e-7, (name, rows[name], g)
        meaning = "increase it" if g < 0 else "decrease it"
        assert rows[name][3].startswith(meaning)
    assert f"{grads['w11']:.4f}" == "-0.2223" and f"{grads['b3']:.4f}" == "-0.3705"
    # the backward walk: each node's upstream times its local derivative is what it passes on
    walk = [r for r in table_rows(done.stdout) if "->" in r[-1] and r[1].startswith("d")]
    assert len(walk) >= 20
    for _, local, upstream, passed in walk:
        got = float(passed.split("->")[0])
        assert abs(float(local.split("=")[1]) * float(upstream) - got) < 1e-7


def test_explain_a_user_function(tmp_path, capsys) -> None:
    (tmp_path / "energy.py").write_text(
        "import jax.numpy as jnp\n\ndef energy(x, k):\n    return 0.5 * k * x**2 + jnp.sin(x)\n"
    )
    assert main(["explain", f"{tmp_path / 'energy.py'}:energy", "--at", "0.5,2"]) == 0
    rows = {r[0]: r for r in table_rows(capsys.readouterr().out) if len(r) == 4}
    assert abs(float(rows["x"][2]) - (2 * 0.5 + math.cos(0.5))) < 1e-7
    assert abs(float(rows["k"][2]) - 0.5 * 0.5**2) < 1e-7


@pytest.mark.slow  # a command-line run in a subprocess, then resumed: ~5 s on 2 cores
def test_compare_writes_table_files_and_resumes(tmp_path, capsys) -> None:
    out = tmp_path / "res"
    args = ["compare", "--problem", "rosenbrock", "--sizes", "40", "--methods", "jax-rev,fd"]
    args += ["--min-time", "0.01", "--out", str(out), "--backend", "cpu"]
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert "backend cpu" in done.stderr and "backend cpu" in done.stdout
    rows = [r for r in table_rows(done.stdout) if r[0] == "rosenbrock"]
    assert sorted((r[1], r[3]) for r in rows) == [("40", "fd"), ("40", "jax-rev")]
    evals = {(r[1], r[3]): r[6] for r in rows}
    assert evals[("40", "jax-rev")] == "1" and evals[("40", "fd")] == "80"  # central: 2n
    assert all(r[8] in ("ok", "INACCURATE") for r in rows)
    assert "At n=40 (rosenbrock, float32) a gradient costs: reverse mode" in done.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["outcome"] for r in records} == {"ok"}
    assert (out / "results.csv").exists() and (out / "rosenbrock-float32.png").stat().st_size

    # resumed: nothing is measured again; CSV on stdout, one row per case
    assert main([*args[:-2], "--resume", "--format", "csv"]) == 0
    text = capsys.readouterr().out
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 2 and {r["method"] for r in table} == {"jax-rev", "fd"}
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    assert main([*args[:-2], "--resume", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| problem | n | m | method |")

    # plot: regenerate the PNGs elsewhere
    figs = tmp_path / "figs"
    assert main(["plot", str(out), "--out", str(figs)]) == 0
    assert (figs / "rosenbrock-float32.png").stat().st_size > 1000


@pytest.mark.slow  # a command-line run in a subprocess: ~8 s on 2 cores
def test_compare_sparse_shows_dense_against_compressed(tmp_path, capsys) -> None:
    out = tmp_path / "res"
    args = ["compare", "--sparse", "--problem", "pde-1d", "--sizes", "30", "--methods"]
    done = run(*args, "jax-fwd,tape", "--min-time", "0.01", "--out", str(out))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by = {r["method"]: r for r in records}
    assert sorted(by) == ["jax-fwd", "jax-fwd+sparse", "tape", "tape+sparse"]
    assert all(r["outcome"] == "ok" and r["accurate"] for r in records)
    assert (by["jax-fwd"]["passes"], by["jax-fwd+sparse"]["passes"]) == (30, 3)
    view = done.stdout.split("dense against compressed")[1].split("\n\n")[0]
    rows = {r[2]: r for r in (line.split() for line in view.splitlines()[2:])}
    assert rows["jax-fwd"][:4] == ["pde-1d", "30", "jax-fwd", "30/3"]
    assert rows["tape"][3:5] == ["30/3", str(by["tape+sparse"]["nnz"])]
    # the report draws the pattern
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    (drawn,) = report(str(out)).data["patterns"]
    assert (drawn["problem"], drawn["n"], drawn["nnz"]) == ("pde-1d", 30, 88)
    assert main([*args, "jax-fwd", "--suite", "gradbench"]) == 2
    assert "leave out --problem/function/--sparse" in capsys.readouterr().err


@pytest.mark.slow  # a command-line run interrupted in a subprocess: ~3 s on 2 cores
def test_compare_interrupted_keeps_finished_cases(tmp_path) -> None:
    out = tmp_path / "res"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["compare", "--problem", "lse", "--sizes", "5,6,7,8,9,10,11,12", "--methods"]
    args += ["jax-rev", "--min-time", "0.01", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffkit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (results.exists() and results.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err.strip().splitlines()[-1]
    kept = results.read_text().splitlines()
    assert 1 <= len(kept) < 8


def test_steps_marks_the_optimal_step(tmp_path, capsys) -> None:
    args = ["steps", "--problem", "lse", "--size", "3", "--rules", "forward,central"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "2/2" in err  # the progress bar reaches its total
    rows = [r for r in table_rows(out) if re.fullmatch(r"1e[-+]\d+", r[0])]
    assert len(rows) >= 16
    for col, best in ((1, 1e-8), (2, 1e-10)):  # forward ~ eps^(1/2), central ~ eps^(2/3)
        errors = [float(r[col].rstrip("*")) for r in rows]
        marked = [k for k, r in enumerate(rows) if r[col].endswith("*")]
        assert len(marked) == 1 and errors[marked[0]] == min(errors)
        assert min(errors) < 10 * best and max(errors) > 1e-3  # the U: both arms present
    assert (tmp_path / "steps-lse-float64.png").stat().st_size > 1000


def test_steps_progress_counts_only_the_rules_it_runs(tmp_path, capsys) -> None:
    assert main(["steps", "--problem", "lse", "--size", "3", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "complex step left out" in err and "3/3" in err and "/4" not in err


@pytest.mark.slow  # the command in a subprocess: ~2-3 s on 2 cores
def test_list_names_every_differentiator_and_problem() -> None:
    done = run("list")
    assert done.returncode == 0, done.stderr
    first = {r[0] for r in table_rows(done.stdout)}
    assert set(dk.names()) <= first and set(dk.harness.problems()) <= first


def test_swell(tmp_path, capsys) -> None:
    code = main(["swell", "--sizes", "1..4", "--out", str(tmp_path)])
    if "symbolic" not in dk.names():
        assert_one_line_error(code, capsys.readouterr().err, "symbolic")
        return
    assert code == 0
    out, err = capsys.readouterr()
    assert "4/4" in err  # the progress bar reaches its total (it stopped one short)
    rows = [r for r in table_rows(out) if r[0].isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    tree = [int(r[3].replace(",", "")) for r in rows]
    assert all(b > a for a, b in itertools.pairwise(tree))  # the derivative swells
    assert (tmp_path / "swell-logistic-map.png").exists()


@pytest.mark.slow  # a subprocess, then in-process runs: ~2-4 s on 2 cores
def test_bad_arguments_are_one_line_errors(tmp_path, capsys) -> None:
    done = run("compare", "--sizes", "ten")
    assert_one_line_error(done.returncode, done.stderr, "--sizes", "'ten'")
    cases = [
        (["compare", "--methods", "nope"], "unknown differentiator 'nope'"),
        (["compare", "--problem", "nope"], "unknown problem 'nope'"),
        (["compare", f"{tmp_path}/missing.py:f"], "cannot load"),
        (["compare", "--dtype", "float16"], "invalid choice"),
        (["explain", "diffkit.examples:tiny_network", "--at", "1,2,3"], "takes 1 argument"),
        (["plot", str(tmp_path)], "no results"),
        (["compare", f"{tmp_path}/missing.py:f"], "file not found"),
        (["steps", "--rules", "central:3"], "even orders"),
        (["frobnicate"], "invalid choice"),
    ]
    for argv, needle in cases:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        assert_one_line_error(code, capsys.readouterr().err, needle)


def test_settings_of_an_in_process_run_do_not_leak(monkeypatch, capsys, tmp_path) -> None:
    """main() called in-process (a notebook, a test) restores the environment: a leaked
    JAX_PLATFORMS made every later diffkit subprocess of that process fail to start."""
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("JAX_DEFAULT_MATMUL_PRECISION", raising=False)
    monkeypatch.chdir(tmp_path)  # no results/ of an earlier run to refuse (exit 2 for that)
    jax.devices()  # JAX started on the CPU first, as after any earlier test in this worker
    argv = ["compare", "--problem", "lse", "--sizes", "3", "--methods", "jax-rev"]
    assert main([*argv, "--backend", "tpu", "--matmul-precision", "highest"]) == 2
    assert "--backend tpu: JAX cannot start a tpu backend" in capsys.readouterr().err
    assert "JAX_PLATFORMS" not in os.environ
    assert "JAX_DEFAULT_MATMUL_PRECISION" not in os.environ
