"""Sparse Jacobians (issue 29): the 2-D Brusselator, compressed against dense, against asdex
and sparsejac, in one run.

At ``n = 2 * N^2`` (default N = 64: n = 8192) prints, each a median over ``--reps`` runs,
interleaved (each round times every contender once):

* detection + colouring: ``dk.jacobian_sparsity`` + ``dk.sparse.colour_columns`` against
  ``asdex.jacobian_sparsity`` + ``asdex.jacobian_coloring_from_sparsity`` (both warm: a
  first call of each, which compiles, is left out and printed apart), the colours each finds
  and whether the patterns agree;
* the prepared Jacobian, steady state (jitted, compiled once): diffkit's compressed jax-fwd
  (``jax.jit(dk.get("jax-fwd").jacobian(f, sparsity=pattern))``), asdex's
  (``jacobian_from_coloring``), sparsejac's (``sparsejac.jacfwd`` with the same pattern as a
  BCOO) and JAX's dense ``jax.jacfwd``; the ratios dense/compressed and diffkit/asdex;
* with ``--sweep``: diffkit's compressed Jacobian at N = 64, 128, 256 against the
  function itself, with the fitted exponents of each in n.

asdex and sparsejac are optional (``pip install -e ".[sparse-bench]"``); a contender that
is not installed is skipped and said so.

    python benchmarks/bench_sparse.py [--grid 64] [--reps 5] [--sweep]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import diffkit as dk
from diffkit.harness.sparse_families import brusselator


def _block(x: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), x)


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    _block(fn())
    return time.perf_counter() - start


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        print(f"  {name}: not installed (pip install -e '.[sparse-bench]'): skipped")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--dense-reps", type=int, default=3)
    parser.add_argument("--sweep", action="store_true")
    a = parser.parse_args()
    n_grid = a.grid
    f = brusselator(n_grid)
    n = 2 * n_grid * n_grid
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, n), jnp.float32)
    print(f"2-D Brusselator, N = {n_grid}: n = m = {n}, float32, {jax.devices()[0].platform}")
    asdex, sparsejac = _optional("asdex"), _optional("sparsejac")

    # ---------------------------------------------------------- detection + colouring
    def dk_prepare() -> Any:
        p = dk.jacobian_sparsity(f, x)
        return p, dk.sparse.colour_columns(p)

    def asdex_prepare() -> Any:
        p = asdex.jacobian_sparsity(f, x)
        return p, asdex.jacobian_coloring_from_sparsity(p, mode="fwd")

    first = {"diffkit": _first(dk_prepare)}
    if asdex:
        first["asdex"] = _first(asdex_prepare)
    print("first call (compiling): " + ", ".join(f"{k} {v:.2f} s" for k, v in first.items()))
    prep: dict[str, list[float]] = {k: [] for k in first}
    for _ in range(a.reps):
        prep["diffkit"].append(_wall(dk_prepare))
        if asdex:
            prep["asdex"].append(_wall(asdex_prepare))
    pattern, colouring = dk_prepare()
    line = f"detection + colouring, median of {a.reps}: diffkit {_ms(prep['diffkit'])}"
    line += f" ({colouring.n_colours} colours, order {colouring.order})"
    if asdex:
        ap, ac = asdex_prepare()
        dense_a = np.asarray(ap.todense()) if hasattr(ap, "todense") else np.asarray(ap)
        same = bool((dense_a.astype(bool) == pattern.toarray()).all())
        line += (
            f"; asdex {_ms(prep['asdex'])} ({ac.num_colors if hasattr(ac, 'num_colors') else ac})"
        )
        line += f"; patterns agree: {same}"
        ratio = statistics.median(prep["diffkit"]) / statistics.median(prep["asdex"])
        line += f"; diffkit/asdex {ratio:.2f}"
    print(line)
    print(f"pattern nnz {pattern.nnz} ({pattern.nnz / n:.1f} per row)")

    # ---------------------------------------------------------- prepared Jacobians
    jacs: dict[str, Callable[[], Any]] = {}
    ours = jax.jit(dk.get("jax-fwd").jacobian(f, sparsity=pattern))
    jacs["diffkit jax-fwd compressed"] = lambda: ours(x)
    if asdex:
        aj = jax.jit(asdex.jacobian_from_coloring(f, ac))
        jacs["asdex"] = lambda: aj(x)
    if sparsejac:
        bcoo = jax.experimental.sparse.BCOO.from_scipy_sparse(pattern.astype(np.float32))
        sj = jax.jit(sparsejac.jacfwd(f, sparsity=bcoo))
        jacs["sparsejac"] = lambda: sj(x)
    dense = jax.jit(jax.jacfwd(f))
    compile_s = {k: _time(v) for k, v in jacs.items()}
    compile_s["dense jax.jacfwd"] = _time(lambda: dense(x))
    print(
        "first call (compile + run): " + ", ".join(f"{k} {v:.2f} s" for k, v in compile_s.items())
    )
    ref = np.asarray(dense(x))
    for k, v in jacs.items():
        got = np.asarray(v().todense())
        print(f"  {k}: max |J - dense| = {np.max(np.abs(got - ref)):.2e}")
    times: dict[str, list[float]] = {k: [] for k in jacs}
    times["dense jax.jacfwd"] = []
    for r in range(a.reps):
        for k, v in jacs.items():
            times[k].append(_time(v))
        if r < a.dense_reps:
            times["dense jax.jacfwd"].append(_time(lambda: dense(x)))
    base = statistics.median(times["diffkit jax-fwd compressed"])
    for k, v in times.items():
        med = statistics.median(v)
        print(
            f"  {k:28s} median {med * 1e3:9.2f} ms over {len(v)}  (x{med / base:.2f} of diffkit's)"
        )
    print(
        f"dense jax.jacfwd / compressed: {statistics.median(times['dense jax.jacfwd']) / base:.0f}x"
    )
    if sweep_ok := a.sweep:
        _sweep(sweep_ok)


def _sweep(_: bool) -> None:
    """The compressed Jacobian's cost against n at fixed colours, beside the function's own
    (interleaved: each round times both at each size)."""
    grids = (64, 128, 256)
    sizes, t_jac, t_f = [], [], []
    for g in grids:
        f = brusselator(g)
        n = 2 * g * g
        x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, n), jnp.float32)
        jac = jax.jit(dk.get("jax-fwd").jacobian(f, sparsity="auto"))
        fj = jax.jit(f)
        _block(jac(x))
        _block(fj(x))
        tj, tf = [], []
        for _ in range(15):
            tj.append(_time(lambda jac=jac, x=x: jac(x)))
            for _ in range(3):
                tf.append(_time(lambda fj=fj, x=x: fj(x)))
        plan = dk.sparse.prepare_jacobian(f, x)
        mj, mf = statistics.median(tj), statistics.median(tf)
        print(
            f"  N = {g:4d} n = {n:6d}: colours {plan.n_colours:2d}, "
            f"J {mj * 1e3:8.3f} ms, f {mf * 1e3:8.4f} ms, J/f {mj / mf:6.1f}"
        )
        sizes.append(n)
        t_jac.append(mj)
        t_f.append(mf)
    ln = np.log(sizes)
    ej = np.polyfit(ln, np.log(t_jac), 1)[0]
    ef = np.polyfit(ln, np.log(t_f), 1)[0]
    print(f"fitted exponent in n: compressed Jacobian {ej:.2f}, the function {ef:.2f}")


def _first(fn: Callable[[], Any]) -> float:
    return _wall(fn)


def _wall(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _ms(v: list[float]) -> str:
    return f"{statistics.median(v) * 1e3:.1f} ms"


if __name__ == "__main__":
    main()
