"""Issue 31, the harness abused: the user's code runs only in the sweep's workers, and each
runaway (a hang, a memory hog, a raising callback, an allocation failure inside XLA, a worker
that cannot start, a parent killed while its worker starts) ends in one recorded outcome or
a one-line error, the sweep goes on, and nothing already recorded changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from _proc import alive, children

import diffkit as dk
from diffkit.harness import worker as workers
from diffkit.harness.families import resolve_target
from diffkit.harness.measure import classify
from diffkit.harness.record import is_out_of_memory, summarize_error
from diffkit.harness.results import read_records

#: The user's targets. Importing the module notes the importing process's pid in MARKER, so a
#: test can tell that only workers loaded it.
TARGETS = """
import os, time
import jax, jax.numpy as jnp, numpy as np

with open(os.environ["ABUSE_MARKER"], "a") as f:
    f.write(f"{os.getpid()}\\n")

def _raise(x):
    raise ValueError("boom from the user's callback")

def callback_raises(x):  # the primal raises at n = 1 only
    if x.shape[0] == 1:
        return jnp.sum(jax.pure_callback(_raise, jax.ShapeDtypeStruct(x.shape, x.dtype), x))
    return jnp.sum(jnp.sin(x))

def outer_square(x):  # n = 60 000: 14 GB per matrix in float32
    A = jnp.outer(x, x)
    return jnp.sum(A @ A)

_kept = []
def hog(x):  # 1 GiB 40 times, kept
    for _ in range(40):
        _kept.append(np.ones(2**27))
    return jnp.sum(x**2)

def sleeper(x):
    time.sleep(3600)
    return jnp.sum(x)
"""


@pytest.fixture
def targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``abuse_targets.py`` in the working directory; the marker file of its importers."""
    (tmp_path / "abuse_targets.py").write_text(textwrap.dedent(TARGETS))
    marker = tmp_path / "imported-by"
    marker.write_text("")
    monkeypatch.setenv("ABUSE_MARKER", str(marker))
    monkeypatch.chdir(tmp_path)
    return marker


def _by_case(records: list[dict]) -> dict[tuple[int, str], dict]:
    return {(r["size"], r["method"]): r for r in records}


def _importers(marker: Path) -> set[int]:
    return {int(pid) for pid in marker.read_text().split()}


# ------------------------------------------------------------------ in-process, fast


def test_one_line_messages_keep_the_exception_and_the_users_frame() -> None:
    text = (
        "INTERNAL: CpuCallback error calling callback: Traceback (most recent call last):\n"
        f'  File "{jax.__file__}", line 96, in pure_callback_impl\n'
        '  File "/home/me/model.py", line 3, in bad\n'
        "ValueError: boom"
    )
    assert summarize_error(text) == "ValueError: boom (at /home/me/model.py:3 in bad)"

    def users_code() -> None:
        raise RuntimeError("first line\nsecond line")

    try:
        users_code()
    except RuntimeError as exc:
        outcome, message = classify(exc)
    assert outcome == "error" and message.startswith("RuntimeError: first line (at ")
    assert f"{__file__}:" in message and "in users_code" in message


def test_allocation_failures_are_out_of_memory() -> None:
    ynnpack = "JaxRuntimeError: INTERNAL: YNNPACK operation failed: error"
    assert not is_out_of_memory(ynnpack)  # no allocation seen: a kernel's own error
    assert is_out_of_memory(ynnpack, "allocate of <5> failed.\nallocate of <5> failed.\n")
    for message in [
        "JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1 GiB",
        "worker died (exit -6): what():  std::bad_alloc",
        "MemoryError: Unable to allocate 1.00 GiB",
    ]:
        assert is_out_of_memory(message), message
    assert classify(MemoryError("Unable to allocate"))[0] == "out-of-memory"
    assert not is_out_of_memory("ValueError: boom")


