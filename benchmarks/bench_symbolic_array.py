"""The array-level symbolic differentiator against JAX, side by side in one run.

Prints, for the harness's MLP at n parameters (float64): the symbolic gradient's accuracy
(rho against jax.grad), its end-to-end time (trace + build + lower + compile + first run) and
its steady-state time against jax-rev's (medians of repeated jitted calls); for the quadratic
form and logistic regression at n = 1e3: the Hessian's accuracy and steady-state time against
jax.hessian. ``--coverage`` counts exact / refused / wrong per library on the real-code cases
of tests/scientific_cases.py at both levels.

    python benchmarks/bench_symbolic_array.py              # MLP n=1e4, Hessians n=1e3
    python benchmarks/bench_symbolic_array.py --coverage   # real-code coverage, both levels
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _median_time(fn: Callable[[], Any], repeats: int = 21) -> float:
    jax.block_until_ready(fn())
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _interleaved(fns: dict[str, Callable[[], Any]], rounds: int = 7, repeats: int = 5) -> dict:
    """Median over rounds, each timing every function in turn (side by side)."""
    for f in fns.values():
        jax.block_until_ready(f())
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k].append(_median_time(f, repeats))
    return {k: statistics.median(v) for k, v in times.items()}


def mlp(n: int) -> None:
    import diffkit as dk
    from diffkit.accuracy import rho
    from diffkit.harness import get_problem

    inst = get_problem("mlp").build(n, "float64", 0)
    f, args = inst.fun, inst.args
    sym = dk.get("symbolic", level="array")
    start = time.perf_counter()
    g_sym = jax.jit(sym.grad(f))
    first = jax.block_until_ready(g_sym(*args))
    end_to_end = time.perf_counter() - start
    g_rev = jax.jit(jax.grad(f))
    want = g_rev(*args)
    err = rho(first, want)
    t = _interleaved({"symbolic": lambda: g_sym(*args), "jax-rev": lambda: g_rev(*args)})
    print(
        f"mlp n={n}: rho={err:.2e}  end-to-end {end_to_end:.2f} s  steady symbolic "
        f"{t['symbolic'] * 1e3:.3f} ms  jax-rev {t['jax-rev'] * 1e3:.3f} ms  "
        f"ratio {t['symbolic'] / t['jax-rev']:.2f}"
    )


def hessians(n: int) -> None:
    import diffkit as dk
    from diffkit.accuracy import rho

    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.normal(size=(n, n)))
    X = jnp.asarray(rng.normal(size=(2 * n, n)))
    y = jnp.asarray(np.sign(rng.normal(size=2 * n)))
    w = jnp.asarray(rng.normal(size=n) / np.sqrt(n))

    def quadratic(x: jax.Array) -> jax.Array:
        return x @ A @ x / 2

    def logistic(w: jax.Array) -> jax.Array:
        return jnp.mean(jnp.log1p(jnp.exp(-y * (X @ w))))

    sym = dk.get("symbolic", level="array")
    for name, f in (("quadratic form", quadratic), ("logistic regression", logistic)):
        start = time.perf_counter()
        h_sym = jax.jit(sym.hessian(f))
        got = jax.block_until_ready(h_sym(w))
        end_to_end = time.perf_counter() - start
        h_jax = jax.jit(jax.hessian(f))
        err = rho(got, h_jax(w))
        t = _interleaved({"symbolic": lambda h=h_sym: h(w), "jax": lambda h=h_jax: h(w)}, 5, 3)
        print(
            f"hessian {name} n={n}: rho={err:.2e}  end-to-end {end_to_end:.2f} s  steady "
            f"symbolic {t['symbolic'] * 1e3:.2f} ms  jax.hessian {t['jax'] * 1e3:.2f} ms  "
            f"ratio {t['symbolic'] / t['jax']:.2f}"
        )


def coverage(levels: list[str], budget: float, only: str = "") -> int:
    """Exact / refused / crash / wrong per library, at each level, on the scientific cases
    (tests/scientific_cases.py, judged by its ``judge``) and the real-code cases of
    tests/test_real_code.py (exact: rho <= 1e-10 against jax.grad)."""
    import scientific_cases as sc

    import diffkit as dk
    from diffkit.accuracy import rho_tree

    fallbacks: list[str] = []

    def attempt(f: Callable, x: Any, level: str) -> tuple[Any, BaseException | None, float]:
        start = time.perf_counter()
        d = dk.get("symbolic", level=level, time_budget=budget)
        try:
            return jax.block_until_ready(d.grad(f)(x)), None, time.perf_counter() - start
        except Exception as e:
            return None, e, time.perf_counter() - start
        finally:
            if getattr(d, "fallback", None):
                fallbacks.append(f"{getattr(f, '__name__', f)}: {d.fallback[:150]}")

    table: dict[tuple[str, str], Counter] = {}
    listing = []
    for case in sc.CASES:
        if only not in case.name:
            continue
        f, x = sc.built(case.name)
        sc.reference(case.name)
        for level in levels:
            grad, exc, secs = attempt(f, x, level)
            out = sc.Outcome(grad=grad, exception=exc, seconds=secs)
            verdict, message = sc.judge(case.name, "symbolic", out)
            table.setdefault((case.library, level), Counter())[verdict] += 1
            if verdict != "exact":
                listing.append(f"{level:6} {case.name}: {verdict}: {message[:150]}")
    import test_real_code as rc  # the real-code cases (flax, optax, numpyro, ...)

    for name, case in rc.CASES.items():
        if only not in name:
            continue
        f, x = case.build(jnp.dtype("float64"))
        want = jax.jit(jax.grad(f))(x)
        lib = name.split()[0] if case.realcode else "jax"
        for level in levels:
            grad, exc, secs = attempt(f, x, level)
            if exc is not None:
                one = isinstance(exc, dk.DiffkitError) and "\n" not in str(exc).strip()
                verdict = "refused" if one else "crash"
                message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:150]}"
            else:
                err = rho_tree(grad, want)
                verdict = "exact" if err <= 1e-10 else "wrong"
                message = f"rho {err:.2e}"
            table.setdefault((f"rc:{lib}", level), Counter())[verdict] += 1
            if verdict != "exact":
                listing.append(f"{level:6} {name}: {verdict}: {message}")
    print(f"{'library':14} {'level':7} exact/refused/crash/wrong")
    totals: dict[str, Counter] = {}
    for (lib, level), c in table.items():
        totals.setdefault(level, Counter()).update(c)
        print(f"{lib:14} {level:7} {c['exact']}/{c['refused']}/{c['crash']}/{c['wrong']}")
    for level, c in totals.items():
        print(f"{'all':14} {level:7} {c['exact']}/{c['refused']}/{c['crash']}/{c['wrong']}")
    print("\n".join(listing))
    print(f"array level fell back to the scalar level {len(fallbacks)} times")
    print("\n".join(fallbacks))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="MLP parameters")
    parser.add_argument("--hessian-n", type=int, default=1_000)
    parser.add_argument("--coverage", action="store_true")
    parser.add_argument("--levels", default="array", help="comma-separated: array,scalar")
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    parser.add_argument("--budget", type=float, default=20.0, help="symbolic seconds per stage")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if args.coverage:
        return coverage(args.levels.split(","), args.budget, args.cases)
    mlp(args.n)
    hessians(args.hessian_n)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    raise SystemExit(main())
