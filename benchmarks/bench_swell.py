"""Expression swell, measured: the logistic map and a sigmoid network of width 2.

    python benchmarks/bench_swell.py                  # logistic depths 1..13, network 1..6
    python benchmarks/bench_swell.py --depths 1-8 --net-depths 1-4

Logistic map l_{k+1} = 4 l_k (1 - l_k), float64. Per depth: the derivative's tree size (what
printing without CSE writes out), its DAG and CSE'd sizes, the equations of jax.grad's jaxpr,
the preparation time (differentiate + CSE + codegen + compile), and the compiled derivative's
run time against jax.grad's, both jit-compiled and timed side by side (medians). Then plain
``sympy.diff`` (``memoize=False``) and code generation without CSE, each under a time or size
budget that stops it cleanly, and SymEngine where installed.

Sigmoid network of width 2 (6 parameters per layer): the gradient's sizes by layer, and the
budget stopping plain ``sympy.diff`` and codegen without CSE.

The array level (``level='array'``, ``--array-only`` for this table alone): least squares at
n = 10 .. 1e5, the gradient's array operations (the same at every n), its scalarised size, the
time to build it and the jitted gradient's run time over jax.grad's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp

import diffkit as dk
from diffkit._core.jaxpr import inner_jaxpr


def logistic(x, depth: int):
    for _ in range(depth):
        x = 4.0 * x * (1.0 - x)
    return x


def sigmoid_net(params, depth: int):
    h = jnp.array([0.3, -0.2])
    for k in range(depth):
        W, b = params[6 * k : 6 * k + 4].reshape(2, 2), params[6 * k + 4 : 6 * k + 6]
        h = jax.nn.sigmoid(W @ h + b)
    return jnp.sum(h)


def eqns(jaxpr) -> int:
    return sum(eqns(s.jaxpr) if (s := inner_jaxpr(e)) is not None else 1 for e in jaxpr.eqns)


def median_time(fns, args, repeats: int = 300) -> list[float]:
    """Medians of each function's run time, measured interleaved (warm, synchronised)."""
    for fn in fns:
        jax.block_until_ready(fn(*args))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def attempt(d, f, *args):
    """Swell report, or the budget's message (stage and size)."""
    try:
        return d.swell(f, *args)
    except dk.BudgetExceeded as e:
        return e


def prepare(r) -> float:
    return sum(r.times[k] for k in ("differentiate", "cse", "codegen", "compile"))


