"""GradBench's evals: its published JAX derivative/primal ratios beside ours, every method,
and each family's fitted jax-rev cost exponent against its expected law.

    PYTHONPATH=. python benchmarks/bench_gradbench.py --out /tmp/gradbench   # ~15 min, 2 cores
    PYTHONPATH=. python benchmarks/bench_gradbench.py --part ratios          # one part only
    PYTHONPATH=. python benchmarks/bench_gradbench.py --part exponents --large  # gradients, big

Part ``ratios``: one size per eval, matched to a GradBench workload where GradBench's JAX
tool has one (gmm d=10 k=5 n=1000, lse n=1e4, llsq n=256 m=128, ode n=1000 s=10, kmeans
k=10 n=1000 d=8), float64 as GradBench, every method in a worker process under ``--budget``
with synchronised timing (``block_until_ready`` per call, median of alternating bursts).
GradBench's figures are its ``evals/<eval>/summary.json`` at commit 0f8abfce (2026-03-15):
unsynchronised means that include compilation.

Part ``exponents``: jax-rev over two orders of magnitude of each family's size; the log-log
slope of derivative/primal (``Results.fit_exponents``, sizes where compute dominates) next to
the family's law (``EVALS[...].ratio_law["reverse"]``, the slope of the passes reverse mode
needs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import diffkit as dk
from diffkit.harness.gradbench import EVALS

#: GradBench's JAX tool, derivative/primal at the workload named (summary.json, 0f8abfce).
GRADBENCH_JAX = {
    "gmm": ("10_5_1000", 3.78),
    "lse": ("n=10000", 1.34),
    "llsq": ("n=256,m=128", 1.12),
    "ode": ("n=1000,s=10", 2.72),
    "kmeans": ("k=10,n=1000,d=8", 1.64),
}

#: Part ratios: (options, size) per eval; kmeans as GradBench's JAX computes "dir": the
#: Hessian diagonal by one colour (a JVP of the gradient).
RATIO_CASES = {
    "hello": ({}, 10_000),
    "gmm": ({}, 330),
    "lse": ({}, 10_000),
    "llsq": ({"points": 128}, 256),
    "ode": ({"steps": 10}, 1_000),
    "ba": ({"colouring": True}, 1_000),
    "ht": ({}, 100),
    "lstm": ({}, 64),
    "det": ({}, 8),
    "kmeans": ({"colouring": True, "points": 1_000}, 10),
    "particle": ({}, 10),
    "saddle": ({}, 100),
}

#: Part exponents: jax-rev sizes per eval (two orders of magnitude of n, m or the size).
EXPONENT_SIZES = {
    "hello": [10_000, 100_000, 1_000_000, 10_000_000],
    "gmm": [66, 660, 6_600],
    "lse": [10_000, 100_000, 1_000_000],
    "llsq": [16, 64, 256, 1_024],
    "ode": [100, 1_000, 10_000],
    "ba": [100, 300, 1_000],  # dense Jacobians; at 3000 the float64 reference (jax.jacrev,
    "ht": [100, 300, 1_000],  # all rows at once) runs out of memory
    "lstm": [16, 64, 256, 1_024],
    "det": [4, 8, 12, 16],
    "kmeans": [4, 16, 64, 256],
    "particle": [10, 100, 1_000],
    "saddle": [100, 1_000, 10_000, 100_000],
}

#: ``--large``: gradients at sizes where the primal's and the gradient's working sets both lie
#: beyond the 32 MiB L3 (or as close as the memory allows): the ratio's law is per flops.
LARGE_SIZES = {
    "hello": [10_000_000, 30_000_000, 100_000_000],
    "gmm": [6_600, 20_000, 66_000],
    "ode": [10_000, 30_000, 100_000],
    "lstm": [1_024, 4_096, 16_384],
    "particle": [1_000, 3_000, 10_000],
}

METHODS = ["jax-rev", "jax-fwd", "dual", "tape", "fd", "symbolic"]


def progress(rec: dict, i: int, total: int) -> None:
    t = rec.get("time_median")
    shown = f"{t * 1e3:9.3f} ms  ratio {rec['ratio']:8.2f}" if t else rec["message"][:60]
    print(f"[{i:3d}/{total}] {rec['problem']:9s} n={rec.get('n')!s:>8} {rec['method']:9s} "
          f"{rec['outcome']:9s} {shown}", flush=True)  # fmt: skip


def ratios(out: Path, budget: float, min_time: float) -> None:
    problems = [dk.harness.get_problem(name, **opts) for name, (opts, _) in RATIO_CASES.items()]
    res = dk.harness.sweep(
        problems, {name: [size] for name, (_, size) in RATIO_CASES.items()}, METHODS, "float64",
        out=out / "ratios.jsonl", budget=budget, min_time=min_time, progress=progress,
    )  # fmt: skip
    print("\nderivative / primal, float64 (GradBench: its JAX tool at the workload named)")
    print(f"{'eval':9s} {'n':>6s} {'GradBench JAX':>22s} " + " ".join(f"{m:>9s}" for m in METHODS))
    for name in RATIO_CASES:
        recs = {r["method"]: r for r in res if r["problem"] == name}
        n = next((r["n"] for r in recs.values() if r.get("n")), None)
        where, theirs = GRADBENCH_JAX.get(name, ("-", None))
        cells = []
        for m in METHODS:
            r = recs.get(m, {})
            ok = r.get("outcome") == "ok" and r.get("accurate") is not False
            cells.append(f"{r['ratio']:9.3g}" if ok else f"{r.get('outcome', '-')[:9]:>9s}")
        gb = f"{theirs:.2f} ({where})" if theirs else "-"
        print(f"{name:9s} {n!s:>6s} {gb:>22s} " + " ".join(cells))
    print("kmeans: our primal is the function differentiated, the gradient; GradBench's the cost")
    worst = {m: max((r.get("rho_max") or 0) for r in res if r["method"] == m) for m in METHODS}
    print("largest rho per method:", {m: f"{v:.1e}" for m, v in worst.items()})


def exponents(out: Path, budget: float, min_time: float, evals: list[str], large: bool) -> None:
    sizes = {name: (LARGE_SIZES if large else EXPONENT_SIZES)[name] for name in evals}
    res = dk.harness.sweep(
        list(sizes), sizes, ["jax-rev"], "float64",
        out=out / "exponents.jsonl", budget=budget, min_time=min_time, progress=progress,
    )  # fmt: skip
    print("\njax-rev: fitted exponent of derivative/primal vs the law (passes), float64")
    print(f"{'eval':9s} {'vs':4s} {'range':>16s} {'points':>6s} {'fitted':>7s} {'law':>5s} "
          f"{'|diff|':>6s}  within 0.15  (passes'; derivative's, primal's time slope)")  # fmt: skip
    for fit in res.fit_exponents():
        law = EVALS[fit["problem"]].ratio_law["reverse"]
        slope = fit["slope_ratio"]
        diff = abs(slope - law) if slope is not None else None
        cells = f"{slope:7.2f} {law:5.1f} {diff:6.2f}  {diff <= 0.15}" if diff is not None else "-"
        print(f"{fit['problem']:9s} {fit['against']:4s} {fit['range']!s:>16s} "
              f"{fit['points']:6d} {cells}  ({fit['expected_ratio']}; "
              f"{fit['slope_time'] or 0:.2f}, {fit['slope_primal'] or 0:.2f})")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_gradbench", help="folder for the JSON-lines results")
    p.add_argument("--part", choices=["ratios", "exponents", "both"], default="both")
    p.add_argument("--budget", type=float, default=60.0, help="seconds per case")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of samples per timing")
    p.add_argument("--evals", default=None, help="part exponents: which (default: all)")
    p.add_argument("--large", action="store_true", help="part exponents: LARGE_SIZES")
    args = p.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    if args.part in ("ratios", "both"):
        ratios(out, args.budget, args.min_time)
    if args.part in ("exponents", "both"):
        evals = (
            args.evals.split(",")
            if args.evals
            else list(LARGE_SIZES if args.large else EXPONENT_SIZES)
        )
        exponents(out, args.budget, args.min_time, evals, args.large)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
