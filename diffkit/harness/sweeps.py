"""Sweeps: many cases, each isolated in a worker process under a time and memory budget,
stored one JSON line per case as it finishes.

Cases run in one worker process, problem by problem, size by size, every method at each
size (so the float64 reference and the compiled primal are made once per size). A case that
exceeds its time budget or the memory limit, or that kills its process, is recorded
(timeout, out-of-memory, error) and a fresh worker takes the remaining cases; once a method
times out or runs out of memory at some size, its larger sizes of that problem are recorded
as skipped. The work shared by a size (loading the user's target, the inputs, the primal, the
float64 reference) runs in the worker under the same budget and limit; when it fails, the
case that ran it records the failure (``failed_in: "primal"``), the other methods of that
size are skipped ("primal failed: ..."), and after a primal timeout or out-of-memory every
larger size of the problem too (:class:`_Stops`). A worker that cannot start (twice) is the
case's error. The user's code never runs in this process.
Each record is appended with flush + fsync, so an interrupted sweep keeps every finished case
and ``resume=True`` skips them; a half-written last line is ignored on reading.

A results file is never deleted or truncated: ``resume=False`` moves an existing one aside
(``results.jsonl`` -> ``results.<timestamp>.jsonl``); a lock (``<file>.lock``, ``flock``)
makes a second sweep into the same file at the same time fail at once; every record names
the run that measured it (``run``) and the ``budget`` and ``memory_limit`` it ran under, so
that a resumed sweep retries timeouts, skipped sizes, out-of-memory and crashed cases when it
is given more time or memory (or ``retry_failed=True``).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from diffkit._core.errors import DiffkitError
from diffkit._core.registry import names
from diffkit.harness import executors
from diffkit.harness import worker as workers
from diffkit.harness.families import Problem, get_problem, split_target
from diffkit.harness.gradbench import suite as gradbench_suite
from diffkit.harness.measure import (
    ESTIMATED,
    PRIMAL_FAILED,
    finish_record,
    harness_record,
    new_record,
    resolve_method,
    run_case,
)
from diffkit.harness.record import (
    ERROR,
    OUT_OF_MEMORY,
    RETRYABLE,
    SKIPPED,
    SPARSE,
    TIMEOUT,
    Record,
)
from diffkit.harness.results import Results, read_records

try:
    import fcntl
except ImportError:  # not on Windows: no lock there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "QUICK_SIZES",
    "SPARSE_SIZES",
    "compare",
    "gradbench_suite",
    "quick_suite",
    "sparse_suite",
    "sweep",
    "with_sparse",
]

Progress = Callable[[Record, int, int], None]

#: The quick suite (``diffkit compare`` without arguments): sizes by problem, chosen to
#: finish within 30 s on 2 idle cores (benchmarks/bench_compare_default.py).
QUICK_SIZES: dict[str, list[int]] = {
    "tiny-net": [9],
    "mlp": [10, 100, 1_000],
    "wide-output": [1024],
}
#: Methods run by the quick suite at these sizes only: the estimators at the largest MLP,
#: where their noise shows (each case also measures the estimate's quality over 100 keys,
#: seconds apiece). symbolic runs every size: at the array level (its default) its work does
#: not swell with n (``symbolic@level=scalar`` does: give it a small ``--sizes``).
QUICK_SMALL: dict[str, dict[str, list[int]]] = {
    "forward-grad": {"mlp": [1_000]},
    "spsa": {"mlp": [1_000]},
}


def quick_suite(methods: Sequence[str]) -> dict[str, Any]:
    """The quick suite for ``methods``, as keyword arguments of :func:`sweep`.

    Example:
        >>> quick_suite(["tape", "spsa"])["method_sizes"]
        {'spsa': {'mlp': [1000]}}
    """
    return {
        "problems": list(QUICK_SIZES),
        "sizes": QUICK_SIZES,
        "methods": list(methods),
        "method_sizes": {m: QUICK_SMALL[m] for m in methods if m in QUICK_SMALL},
    }


#: ``diffkit compare --sparse`` without ``--problem``: problems with sparse Jacobians, at
#: sizes where every method's dense Jacobian still takes under a second (the crossover shows).
SPARSE_SIZES: dict[str, list[int]] = {
    "brusselator-2d": [8, 16, 32],
    "pde-1d": [1_000],
    "ba": [100],
    "ht": [100],
    "rosenbrock-ext-hessian": [1_000],
}


def with_sparse(methods: Sequence[str]) -> list[str]:
    """Each method, then its compressed Jacobian (``name+sparse``) where it has one (not
    the stochastic estimators: their passes are random directions, not seeds).

    Example:
        >>> with_sparse(["jax-fwd", "spsa"])
        ['jax-fwd', 'jax-fwd+sparse', 'spsa']
    """
    out: list[str] = []
    for m in methods:
        out.append(m)
        if not m.endswith(SPARSE) and resolve_method(m)[0].mode != "stochastic":
            out.append(m + SPARSE)
    return list(dict.fromkeys(out))


def sparse_suite(methods: Sequence[str]) -> dict[str, Any]:
    """``diffkit compare --sparse`` on its built-in problems, as keyword arguments of
    :func:`sweep`: each method dense and compressed (:func:`with_sparse`), side by side.

    Example:
        >>> sparse_suite(["jax-rev"])["methods"]
        ['jax-rev', 'jax-rev+sparse']
    """
    return {"problems": list(SPARSE_SIZES), "sizes": SPARSE_SIZES, "methods": with_sparse(methods)}


class _Appender:
    """Appends records as JSON lines, each flushed and fsynced; repairs a torn last line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a+b")
        self.file.seek(0, os.SEEK_END)
        if self.file.tell() > 0:
            self.file.seek(-1, os.SEEK_END)
            if self.file.read(1) != b"\n":
                self.file.write(b"\n")

    def append(self, rec: Record) -> None:
        self.file.write((json.dumps(rec) + "\n").encode())
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