def test_a_worker_that_cannot_start_is_the_cases_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repro of the issue: a start-up timeout read a file it had just closed and aborted
    the sweep. Now both tries fail, each case records it, and the sweep goes on."""
    monkeypatch.setattr(workers, "STARTUP_TIMEOUT", 0.01)
    out = tmp_path / "s.jsonl"
    res = dk.harness.sweep("mlp", [10, 100], ["jax-rev"], out=out, min_time=0.01)
    assert [r["outcome"] for r in res] == ["error", "error"]
    for rec in res:
        assert rec["outcome_by"] == "harness" and rec["failed_in"] == "startup"
        assert rec["message"].startswith("the worker process failed to start, twice")
    assert len(read_records(out)) == 2
    monkeypatch.undo()  # a resumed sweep starts them again: nothing of theirs had run
    kept = out.read_text()
    again = dk.harness.sweep("mlp", [10, 100], ["jax-rev"], out=out, min_time=0.01, isolate=False)
    assert [r["outcome"] for r in again] == ["ok", "ok"]
    assert out.read_text().startswith(kept)  # appended: what was recorded is unchanged


def test_a_failed_primal_is_recorded_once(targets: Path) -> None:
    """In this process: the raising callback at n = 1 is the first method's error, the other
    methods of that size say "primal failed", and the next size runs (was: every later method
    recorded ``KeyError: 'primal_prepare_s'``)."""
    problem = dk.harness.user_problem("abuse_targets.py:callback_raises")
    res = dk.harness.sweep(
        problem, [1, 2], ["jax-rev", "tape", "fd"], isolate=False, min_time=0.01,
        out=targets.parent / "r.jsonl",
    )  # fmt: skip
    case = _by_case(list(res))
    first = case[(1, "jax-rev")]
    assert first["outcome"] == "error" and first["failed_in"] == "primal" and first["n"] == 1
    assert first["message"].startswith("primal failed: JaxRuntimeError: ValueError: boom")
    assert "abuse_targets.py:" in first["message"] and "in _raise" in first["message"]
    for method in ("tape", "fd"):
        rec = case[(1, method)]
        assert rec["outcome"] == "skipped" and rec["cause"] == "error" and rec["n"] == 1
        assert rec["message"].startswith("primal failed: error: JaxRuntimeError: ValueError")
    assert all(case[(2, m)]["outcome"] == "ok" for m in ("jax-rev", "tape", "fd"))
    assert not any("KeyError" in r["message"] or "Traceback" in r["message"] for r in res)

    # dk.harness.compare (every method in this process) shares one failed primal too
    f = resolve_target("abuse_targets.py:callback_raises")
    res = dk.harness.compare(f, jnp.ones(1), methods=["jax-rev", "tape"], min_time=0.01)
    assert [r["outcome"] for r in res] == ["error", "skipped"]
    assert res[1]["message"].startswith("primal failed: error: ")


def test_a_target_that_cannot_load_stops_the_sweep_in_one_line(targets: Path) -> None:
    """A missing function is bad input, not a measurement: one line, nothing recorded for it,
    and the cases recorded before it unchanged."""
    out = targets.parent / "r.jsonl"
    dk.harness.sweep("lse", [3], ["jax-rev"], isolate=False, min_time=0.01, out=out)
    kept = out.read_text()
    problem = dk.harness.user_problem("abuse_targets.py:nope")
    with pytest.raises(dk.DiffkitError, match="has no 'nope'") as info:
        dk.harness.sweep(problem, [3], ["jax-rev"], isolate=False, min_time=0.01, out=out)
    assert "\n" not in str(info.value) and not str(info.value).startswith("DiffkitError")
    assert out.read_text() == kept
    with pytest.raises(dk.DiffkitError, match="file not found"):  # found before any worker
        dk.harness.sweep(dk.harness.user_problem("nowhere.py:f"), [3], ["jax-rev"], out=out)


# ------------------------------------------------------------------ worker processes


@pytest.mark.slow  # one worker, an allocation failure inside XLA (~4 GB refused): ~15 s
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA semantics")
def test_runaway_primals_in_the_worker_and_a_resumed_sweep(targets: Path) -> None:
    """A raising callback and ``A = outer(x, x); A @ A`` at n = 60 000 under a 4 GB limit
    (the worker's RLIMIT_DATA refuses the 14 GB: no more than 4 GB is ever taken): each
    recorded once, in the worker only; resuming changes nothing already recorded."""
    out = targets.parent / "r.jsonl"
    problems = [dk.harness.user_problem(f"abuse_targets.py:{name}") for name in
                ("callback_raises", "outer_square")]  # fmt: skip
    sizes = {"user": [1, 60_000]}
    kwargs = dict(out=out, min_time=0.01, memory_limit=4e9, budget=60.0)
    res = dk.harness.sweep(problems, sizes, ["jax-rev", "tape"], **kwargs)
    assert os.getpid() not in _importers(targets) and _importers(targets)  # the worker's
    raising = [r for r in res if "callback" in r["problem_options"]["target"]]
    outer = [r for r in res if "outer" in r["problem_options"]["target"]]
    case = _by_case(raising)
    assert case[(1, "jax-rev")]["outcome"] == "error"
    assert "ValueError: boom from the user's callback" in case[(1, "jax-rev")]["message"]
    assert case[(1, "tape")]["outcome"] == "skipped"
    assert case[(60_000, "jax-rev")]["outcome"] == case[(60_000, "tape")]["outcome"] == "ok"
    case = _by_case(outer)
    first = case[(1, "jax-rev")]
    assert first["outcome"] == "ok"
    big = case[(60_000, "jax-rev")]
    assert big["outcome"] == "out-of-memory" and big["failed_in"] == "primal", big["message"]
    assert case[(60_000, "tape")]["outcome"] == "skipped"
    assert case[(60_000, "tape")]["message"].startswith("primal failed: out-of-memory: ")

    kept = out.read_text()
    again = dk.harness.sweep(problems, sizes, ["jax-rev", "tape"], **kwargs)
    assert out.read_text() == kept  # nothing measured again, nothing changed
    assert [r["key"] for r in again] == [r["key"] for r in res]


def _compare(target: str, *flags: str, cwd: Path) -> tuple[subprocess.CompletedProcess, int]:
    """``diffkit compare`` in a fresh process, and that process's own peak resident memory
    in bytes: VmHWM, not its worker's, nor ru_maxrss (Linux carries the peak of the process
    that started it across fork and exec: that of the pytest worker, 1.1 GB in CI)."""
    code = textwrap.dedent("""
        import sys
        from diffkit.cli import main
        from diffkit.harness.measure import peak_rss_bytes
        code = main(sys.argv[1:])
        print("PEAK", peak_rss_bytes(), file=sys.stderr)
        sys.exit(code)
    """)
    argv = ["compare", target, "--out", "out", "--format", "csv", "--min-time", "0.01"]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv, *flags], cwd=cwd, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    peak = [ln for ln in done.stderr.splitlines() if ln.startswith("PEAK ")]
    assert done.returncode == 0 and peak, done.stderr[-2000:]
    return done, int(peak[-1].split()[1])


@pytest.mark.slow  # the command in a subprocess, a worker refused its second GiB: ~15 s
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA semantics")
def test_a_memory_hog_is_out_of_memory_and_the_command_stays_small(targets: Path) -> None:
    """1 GiB 40 times with --memory-limit 2G: recorded out-of-memory with its size; the
    command's own process never loads the target, and peaks under 1 GB."""
    flags = ("--sizes", "3,4", "--methods", "jax-rev,tape", "--memory-limit", "2G")
    _, peak = _compare("abuse_targets.py:hog", *flags, cwd=targets.parent)
    assert peak < 1e9, f"the command's process peaked at {peak / 1e9:.2f} GB"
    recs = _by_case(read_records(targets.parent / "out" / "results.jsonl"))
    first = recs[(3, "jax-rev")]
    assert first["outcome"] == "out-of-memory" and first["failed_in"] == "primal", first
    assert "MemoryError: Unable to allocate 1.00 GiB" in first["message"]
    assert "abuse_targets.py:" in first["message"]  # the user's line
    assert recs[(3, "tape")]["outcome"] == "skipped"
    assert {recs[(4, m)]["outcome"] for m in ("jax-rev", "tape")} == {"skipped"}
    importers = _importers(targets)
    assert len(importers) == 1  # one process loaded the target: the worker