def span(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def logistic_table(depths: list[int]) -> None:
    print("Logistic map, float64, sympy backend, cse=True")
    head = (
        f"{'n':>3} {'f tree':>8} {'df tree':>10} {'x':>5} {'df DAG':>7} {'df CSE':>7} "
        f"{'grad eqns':>9} {'prep s':>7} {'run us':>8} {'grad us':>8} {'ratio':>6}"
    )
    print(head)
    d = dk.get("symbolic")
    prev = None
    for n in depths:
        f = lambda x, n=n: logistic(x, n)  # noqa: E731
        x = jnp.asarray(0.3)
        r = d.swell(f, x)
        grad_eqns = eqns(jax.make_jaxpr(jax.grad(f))(x).jaxpr)
        ours, ref = median_time(
            [jax.jit(d.value_and_grad(f)), jax.jit(jax.value_and_grad(f))], (x,)
        )
        growth = f"{r.derivative.tree_ops / prev:.2f}" if prev else "-"
        prev = r.derivative.tree_ops
        print(
            f"{n:>3} {r.function.tree_ops:>8,} {r.derivative.tree_ops:>10,} {growth:>5} "
            f"{r.derivative.dag_nodes:>7,} {r.derivative.cse_ops:>7,} {grad_eqns:>9} "
            f"{prepare(r):>7.3f} {ours * 1e6:>8.1f} {ref * 1e6:>8.1f} {ours / ref:>6.2f}"
        )
    print("(x: growth of the derivative tree per step; ratio: compiled symbolic / jax.grad)")
    print()


def budget_table(title: str, make, depths: list[int]) -> None:
    """Plain sympy.diff under a time budget and codegen without CSE under a size budget."""
    print(title)
    variants = {
        "sympy.diff (memoize=False, 5 s budget)": dk.get("symbolic", memoize=False, time_budget=5),
        "no CSE (size_budget=10 000)": dk.get("symbolic", cse=False, size_budget=10_000),
    }
    for label, d in variants.items():
        print(f"  {label}")
        for n in depths:
            r = attempt(d, *make(n))
            if isinstance(r, dk.BudgetExceeded):
                print(f"    depth {n:>2}: stopped: {r}")
                break
            t = r.times
            print(
                f"    depth {n:>2}: differentiate {t['differentiate']:.3f} s, codegen "
                f"{t['codegen']:.3f} s, compile {t['compile']:.3f} s, printed "
                f"{r.derivative.program_chars:,} chars"
            )
    print()


def symengine_row(depth: int) -> None:
    try:
        d = dk.get("symbolic", backend="symengine")
    except dk.DiffkitError as e:
        print(f"SymEngine: skipped ({e})\n")
        return
    r = d.swell(lambda x: logistic(x, depth), jnp.asarray(0.3))
    s = dk.get("symbolic").swell(lambda x: logistic(x, depth), jnp.asarray(0.3))
    print(
        f"Logistic depth {depth}: differentiate sympy (memoised) {s.times['differentiate']:.4f} s,"
        f" symengine {r.times['differentiate']:.4f} s; CSE sympy {s.times['cse']:.3f} s, "
        f"symengine {r.times['cse']:.3f} s\n"
    )


def network_table(depths: list[int]) -> None:
    print("Sigmoid network, width 2, gradient of sum(h_L) w.r.t. 6L parameters, float64")
    print(
        f"{'L':>3} {'n':>4} {'f tree':>8} {'grad tree':>11} {'x':>5} {'grad DAG':>9} "
        f"{'grad CSE':>9} {'diff s':>7} {'cse s':>7} {'compile s':>9}"
    )
    d = dk.get("symbolic")
    prev = None
    for L in depths:
        p = jnp.linspace(-1.0, 1.0, 6 * L)
        r = attempt(d, lambda p, L=L: sigmoid_net(p, L), p)
        if isinstance(r, dk.BudgetExceeded):
            print(f"{L:>3}: stopped: {r}")
            break
        growth = f"{r.derivative.tree_ops / prev:.2f}" if prev else "-"
        prev = r.derivative.tree_ops
        t = r.times
        print(
            f"{L:>3} {6 * L:>4} {r.function.tree_ops:>8,} {r.derivative.tree_ops:>11,} "
            f"{growth:>5} {r.derivative.dag_nodes:>9,} {r.derivative.cse_ops:>9,} "
            f"{t['differentiate']:>7.3f} {t['cse']:>7.3f} {t['compile']:>9.3f}"
        )
    print()


def array_table(sizes: list[int]) -> None:
    """The array level by n: least squares ``sum((X w - y)**2) / n`` with X of n x 10. The
    gradient's array expression, its scalarised size, the time to build it and run it
    (jitted) against jax.grad's, side by side."""
    print("\nArray level (level='array'), least squares, X of n x 10, float64")
    print(f"{'n':>8} {'array ops':>9} {'scalarised ops':>15} {'build':>9} {'run/jax.grad':>13}")
    d = dk.get("symbolic", level="array")

    def loss(w, X, y):
        return jnp.sum((X @ w - y) ** 2) / y.shape[0]

    for n in sizes:
        k = jax.random.split(jax.random.key(n), 3)
        args = (
            jax.random.normal(k[0], (10,)),
            jax.random.normal(k[1], (n, 10)),
            jax.random.normal(k[2], (n,)),
        )
        start = time.perf_counter()
        _, grad_sizes = d.array_sizes(loss, *args)
        build = time.perf_counter() - start
        ours, theirs = median_time(
            [jax.jit(d.grad(loss)), jax.jit(jax.grad(loss))], args, repeats=100
        )
        print(
            f"{n:>8,} {grad_sizes.array_nodes:>9,} {grad_sizes.scalar_ops:>15,} "
            f"{build * 1e3:>7.1f}ms {ours / theirs:>13.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="1-13", help="logistic-map depths, e.g. 1-13")
    parser.add_argument("--net-depths", default="1-6", help="sigmoid-network depths")
    parser.add_argument(
        "--array-sizes", default="10,1000,100000", help="least-squares n at the array level"
    )
    parser.add_argument("--array-only", action="store_true", help="only the array-level table")
    args = parser.parse_args()
    if args.array_only:
        with jax.enable_x64(True):
            array_table([int(n) for n in args.array_sizes.split(",")])
        return
    depths, net_depths = span(args.depths), span(args.net_depths)
    start = time.perf_counter()
    with jax.enable_x64(True):
        logistic_table(depths)
        budget_table(
            "Logistic map, budgets",
            lambda n: (lambda x, n=n: logistic(x, n), jnp.asarray(0.3)),
            [n for n in depths if n >= 6] or depths,
        )
        symengine_row(max(depths))
        network_table(net_depths)
        budget_table(
            "Sigmoid network, budgets",
            lambda L: (lambda p, L=L: sigmoid_net(p, L), jnp.linspace(-1.0, 1.0, 6 * L)),
            net_depths,
        )
        array_table([int(n) for n in args.array_sizes.split(",")])
    print(f"total {time.perf_counter() - start:.1f} s")
    assert math.isfinite(start)


if __name__ == "__main__":
    main()
