"""Dense against compressed, per method and size: the sparse columns of a comparison.

:func:`sparse_compare` builds a harness family (``brusselator-2d``, ``pde-1d``, ``pde-2d``,
or any registered family with a Jacobian) at each size and, for each method, measures the
dense Jacobian and the compressed one side by side (jitted, steady state, interleaved with
:func:`~diffkit.harness.measure.time_interleaved`), with the pattern's nonzeros, the colours,
and the detection and colouring times apart from the derivative's. The compressed Jacobian
is checked against the dense one (``rho``).

Example:
    >>> import diffkit as dk
    >>> rows = dk.harness.sparse_compare("pde-1d", [20], ["jax-fwd"], min_time=0.01)
    >>> r = rows[0]
    >>> r["n"], r["nnz"], r["colours"], r["dense_passes"], r["rho"] < 1e-5
    (20, 58, 3, 20, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import numpy as np

from diffkit._core.errors import DiffkitError
from diffkit._core.registry import resolve
from diffkit.accuracy import rho
from diffkit.harness.families import get_problem
from diffkit.harness.measure import time_interleaved
from diffkit.sparse.compressed import make_plan
from diffkit.sparse.detect import jacobian_sparsity

__all__ = ["format_sparse", "sparse_compare"]


def sparse_compare(
    problem: str,
    sizes: Sequence[int],
    methods: Sequence[str] = ("jax-fwd", "jax-rev", "fd"),
    dtype: str = "float32",
    min_time: float = 0.05,
) -> list[dict[str, Any]]:
    """One row per (size, method): ``n``, ``m``, ``nnz``, ``colours``, ``mode`` (``fwd``
    columns or ``rev`` rows), ``detect_s`` (once per size: a first call for new shapes
    includes compiling the detector's small index programs), ``colour_s``, ``dense_s``,
    ``compressed_s`` (medians), ``dense_passes``, ``speedup`` (dense / compressed) and
    ``rho`` (compressed against dense).

    Example:
        >>> import diffkit as dk
        >>> [r["mode"] for r in dk.harness.sparse_compare("pde-1d", [12], ["tape"], min_time=0.01)]
        ['rev']
    """
    rows = []
    for size in sizes:
        inst = get_problem(problem).build(size, dtype)
        if inst.quantity != "jacobian":
            raise DiffkitError(
                f"sparse_compare: problem {problem!r} is a scalar loss (a gradient); compare "
                "Jacobians (brusselator-2d, pde-1d, pde-2d) or use d.hessian(f, sparsity=)"
            )
        x, rest = inst.args[0], inst.args[1:]

        def f(x: Any, rest: tuple = rest, fun: Any = inst.fun) -> Any:
            return fun(x, *rest)

        with jax.enable_x64(dtype == "float64"):
            start = time.perf_counter()
            pattern = jacobian_sparsity(f, x)
            detect_s = time.perf_counter() - start
        for name in methods:
            d = resolve(name)
            mode: Any = "fwd" if "jvp" in d.native else "rev"
            if d.native == {"jvp", "vjp"}:
                mode = "fwd" if inst.n <= inst.m else "rev"
            with jax.enable_x64(dtype == "float64"):
                plan = make_plan(pattern, mode, "best", detect_s)
                dense = jax.jit(d.jacobian(f, strategy=mode))
                sparse = jax.jit(d.jacobian(f, sparsity=plan.pattern, strategy=mode))
                err = rho(
                    np.asarray(sparse(x).todense()),
                    np.asarray(dense(x)).reshape(plan.pattern.shape),
                )
                thunks: dict[str, Callable[[], Any]] = {
                    "dense": partial(dense, x),
                    "compressed": partial(sparse, x),
                }
                t = time_interleaved(thunks, min_time=min_time)
            rows.append(
                {
                    "problem": problem,
                    "size": size,
                    "method": name,
                    "n": inst.n,
                    "m": inst.m,
                    "nnz": int(plan.pattern.nnz),
                    "colours": plan.n_colours,
                    "mode": mode,
                    "detect_s": plan.detect_s,
                    "colour_s": plan.colour_s,
                    "dense_s": t["dense"]["median"],
                    "compressed_s": t["compressed"]["median"],
                    "dense_passes": inst.n if mode == "fwd" else inst.m,
                    "speedup": t["dense"]["median"] / t["compressed"]["median"],
                    "rho": err,
                }
            )
    return rows


def format_sparse(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`sparse_compare`'s rows.

    Example:
        >>> print(format_sparse([]).splitlines()[0].split()[:3])
        ['method', 'n', 'nnz']
    """
    head = (
        f"{'method':>9} {'n':>7} {'nnz':>8} {'colours':>7} {'passes':>7} {'detect':>9} "
        f"{'colour':>9} {'dense':>10} {'compressed':>10} {'speedup':>8} {'rho':>8}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['method']:>9} {r['n']:>7} {r['nnz']:>8} {r['colours']:>7} "
            f"{r['dense_passes']:>7} {r['detect_s'] * 1e3:>7.1f}ms {r['colour_s'] * 1e3:>7.1f}ms "
            f"{r['dense_s'] * 1e3:>8.3f}ms {r['compressed_s'] * 1e3:>8.3f}ms "
            f"{r['speedup']:>7.1f}x {r['rho']:>8.1e}"
        )
    return "\n".join(lines)
