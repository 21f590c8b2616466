"""Measuring one case: problem x size x differentiator x dtype, on the present backend.

:func:`run_case` separates *prepare* (trace, compile, first call) from *run* (steady state:
warm-up, ``jax.block_until_ready`` before the clock stops, samples until a minimum measuring
time, min / median / IQR; a derivative whose first call takes ``SLOW_CALL`` seconds or more is
timed by that one call), times the primal the same way and interleaved with the derivative
(so the derivative/primal ratio is measured side by side), reads XLA's compiled memory
analysis and the process's peak resident memory, and compares the result with a float64
reference (``jax.grad`` / ``jax.jacrev`` under ``jax.enable_x64(True)``, cross-checked with
one ``jax.jvp``). Failures become an ``outcome`` with a one-line message.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from diffkit._core.errors import DiffkitError
from diffkit._core.interface import Differentiator, safe_compile_options
from diffkit._core.registry import resolve
from diffkit._core.types import Array
from diffkit.harness.estimators import BIAS_Z, quality
from diffkit.harness.families import Instance, Problem, get_problem
from diffkit.harness.record import (
    ERROR,
    OK,
    OUTCOMES,
    SKIPPED,
    SPARSE,
    Record,
    case_key,
    format_bytes,
    is_out_of_memory,
    summarize_error,
)
from diffkit.harness.tolerance import rejudge

__all__ = [
    "OUTCOMES",
    "SPARSE",
    "TOLERANCE",
    "case_key",
    "classify",
    "metadata",
    "pattern_cells",
    "resolve_method",
    "run_case",
]

#: Tolerance on rho against the float64 reference, by dtype and kind of method: AD and
#: symbolic methods are exact up to rounding; finite differences carry truncation error.
#: Stochastic methods: the floor added to BIAS_Z standard errors of their bias.
TOLERANCE = {
    ("float64", "exact"): 1e-12,
    ("float64", "numerical"): 1e-6,
    ("float32", "exact"): 1e-4,
    ("float32", "numerical"): 1e-2,
}


def tolerance(mode: str, dtype: str) -> float:
    """The pass/fail tolerance on rho for a method of this ``mode`` in ``dtype``.

    Example:
        >>> from diffkit.harness.measure import tolerance
        >>> tolerance("reverse", "float64"), tolerance("numerical", "float32")
        (1e-12, 0.01)
    """
    return TOLERANCE[(dtype, "numerical" if mode in ("numerical", "stochastic") else "exact")]


def classify(exc: BaseException) -> tuple[str, str]:
    """An exception as ``(outcome, one-line message)``. An exception class may declare its
    outcome with an ``outcome`` attribute; otherwise NotImplementedError is "unsupported",
    MemoryError or an allocation failure of the runtime (``record.is_out_of_memory``:
    RESOURCE_EXHAUSTED, "Out of memory", ``std::bad_alloc``) "out-of-memory", TimeoutError
    or an error whose class name mentions a budget "timeout", anything else "error". The
    message keeps the exception's last line where its text holds a traceback (an error
    raised in a callback) and names the innermost frame of the user's code.

    Example:
        >>> from diffkit.harness.measure import classify
        >>> classify(NotImplementedError("no rule for cumsum\\nmore"))
        ('unsupported', 'NotImplementedError: no rule for cumsum')
    """
    frames = [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]
    message = f"{type(exc).__name__}: {summarize_error(str(exc), frames)}"[:300]
    declared = getattr(exc, "outcome", None)
    if declared in OUTCOMES:
        return declared, message.partition(": ")[2] if getattr(exc, "plain", False) else message
    if isinstance(exc, NotImplementedError):
        return "unsupported", message
    if isinstance(exc, MemoryError) or is_out_of_memory(str(exc)):
        return "out-of-memory", message
    if isinstance(exc, TimeoutError) or "budget" in type(exc).__name__.lower():
        return "timeout", message
    return "error", message


#: The message's start of a derivative refused by its estimated footprint (never run).
ESTIMATED = "out-of-memory (estimated)"


class EstimatedOutOfMemory(MemoryError):
    """A derivative whose estimated footprint exceeds the memory limit (never run)."""

    outcome = "out-of-memory"
    plain = True  # the message says it all: recorded without the class name


class PrimalFailed(Exception):
    """The work shared by the methods of a size (loading and building the problem, the
    primal, the float64 reference) failed: ``outcome`` is the failure's for the case that
    ran it, and ``skipped`` for the later methods of that size (the failure is kept in the
    ``reference_cache``)."""

    plain = True  # the message says it all

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


#: The prefix of the message of a case whose primal (the work shared by its size) failed.
PRIMAL_FAILED = "primal failed: "


def footprint(jaxpr: Any) -> int:
    """Bytes of a (closed) jaxpr's inputs and every intermediate, none freed: an upper
    estimate of what running it needs. A sub-program (a loop body, a branch) counts once.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from diffkit.harness.measure import footprint
        >>> footprint(jax.make_jaxpr(lambda x: jnp.sin(x) * 2)(jnp.ones(1000)))
        12000
    """
    inner = getattr(jaxpr, "jaxpr", jaxpr)

    def size(v: Any) -> int:
        aval = getattr(v, "aval", None)
        shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
        if shape is None or dtype is None:
            return 0
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize  # PRNG keys too

    total = sum(size(v) for v in inner.invars)
    for eqn in inner.eqns:
        total += sum(size(v) for v in eqn.outvars)
        subs = [p for v in eqn.params.values() for p in (v if isinstance(v, tuple) else (v,))]
        total += max(
            (footprint(p) for p in subs if hasattr(p, "eqns") or hasattr(p, "jaxpr")), default=0
        )
    return total


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@functools.cache
def metadata() -> dict[str, Any]:
    """Backend, device and versions of the running process.

    Example:
        >>> from diffkit.harness.measure import metadata
        >>> sorted(metadata())[:3]
        ['backend', 'cpu_count', 'device_count']
    """
    from diffkit import __version__

    device = jax.devices()[0]
    # jax's Config declares no attribute per option (they are made at run time)
    precision = jax.config.jax_default_matmul_precision  # type: ignore[attr-defined]
    return {
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "device_count": jax.device_count(),
        "device_kind": device.device_kind,
        "diffkit": __version__,
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "matmul_precision": precision or "default",
        "machine": platform.machine(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sympy": _version("sympy"),
    }


# ------------------------------------------------------------------------- timing


def _stats(samples: list[float]) -> dict[str, float | int]:
    s = np.asarray(samples)
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    return {"min": float(s.min()), "median": float(med), "iqr": float(q3 - q1), "n": len(s)}


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    min_time: float = 0.2,
    max_time: float | None = None,
) -> dict[str, dict[str, float | int]]:
    """Steady-state timings of several thunks, measured in alternating bursts so that drift
    of a shared machine hits them alike. Each call is synchronised with
    ``jax.block_until_ready``; a thunk is done once it has ``min_time`` seconds of samples and
    at least 3 of them, or ``max_time`` (default ``max(2, 10 * min_time)``) seconds.

    Example:
        >>> from diffkit.harness.measure import time_interleaved
        >>> t = time_interleaved({"noop": lambda: None}, min_time=0.01)
        >>> t["noop"]["n"] >= 3 and t["noop"]["min"] <= t["noop"]["median"]
        True
    """
    max_time = max(2.0, 10 * min_time) if max_time is None else max_time
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up
        jax.block_until_ready(f())
    burst = min_time / 5
    while True:
        pending = [
            k
            for k in fns
            if not (sum(samples[k]) >= min_time and len(samples[k]) >= 3)
            and sum(samples[k]) < max_time
        ]
        if not pending:
            return {k: _stats(v) for k, v in samples.items()}
        for k in pending:
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                jax.block_until_ready(fns[k]())
                samples[k].append(time.perf_counter() - t0)
                if time.perf_counter() - start >= burst or len(samples[k]) >= 100_000:
                    break


# ------------------------------------------------------------------------- memory


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 resets VmHWM, the peak resident set size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (since the last reset, on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _xla_memory(compiled: Any) -> dict[str, int | None]:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        mem = None
    if mem is None:
        return {"temp": None, "total": None}
    total = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
    )
    peak = getattr(mem, "peak_memory_in_bytes", 0) or 0
    return {"temp": int(mem.temp_size_in_bytes), "total": int(max(total, peak))}


# ---------------------------------------------------------------------- accuracy


def _flat64(tree: Any) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0], dtype=np.float64)


#: Seconds from which one derivative call is timed once, by its first call: the one-time
#: costs of a first call (allocation, thread start) are a small share of such a call.
SLOW_CALL = 1.0

#: XLA options for code that is run once and never timed (the float64 reference).
_QUICK_COMPILE: dict[str, Any] = {"xla_backend_optimization_level": 0}  # (jax says str | bool)


def reference(inst: Instance) -> tuple[np.ndarray, float]:
    """The float64 derivative of ``inst`` at its own inputs (``jax.grad`` or
    ``jax.jacrev``), flattened, and a cross-check by forward mode: rho between ``J v`` from
    one ``jax.jvp`` along a random direction ``v`` and the reference contracted with ``v``
    (block by block: per output leaf, one block per leaf of ``args[0]``, a pytree or not)."""
    rev = jax.grad if inst.quantity == "grad" else jax.jacrev
    n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(inst.args[0]))
    v = np.random.default_rng(1).standard_normal(n)

    def both(args: tuple[Any, ...], v: Array) -> tuple[Any, Any, Any]:  # one compilation,
        args = jax.tree_util.tree_map(  # which also casts: eager casts would compile apart
            lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            args,
        )
        x, unravel = ravel_pytree(args[0])
        fun = lambda x: inst.fun(unravel(x), *args[1:])  # noqa: E731
        ref = rev(inst.fun)(*args)
        v_leaves = jax.tree_util.tree_leaves(unravel(v))
        out_tree = jax.tree_util.tree_structure(jax.eval_shape(inst.fun, *args))
        per_out = out_tree.flatten_up_to(ref)  # type: ignore[attr-defined]  # no jaxlib stub
        leaves = [jax.tree_util.tree_leaves(t) for t in per_out]
        ref_v = [sum(jnp.tensordot(j, w, w.ndim) for j, w in zip(js, v_leaves, strict=True))
                 for js in leaves]  # fmt: skip
        return ref, jax.jvp(fun, (x,), (v,))[1], ref_v

    with jax.enable_x64(True):
        # Never timed, so compiled with less optimisation (cost: benchmarks/README.md).
        compiled = jax.jit(both).lower(inst.args, v).compile(_QUICK_COMPILE)
        ref_tree, jv, ref_v = compiled(inst.args, v)
        check = _rho(_flat64(jv), _flat64(ref_v))[0]
        return _flat64(ref_tree), check  # flattened in x64 scope: outside, JAX would round


def _rho(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    r = np.abs(x - y) / np.maximum(1.0, np.abs(x) + np.abs(y))
    r = np.where(np.isnan(r), np.inf, r)
    return (float(r.max()), float(r.mean())) if r.size else (0.0, 0.0)


# --------------------------------------------------------------------------- cases


def _finite(x: float | None) -> float | None:
    return x if x is None or np.isfinite(x) else None


def resolve_method(spec: str, **options: Any) -> tuple[Differentiator, bool]:
    """The differentiator a case's method names, and whether the case measures its
    compressed Jacobian (a name ending in :data:`SPARSE`).

    Example:
        >>> d, compressed = resolve_method("jax-fwd+sparse")
        >>> d.name, compressed
        ('jax-fwd', True)
    """
    base = spec.removesuffix(SPARSE)
    d = resolve(base, **options)
    if base != spec and d.mode == "stochastic":
        raise DiffkitError(
            f"method {spec!r}: a stochastic estimate is not compressed by colouring (its "
            f"passes are random directions, not seeds); measure {base} dense, and +sparse "
            "on an exact method (jax-fwd, jax-rev, dual, tape, fd, symbolic)"
        )
    return d, base != spec


def pattern_cells(pattern: Any, grid: int = 48) -> dict[str, Any]:
    """A sparsity pattern drawn small, for the report page: its ``shape``, the ``grid`` of
    at most ``grid x grid`` blocks it is cut into, and ``cells``: ``[block row, block
    column, nonzeros in it]`` for each block holding any (a few hundred numbers, whatever
    the size).

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> pattern_cells(sp.csr_array(np.eye(4, dtype=bool)), grid=2)
        {'shape': [4, 4], 'grid': [2, 2], 'cells': [[0, 0, 2], [1, 1, 2]]}
    """
    coo = pattern.tocoo()
    (m, n), (gr, gc) = pattern.shape, (min(pattern.shape[0], grid), min(pattern.shape[1], grid))
    rows, cols = (
        coo.row.astype(np.int64) * gr // max(m, 1),
        coo.col.astype(np.int64) * gc // max(n, 1),
    )
    block = rows * gc + cols
    keys, counts = np.unique(block, return_counts=True)
    cells = [[int(k // gc), int(k % gc), int(c)] for k, c in zip(keys, counts, strict=True)]
    return {"shape": [int(m), int(n)], "grid": [int(gr), int(gc)], "cells": cells}


def new_record(
    problem: Problem,
    size: int | None,
    method: str,
    dtype: str,
    seed: int = 0,
    method_options: dict[str, Any] | None = None,
) -> Record:
    """The fields that name a case, before it is measured."""
    return {
        "problem": problem.name,
        "problem_options": _jsonable(problem.options),
        "size": int(size if size is not None else problem.sizes[0]),
        "method": method,
        "method_options": method_options or {},
        "dtype": dtype,
        "seed": seed,
        "n": None,
        "m": None,
        "outcome": ERROR,
        "message": "",
    }


def finish_record(rec: Record, outcome: str, message: str = "") -> Record:
    """Stamp a record with its outcome, the date, the metadata and its key."""
    rec.update({"outcome": outcome, "message": message})
    rec["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rec["meta"] = dict(metadata())
    rec["key"] = case_key(rec)
    return rec


def harness_record(
    case: Record, outcome: str, message: str, start: dict[str, Any], stage: str, case_s: float
) -> Record:
    """The record of a case whose worker could not answer (killed at the time budget or the
    memory limit, died, or never started), made by the parent: ``start`` is the worker's
    start message (n and m) if the method's own work began, ``stage`` where the case was
    (``"startup"``, ``"primal"``: the work shared by its size, ``"method"``)."""
    rec = case.copy()
    rec.update({"n": start.get("n"), "m": start.get("m"), "case_s": case_s})
    if stage in ("startup", "primal"):
        rec["failed_in"] = stage
    if stage == "primal":
        message = PRIMAL_FAILED + message
    rec = finish_record(rec, outcome, message)
    rec["outcome_by"] = "harness"
    return rec


def run_case(
    problem: str | Problem,
    size: int | None = None,
    method: str = "jax-rev",
    dtype: str = "float32",
    *,
    seed: int = 0,
    min_time: float = 0.2,
    method_options: dict[str, Any] | None = None,
    problem_options: dict[str, Any] | None = None,
    accuracy: bool = True,
    reference_cache: dict[Any, Any] | None = None,
    on_start: Callable[[Record], None] | None = None,
    memory_limit: float | None = None,
) -> Record:
    """Measure one case in this process and return its record (a JSON-able dict). Errors of
    the differentiator become ``outcome`` and ``message``; nothing is raised. ``on_start``
    is called with the record (n and m known) when the work shared by every method of this
    size (instance, compiled primal, float64 reference) is done and the method's begins.
    A derivative whose traced program needs more than ``memory_limit`` bytes (the sum of
    its intermediates, :func:`footprint`) ends ``out-of-memory`` without being compiled or run.

    Example:
        >>> import diffkit as dk
        >>> rec = dk.harness.run_case("rosenbrock", 10, "jax-rev", min_time=0.01)
        >>> rec["outcome"], rec["n"], rec["accurate"]
        ('ok', 10, True)
    """
    started = time.perf_counter()
    _reset_peak_rss()
    prob = get_problem(problem, **(problem_options or {}))
    rec = new_record(prob, size, method, dtype, seed, method_options)
    outcome, message = OK, ""
    try:
        with jax.enable_x64(dtype == "float64"):
            _measure(rec, prob, min_time, accuracy, reference_cache, on_start, memory_limit)
    except Exception as exc:
        outcome, message = classify(exc)
    rec["rss_peak_bytes"] = peak_rss_bytes()
    rec["case_s"] = time.perf_counter() - started
    return finish_record(rec, outcome, message)


def _measure(
    rec: Record,
    prob: Problem,
    min_time: float,
    accuracy: bool,
    cache: dict[str, Any] | None,
    on_start: Callable[[Record], None] | None,
    memory_limit: float | None = None,
) -> None:
    d, compressed = resolve_method(rec["method"], **rec["method_options"])
    shared = _shared(rec, prob, accuracy, cache)
    inst: Instance = shared["inst"]
    rec.update({"n": inst.n, "m": inst.m, "quantity": inst.quantity, "mode": d.mode})
    if on_start is not None:
        on_start(rec)
    rec["passes"] = d.passes(inst.quantity, inst.n, inst.m)
    evaluations = getattr(d, "evaluations", None)
    try:
        rec["evaluations"] = (
            int(evaluations(inst.quantity, inst.n, inst.m)) if evaluations else None
        )
    except Exception:
        rec["evaluations"] = None
    if compressed:
        derivative, as_dense = _compressed(rec, d, inst)
    else:
        derivative = d.grad(inst.fun) if inst.quantity == "grad" else d.jacobian(inst.fun)
    compiled, result = _compile(rec, derivative, inst.args, memory_limit)
    if accuracy:
        _judge(rec, as_dense(result) if compressed else result, shared["reference"], d.mode)
        rejudge(rec, shared)  # a miss where JAX itself is no closer: the problem's conditioning
    if accuracy and d.mode == "stochastic":  # judged as an estimator: bias within its error
        rec.update(quality(d, inst.fun, inst.args, shared["reference"][0]))  # type: ignore[typeddict-item]
        rec["accurate"] = rec["bias"] <= BIAS_Z * rec["bias_se"] + rec["tolerance"]
    primal, args = shared["primal"], inst.args
    fns = {"primal": lambda: primal(*args), "derivative": lambda: compiled(*args)}
    if rec["first_call_s"] >= SLOW_CALL:  # one sample is enough: the first call is it
        del fns["derivative"]
    t = time_interleaved(fns, min_time)
    t.setdefault("derivative", _stats([rec["first_call_s"]]))
    # the fields are named by prefix, so no key below is a literal the checker could verify
    rec.update({f"time_{k}": v for k, v in t["derivative"].items()})  # type: ignore[typeddict-item]
    rec.update({f"primal_{k}": v for k, v in t["primal"].items()})  # type: ignore[typeddict-item]
    rec["ratio"] = rec["time_median"] / rec["primal_median"]


def _compressed(rec: Record, d: Differentiator, inst: Instance) -> tuple[Callable, Callable]:
    """The compressed Jacobian of a ``+sparse`` case, and the map from its BCOO to
    :func:`jax.jacfwd`'s layout (for the accuracy check). The plan (pattern, colouring) is
    prepared here, timed apart from the derivative, with the arguments that are not
    differentiated known: closed over, so a gather through an index array (``ba``, ``ht``) is
    exact, not conservative. The record gets ``nnz``, ``colours`` (= ``passes``),
    ``sparse_mode``, ``detect_s``, ``colour_s`` and ``pattern_cells``."""
    if inst.quantity != "jacobian":
        raise DiffkitError(
            f"{rec['method']}: problem {rec['problem']!r} is a scalar loss, whose Jacobian is "
            "one dense row (a gradient): nothing to compress; use +sparse on a problem with a "
            "Jacobian (brusselator-2d, pde-1d, pde-2d, ba, ht), or d.hessian(f, sparsity='auto')"
        )
    # imported here: a dense case's worker stays without SciPy's sparse matrices (memory)
    from diffkit.sparse.compressed import plan_jacobian

    x, known = inst.args[0], inst.args[1:]

    def f(x: Any) -> Any:
        return inst.fun(x, *known)

    plan = plan_jacobian(d, f, (x,), where=rec["method"])
    rec.update({"nnz": int(plan.pattern.nnz), "colours": plan.n_colours, "passes": plan.n_colours})
    rec.update({"sparse_mode": plan.mode, "detect_s": plan.detect_s, "colour_s": plan.colour_s})
    rec["pattern_cells"] = pattern_cells(plan.pattern)
    evaluations = getattr(d, "evaluations", None)  # fd: one stencil per colour, not per column
    if evaluations and plan.mode == "fwd":
        rec["evaluations"] = int(evaluations("jacobian", plan.n_colours, inst.m))
    jac = d.jacobian(f, sparsity=plan)
    outs, x_leaves = jax.eval_shape(f, x), jax.tree_util.tree_leaves(x)

    def as_dense(bcoo: Any) -> Any:
        dense = np.asarray(bcoo.todense())
        out_leaves, out_tree = jax.tree_util.tree_flatten(outs)
        rows = np.cumsum([0, *(int(np.prod(o.shape)) for o in out_leaves)])
        cols = np.cumsum([0, *(np.size(v) for v in x_leaves)])
        in_tree = jax.tree_util.tree_structure(x)
        blocks = [
            jax.tree_util.tree_unflatten(
                in_tree,
                [dense[r0:r1, c0:c1].reshape(o.shape + np.shape(v))
                 for v, c0, c1 in zip(x_leaves, cols[:-1], cols[1:], strict=True)]
            )
            for o, r0, r1 in zip(out_leaves, rows[:-1], rows[1:], strict=True)
        ]  # fmt: skip
        return jax.tree_util.tree_unflatten(out_tree, blocks)

    return lambda x, *rest: jac(x), as_dense


def _shared(
    rec: Record, prob: Problem, accuracy: bool, cache: dict[str, Any] | None
) -> dict[str, Any]:
    """What does not depend on the method (the instance, its compiled primal, the float64
    reference), made once and kept in ``cache`` for the next case of the same problem, size,
    dtype and seed; the record gets the primal's and the reference's costs. A failure is
    kept too: it is raised as :class:`PrimalFailed`, with its outcome for this case (marked
    ``failed_in: "primal"``) and as ``skipped`` for the later ones."""
    key = json.dumps([rec[k] for k in ("problem", "problem_options", "size", "dtype", "seed")])
    shared: dict[str, Any] = (
        cache if cache is not None and cache.get("key") == key else {"key": key}
    )
    if cache is not None and shared is not cache:
        cache.clear()
        cache.update(shared)
        shared = cache
    if "failure" in shared:  # an earlier method of this size ran it, and it failed
        outcome, message = shared["failure"]
        raise PrimalFailed(SKIPPED, f"{PRIMAL_FAILED}{outcome}: {message}")
    stage = ""
    try:
        if "inst" not in shared:
            try:
                shared["inst"] = prob.build(rec["size"], rec["dtype"], rec["seed"])
            except DiffkitError:  # the problem is misstated (a target that cannot load, ...)
                rec["failed_in"] = "setup"
                raise
        inst: Instance = shared["inst"]
        rec.update({"n": inst.n, "m": inst.m})
        if "primal" not in shared:  # kept only once it has run
            t0 = time.perf_counter()
            primal = jax.jit(inst.fun).lower(*inst.args).compile(safe_compile_options())
            jax.block_until_ready(primal(*inst.args))
            shared["primal_prepare_s"] = time.perf_counter() - t0
            shared["primal"] = primal
        if accuracy and "reference" not in shared:
            stage = "float64 reference: "
            t0 = time.perf_counter()
            shared["reference"] = reference(inst)
            shared["reference_s"] = time.perf_counter() - t0
    except Exception as exc:
        if rec.get("failed_in") == "setup":
            raise  # bad input: the sweep stops with its one-line error (sweeps._sweep)
        outcome, message = classify(exc)
        shared["failure"] = outcome, stage + message
        rec["failed_in"] = "primal"
        raise PrimalFailed(outcome, PRIMAL_FAILED + stage + message) from exc
    rec["primal_prepare_s"] = shared["primal_prepare_s"]
    rec["primal_xla_bytes"] = _xla_memory(shared["primal"])["total"]
    rec["reference_s"] = shared.get("reference_s")
    return shared


def _compile(
    rec: Record, derivative: Callable[..., Any], args: Any, memory_limit: float | None
) -> tuple[Any, Any]:
    """Trace, lower, compile and call the derivative once, timing each stage; refuses a
    program whose intermediates (:func:`footprint`) exceed ``memory_limit`` before compiling."""
    t0 = time.perf_counter()
    traced = jax.jit(derivative).trace(*args)
    rec["estimated_bytes"] = estimate = footprint(traced.jaxpr)
    if memory_limit and estimate > memory_limit:
        raise EstimatedOutOfMemory(
            f"{ESTIMATED}: the traced derivative's intermediates need "
            f"{format_bytes(estimate)}, over the memory limit of {format_bytes(memory_limit)}; "
            "not run (raise the limit, e.g. --memory-limit, to try it)"
        )
    lowered = traced.lower()
    t1 = time.perf_counter()
    compiled = lowered.compile(safe_compile_options())  # every method, and the primal, alike
    t2 = time.perf_counter()
    result = jax.block_until_ready(compiled(*args))
    t3 = time.perf_counter()
    rec.update({"trace_s": t1 - t0, "compile_s": t2 - t1, "first_call_s": t3 - t2})
    mem = _xla_memory(compiled)
    rec.update({"xla_temp_bytes": mem["temp"], "xla_bytes": mem["total"]})
    return compiled, result


def _judge(rec: Record, result: Any, reference: tuple[np.ndarray, float], mode: str) -> None:
    """rho of ``result`` against the float64 reference, and whether it is within tolerance."""
    ref_grad, crosscheck = reference
    got = _flat64(result)
    if got.shape != ref_grad.shape:
        raise DiffkitError(f"derivative has {got.size} numbers, the reference {ref_grad.size}")
    rho_max, rho_mean = _rho(got, ref_grad)
    rec.update({"rho_max": _finite(rho_max), "rho_mean": _finite(rho_mean)})
    rec.update({"reference_crosscheck": crosscheck, "tolerance": tolerance(mode, rec["dtype"])})
    rec["accurate"] = bool(rho_max <= rec["tolerance"])


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    """Options as JSON values (a function given as a user target becomes its name)."""
    out = {}
    for k, v in options.items():
        if callable(v):
            v = f"{getattr(v, '__module__', '?')}:{getattr(v, '__qualname__', repr(v))}"
        out[k] = v
    return out