class _Lock:
    """An exclusive ``flock`` on ``<path>.lock``, refused at once when another run holds it.
    The lock file stays (removing it would let a third run lock a different file)."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        if fcntl is None:
            return
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise DiffkitError(
                f"{path} is being written by another run ({holder}); wait for it to finish "
                "or write elsewhere (--out)"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()

    def release(self) -> None:
        self.file.close()  # closing the file releases the flock


def run_id() -> str:
    """A new run's id: UTC time and process id, e.g. ``20250101T120000Z-4242``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{os.getpid()}"


def move_aside(path: Path) -> Path | None:
    """Rename an existing, non-empty ``path`` to ``<stem>.<timestamp><suffix>`` (never over
    another file) and return the new name; None if there was nothing to move."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        target = path.with_name(f"{path.stem}.{stamp}{f'-{k}' if k else ''}{path.suffix}")
        if not target.exists():
            path.rename(target)
            return target
    raise DiffkitError(f"cannot move {path} aside: too many older result files next to it")


def _retry(rec: Record, budget: float, memory_limit: float | None, force: bool) -> bool:
    """Whether a stored record should be measured again by a resumed sweep: a timeout (or a
    size skipped after one) given a larger budget, an out-of-memory (or a size skipped after
    one) given a limit over 10% larger (the default limit moves with the memory available), a
    crash of the worker; all of them with ``force``; a worker that failed to start, always.
    Ok, unsupported and error are kept."""
    if rec.get("failed_in") == "startup":  # nothing of the case ran
        return True
    crashed = rec["outcome"] == ERROR and rec.get("outcome_by") == "harness"
    if rec["outcome"] not in RETRYABLE and not crashed:
        return False
    if force:
        return True
    cause = rec["outcome"]
    if cause == SKIPPED:  # the outcome it was skipped after (read from older records' message)
        cause = rec.get("cause") or (
            OUT_OF_MEMORY if OUT_OF_MEMORY in str(rec.get("message")) else TIMEOUT
        )
    old_budget, old_limit = rec.get("budget"), rec.get("memory_limit")
    more_time = isinstance(old_budget, int | float) and budget > old_budget
    more_memory = isinstance(old_limit, int | float) and (
        memory_limit is None or memory_limit > 1.1 * old_limit
    )
    if cause == TIMEOUT:
        return more_time
    if cause == OUT_OF_MEMORY:
        return more_memory
    return more_time or more_memory  # a crash (or a primal that failed): either may help


def _as_problems(problems: str | Problem | Iterable[str | Problem]) -> list[Problem]:
    if isinstance(problems, str | Problem):
        problems = [problems]
    return [get_problem(p) for p in problems]


Sizes = Sequence[int] | dict[str, Sequence[int]]


def _plan(
    problems: list[Problem],
    sizes: Sizes | None,
    methods: list[str],
    dtypes: list[str],
    seed: int,
    method_sizes: dict[str, Sizes] | None = None,
) -> Iterator[tuple[Problem, str, list[Record]]]:
    """Cases grouped by (problem, dtype), sizes ascending, at each size every method that runs
    there (all of them, except those given their own sizes in ``method_sizes``)."""

    def chosen(prob: Problem, spec: Sizes | None, own: bool) -> set[int]:
        picked = spec.get(prob.name) if isinstance(spec, dict) else spec
        if own and not picked:  # a method of method_sizes without sizes for this problem
            return set()
        if len(prob.sizes) == 1:  # a fixed-size problem: one case per method
            return {prob.sizes[0]}
        return {int(s) for s in (picked or prob.sizes)}

    own = method_sizes or {}
    for prob in problems:
        by_method = {
            m: chosen(prob, own[m], True) if m in own else chosen(prob, sizes, False)
            for m in methods
        }
        all_sizes = sorted(set().union(*by_method.values()))
        for dtype in dtypes:
            yield (
                prob,
                dtype,
                [
                    new_record(prob, s, m, dtype, seed)
                    for s in all_sizes
                    for m in methods
                    if s in by_method[m]
                ],
            )


def sweep(
    problems: str | Problem | Iterable[str | Problem],
    sizes: Sizes | None = None,
    methods: Sequence[str] | None = None,
    dtypes: str | Sequence[str] = "float32",
    *,
    method_sizes: dict[str, Sizes] | None = None,
    out: str | os.PathLike[str] | None = None,
    budget: float = 60.0,
    resume: bool = True,
    progress: Progress | None = None,
    min_time: float = 0.2,
    seed: int = 0,
    accuracy: bool = True,
    memory_limit: float | str | None = "auto",
    isolate: bool = True,
    retry_failed: bool = False,
    executor: Any = "local",
) -> Results:
    """Measure every (problem, size, method, dtype) case and return the :class:`Results`.

    * ``problems``: names, or :class:`Problem` objects from ``get_problem`` (with options);
      ``sizes``: one list for every problem, a dict by problem name, or None for each
      problem's default sizes; ``methods``: registered names or ``"module:Class"`` paths
      (default: every registered differentiator); ``dtypes``: "float32" and/or "float64";
      ``method_sizes``: sizes of their own for some methods (a list, or a dict by problem
      name: a problem missing from it gets no case of that method), e.g. to keep a method
      whose cost swells with n to small sizes.
    * ``out``: the JSON-lines file (default: a new temporary file); ``resume``: skip the
      cases already stored there, except timeouts, skipped sizes, out-of-memory and crashes
      when ``budget`` or ``memory_limit`` is larger than they were recorded under, or
      ``retry_failed``; ``resume=False`` moves an existing file aside (never deletes it).
      A second sweep into the same file while one runs fails at once.
    * ``budget``: seconds per case for the method's own work (trace, compile, first call,
      timing; the primal and reference shared by a size are timed apart); ``memory_limit``:
      bytes per worker ("auto": 70% of the memory available now; None: no limit), enforced
      by the worker (``RLIMIT_DATA``) and by the parent (resident memory); a derivative
      whose traced program is estimated to need more is recorded ``out-of-memory`` unrun.
    * ``progress(record, index, total)`` is called after each case.
    * ``isolate=False`` runs the cases in this process (no time or memory budget).
    * ``executor``: ``"local"`` (this machine's worker process) or ``"ray"`` (or a
      :class:`~diffkit.harness.executors.RayExecutor`): the cases as Ray tasks, records alike.

    Example:
        >>> import diffkit as dk
        >>> res = dk.harness.sweep("rosenbrock", [10, 100], ["jax-rev"], min_time=0.01,
        ...                        isolate=False)
        >>> [(r["n"], r["outcome"]) for r in res]
        [(10, 'ok'), (100, 'ok')]
    """
    # (Over 50 lines only by its docstring: the body checks, plans and hands over.)
    memory_limit = _checked_limits(sizes, budget, memory_limit)
    probs = _as_problems(problems)
    methods = list(methods) if methods is not None else names()
    dtypes = [dtypes] if isinstance(dtypes, str) else list(dtypes)
    _check_cases(probs, methods, dtypes, method_sizes, isolate)
    groups = list(_plan(probs, sizes, methods, dtypes, seed, method_sizes))
    if out is None:
        fd, out = tempfile.mkstemp(prefix="diffkit-sweep-", suffix=".jsonl")
        os.close(fd)
    path = Path(out)
    if path.is_dir():
        raise DiffkitError(
            f"sweep: out={str(path)!r} is a directory; give a file in it, e.g. "
            f"{str(path / 'results.jsonl')!r}"
        )
    lock = _Lock(path)
    try:
        return _sweep(
            groups, path, budget, resume, progress, min_time, seed, accuracy,
            memory_limit, isolate, retry_failed, executor,
        )  # fmt: skip
    finally:
        lock.release()


def _checked_limits(sizes: Any, budget: Any, memory_limit: Any) -> float | None:
    """The memory limit in bytes ("auto" resolved); one-line errors for bad arguments."""
    if isinstance(sizes, str | bytes):
        raise DiffkitError(
            f"sweep: sizes must be a list of ints (or a dict by problem), got the string "
            f"{sizes!r}; write e.g. sizes=[10, 100]"
        )
    if not isinstance(budget, int | float) or not budget > 0:
        raise DiffkitError(f"sweep: budget must be a positive number of seconds, got {budget!r}")
    if memory_limit == "auto":
        return workers.default_memory_limit()
    if memory_limit is not None and (
        not isinstance(memory_limit, int | float) or not memory_limit > 0
    ):
        raise DiffkitError(
            f"sweep: memory_limit must be a positive number of bytes, 'auto' or None, "
            f"got {memory_limit!r}"
        )
    return memory_limit


def _check_cases(
    probs: list[Problem],
    methods: list[str],
    dtypes: list[str],
    method_sizes: dict[str, Sizes] | None,
    isolate: bool,
) -> None:
    """One-line errors, before anything runs, for cases that cannot be measured."""
    for method in methods:
        resolve_method(method)  # fail early on an unknown name
    for dtype in dtypes:
        if dtype not in ("float32", "float64"):
            raise DiffkitError(f"sweep: dtype must be float32 or float64, got {dtype!r}")
    if isolate:
        for prob in probs:
            if get_problem(prob.name).builder is not prob.builder or any(
                callable(v) for v in prob.options.values()
            ):
                raise DiffkitError(
                    f"sweep: problem {prob.name!r} cannot be rebuilt in a worker process; "
                    "register it (or give the user function as 'module:function'), or pass "
                    "isolate=False"
                )
    for prob in probs:
        target = prob.options.get("target") if prob.name == "user" else None
        if isinstance(target, str):
            check_target(target)
    unknown = set(method_sizes or {}) - set(methods)
    if unknown:
        raise DiffkitError(
            f"sweep: method_sizes names {', '.join(sorted(unknown))}, not among the methods"
        )


def check_target(target: str) -> None:
    """A one-line error for a user target that cannot be found, without importing it: the
    user's code runs only in the worker, under the case's time and memory budget (the
    worker reports the errors of loading it, such as a missing function).

    Example:
        >>> try:
        ...     check_target("nowhere.py:f")
        ... except DiffkitError as exc:
        ...     print(str(exc).split(" (")[0])
        user problem: cannot load 'nowhere.py:f': file not found
    """
    where, _, path = split_target(target)
    if path is not None:
        return
    top = where.partition(".")[0]  # finding a submodule would import its package
    cwd = [os.getcwd()]  # the worker looks there too (families.resolve_target)
    found = top in sys.modules or importlib.util.find_spec(top) or PathFinder.find_spec(top, cwd)
    if not found:
        raise DiffkitError(
            f"user problem: cannot load {target!r}: module {top!r} not found (from the "
            "working directory or the installed packages); for a file write path/to/file.py:name"
        )


def _sweep(
    groups: list[tuple[Problem, str, list[Record]]],
    path: Path,
    budget: float,
    resume: bool,
    progress: Progress | None,
    min_time: float,
    seed: int,
    accuracy: bool,
    memory_limit: float | None,
    isolate: bool,
    retry_failed: bool,
    executor: Any = "local",
) -> Results:
    if not resume:
        move_aside(path)
    stored = read_records(path, strict=True) if path.exists() else []
    latest = {r["key"]: r for r in stored}  # the last record of a case wins
    done = {k: r for k, r in latest.items() if not _retry(r, budget, memory_limit, retry_failed)}
    run = run_id()
    total = sum(len(cases) for *_, cases in groups)
    records: list[Record] = []
    pending = any(
        finish_record(c.copy(), ERROR)["key"] not in done for *_, cases in groups for c in cases
    )
    remote = executors.executor_of(executor)
    if remote is not None:  # another engine runs the cases (harness/executors.py)
        settings: dict[str, Any] = {
            "budget": budget,
            "memory_limit": memory_limit,
            "min_time": min_time,
        }
        settings.update(accuracy=accuracy, run=run)
        writer = _Appender(path)
        try:
            found = executors.remote_sweep(
                remote, groups, done, writer.append, _skipped, settings, progress
            )
        finally:
            writer.close()
        return Results(found, path=path)
    runner = _Runner(isolate and pending, budget, memory_limit, min_time, seed, accuracy)
    writer = _Appender(path)
    stops = _Stops()
    try:
        for prob, _, cases in groups:
            for case in cases:
                rec = finish_record(case.copy(), ERROR)
                if rec["key"] in done:
                    rec = done[rec["key"]]
                else:
                    cause = stops.cause(case)
                    rec = _skipped(case, cause) if cause else runner.run(prob, case, isolate)
                    if rec.get("failed_in") == "setup":  # bad input, e.g. no such function
                        raise DiffkitError(rec["message"].removeprefix("DiffkitError: "))
                    rec.update({"run": run, "budget": budget, "memory_limit": memory_limit})
                    writer.append(rec)
                stops.note(rec)
                records.append(rec)
                if progress is not None:
                    progress(rec, len(records), total)
    finally:
        runner.close()
        writer.close()
    return Results(records, path=path)


class _Stops:
    """The cases a sweep skips after a failure: every method's larger sizes after its own
    timeout or out-of-memory; after a failed primal (the work shared by a size), the other
    methods of that size and, when it ran out of time or memory, every larger size of that
    problem and dtype (a larger primal only takes longer)."""

    def __init__(self) -> None:
        self.causes: dict[tuple[Any, ...], Record] = {}

    @staticmethod
    def _keys(rec: Record) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
        group = (rec["problem"], json.dumps(rec["problem_options"]), rec["dtype"])
        return (*group, rec["method"]), (*group, rec["size"]), group

    def note(self, rec: Record) -> None:
        """Take note of a finished (or stored) case."""
        series, size, group = self._keys(rec)
        stopped = rec["outcome"] in (TIMEOUT, OUT_OF_MEMORY)
        if stopped:
            self.causes.setdefault(series, rec)
        if rec.get("failed_in") == "primal":
            self.causes.setdefault(size, rec)
            if stopped:
                self.causes.setdefault(group, rec)

    def cause(self, case: Record) -> Record | None:
        """The record a case is skipped after, or None to run it."""
        series, size, group = self._keys(case)
        return self.causes.get(size) or self.causes.get(group) or self.causes.get(series)


class _Runner:
    """Measures cases: in a worker process (replaced when it dies or is killed), or in this
    process sharing what the methods of one size share."""

    def __init__(
        self,
        start: bool,
        budget: float,
        memory_limit: float | None,
        min_time: float,
        seed: int,
        accuracy: bool,
    ) -> None:
        self.worker = workers.take() if start else None  # starts in the background
        self.budget, self.memory_limit = budget, memory_limit
        self.min_time, self.seed, self.accuracy = min_time, seed, accuracy
        self.shared: dict[str, Any] = {}

    def run(self, prob: Problem, case: Record, isolate: bool) -> Record:
        if not isolate:
            return run_case(
                prob, case["size"], case["method"], case["dtype"], seed=self.seed,
                min_time=self.min_time, accuracy=self.accuracy, reference_cache=self.shared,
                memory_limit=self.memory_limit,
            )  # fmt: skip
        self.worker = self.worker or workers.take()
        rec = _isolated(
            self.worker, case, self.budget, self.memory_limit, self.min_time, self.accuracy
        )
        # killed or died, or out of memory (what it allocated may still be held): restart
        ran_out = rec["outcome"] == OUT_OF_MEMORY and not rec["message"].startswith(ESTIMATED)
        if self.worker.proc.poll() is not None or ran_out:
            self.close()
        return rec

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


def _isolated(
    worker: workers.Worker,
    case: Record,
    budget: float,
    memory_limit: float | None,
    min_time: float,
    accuracy: bool,
) -> Record:
    """Run a case in the worker; a record from the parent when the worker could not answer."""
    fresh = not getattr(worker, "used", False)
    worker.used = True  # type: ignore[attr-defined]
    started = time.perf_counter()
    request = {
        "id": 0,
        "problem": case["problem"],
        "problem_options": case["problem_options"],
        "size": case["size"],
        "method": case["method"],
        "dtype": case["dtype"],
        "seed": case["seed"],
        "min_time": min_time,
        "accuracy": accuracy,
    }
    answer = worker.run(request, budget, memory_limit)
    rec = answer.record
    if rec is None:
        rec = harness_record(case, *answer[1:], time.perf_counter() - started)
        worker.kill()
    rec["wall_s"] = time.perf_counter() - started
    rec["worker_start_s"] = worker.startup_s if fresh else None
    return rec


def _skipped(case: Record, cause: Record) -> Record:
    """The record of ``case``, skipped after ``cause`` (see :class:`_Stops`)."""
    if cause.get("failed_in") != "primal":
        message = f"skipped: {cause['outcome']} at size {cause['size']}"
    elif cause["size"] == case["size"]:
        reason = cause["message"].removeprefix(PRIMAL_FAILED)
        message = f"{PRIMAL_FAILED}{cause['outcome']}: {reason}"
        case = {**case, "n": cause.get("n"), "m": cause.get("m")}
    else:
        message = f"skipped: the primal's {cause['outcome']} at size {cause['size']}"
    rec = finish_record(case.copy(), SKIPPED, message)
    rec["cause"] = cause["outcome"]
    return rec


def compare(
    f: Callable[..., Any],
    *args: Any,
    methods: Sequence[str] | None = None,
    min_time: float = 0.1,
    accuracy: bool = True,
    name: str | None = None,
) -> Results:
    """Every method on the user's own ``f`` at ``args`` (derivatives for ``args[0]``:
    the gradient of a scalar output, else the Jacobian), measured in this process.

    No time budget applies here: use :func:`sweep` with a ``"module:function"`` user
    problem to isolate cases that may hang.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> res = dk.harness.compare(jnp.sin, jnp.ones(3), methods=["jax-fwd"], min_time=0.01)
        >>> res[0]["quantity"], res[0]["accurate"]
        ('jacobian', True)
    """
    import jax.numpy as jnp
    from jax.tree_util import tree_leaves

    floats = [jnp.asarray(a).dtype for a in tree_leaves(args)]
    dtype = "float64" if any(d == jnp.float64 for d in floats) else "float32"
    label = name if name else getattr(f, "__name__", "function")
    prob = Problem(label, f"the user's function {label}", "fixed", (1,), lambda s, d, r: (f, args))
    methods = list(methods) if methods is not None else names()
    shared: dict[str, Any] = {}  # the reference and the compiled primal, for every method
    records = [
        run_case(
            prob, 1, method, dtype, min_time=min_time, accuracy=accuracy, reference_cache=shared
        )
        for method in methods
    ]
    return Results(records)