@pytest.mark.slow  # the command in a subprocess, 2 s of budget: ~12 s
def test_a_hanging_target_times_out_after_the_budget(targets: Path) -> None:
    """A target that sleeps an hour with --budget 2: one timeout within the budget plus the
    worker's start-up (was 300 s, then again for each method), the rest skipped."""
    budget = 2.0
    flags = ("--sizes", "3,4", "--methods", "jax-rev,tape", "--budget", str(budget))
    _compare("abuse_targets.py:sleeper", *flags, cwd=targets.parent)
    recs = _by_case(read_records(targets.parent / "out" / "results.jsonl"))
    first = recs[(3, "jax-rev")]
    assert first["outcome"] == "timeout" and first["failed_in"] == "primal"
    assert first["message"].startswith("primal failed: exceeded the budget of 2 s")
    assert first["wall_s"] < budget + first["worker_start_s"] + 2.0, first
    assert recs[(3, "tape")]["message"].startswith("primal failed: timeout: ")
    assert {recs[(4, m)]["outcome"] for m in ("jax-rev", "tape")} == {"skipped"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
@pytest.mark.parametrize("when", ["at once", "importing JAX"])
def test_a_worker_dies_with_its_parent_while_it_starts(when: str) -> None:
    """kill -9 of the parent right after it started its worker, or while the worker loads
    JAX's libraries: the worker is gone within 2 s."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom diffkit.harness import worker\n"
         "w = worker.Worker()\nprint(w.proc.pid, flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        end = time.time() + 30
        maps = Path(f"/proc/{pid}/maps")
        while when != "at once" and b"jaxlib" not in maps.read_bytes() and time.time() < end:
            time.sleep(0.005)  # until JAX's compiled libraries are being loaded
        assert alive(pid) and (when == "at once" or b"jaxlib" in maps.read_bytes())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        killed = time.time()
        while alive(pid) and time.time() < killed + 2.0:
            time.sleep(0.02)
        assert not alive(pid), "the worker outlived its parent by 2 s"
    finally:
        if parent.poll() is None:
            parent.kill()
        if "pid" in locals() and alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_proc_helpers_see_a_child_start_and_end() -> None:
    """tests/_proc.py, which the kill tests rely on: a running child is alive and listed
    among its parent's children; once it has ended it is neither."""

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(child.pid) and child.pid in children(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid) and child.pid not in children(os.getpid())
