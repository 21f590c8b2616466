"""Run a harness sweep and print its table, scaling exponents and overhead.

    python benchmarks/harness_sweep.py --problem mlp --sizes 10,100,1000,10000 \
        --methods jax-fwd,jax-rev --out /tmp/mlp.jsonl

Every case runs in a worker process under ``--budget`` seconds; results are appended to
``--out`` (JSON lines) and a re-run resumes. ``--plots DIR`` writes PNGs.
"""

from __future__ import annotations

import argparse
import time

import diffkit as dk


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", default="mlp", help="comma-separated problem names")
    p.add_argument("--sizes", default=None, help="comma-separated sizes (default: the problem's)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument("--dtypes", default="float32")
    p.add_argument("--out", default="harness_sweep.jsonl")
    p.add_argument("--budget", type=float, default=60.0, help="seconds per case")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of samples per timing")
    p.add_argument("--fresh", action="store_true", help="start the output file afresh")
    p.add_argument("--plots", default=None, help="folder for PNG plots")
    args = p.parse_args()

    started = time.perf_counter()

    def progress(rec: dict, i: int, total: int) -> None:
        t = rec.get("time_median")
        shown = f"{t * 1e3:9.3f} ms  ratio {rec['ratio']:8.2f}" if t else rec["message"][:60]
        head = f"[{i:3d}/{total}] {rec['problem']:12s} n={rec.get('n')!s:>8} {rec['method']:10s}"
        print(f"{head} {rec['dtype']:8s} {rec['outcome']:13s} {shown}", flush=True)

    res = dk.harness.sweep(
        args.problem.split(","),
        [int(float(s)) for s in args.sizes.split(",")] if args.sizes else None,
        args.methods.split(",") if args.methods else None,
        args.dtypes.split(","),
        out=args.out,
        budget=args.budget,
        min_time=args.min_time,
        resume=not args.fresh,
        progress=progress,
    )
    wall = time.perf_counter() - started
    meta = res[0]["meta"] if len(res) else {}
    print(f"\n{meta.get('device_kind')} ({meta.get('backend')}), {meta.get('cpu_count')} CPUs, "
          f"jax {meta.get('jax')}, numpy {meta.get('numpy')}, python {meta.get('python')}, "
          f"{res[0]['date'] if len(res) else ''}")  # fmt: skip
    print(res.table())
    print("\nscaling exponents (log-log slopes over the sizes where compute dominates):")
    print(res.exponents_table())
    if "wide-output" in args.problem.split(","):
        for dtype in args.dtypes.split(","):
            cross = res.crossover("jax-fwd", "jax-rev", "wide-output", dtype)
            print(f"forward/reverse crossover ({dtype}): m/n = {cross['m_over_n']}")
    print(f"\nharness overhead: {res.overhead()}")
    print(f"sweep wall time: {wall:.1f} s for {len(res)} cases")
    if args.plots:
        print("plots:", *res.plot(args.plots))


if __name__ == "__main__":
    main()
