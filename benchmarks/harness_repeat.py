"""Run the same sweep twice and compare the derivative/primal ratios case by case.

    PYTHONPATH=. python benchmarks/harness_repeat.py --problem mlp \
        --sizes 1000,10000,100000 --methods jax-fwd,jax-rev

Prints each case's ratio in both runs and their relative difference (the issue asks for
~15% at sizes where compute dominates), then the median difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import diffkit as dk


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", default="mlp")
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--methods", default="jax-fwd,jax-rev")
    p.add_argument("--min-time", type=float, default=0.5)
    p.add_argument("--budget", type=float, default=120.0)
    args = p.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            res = dk.harness.sweep(
                args.problem, sizes, args.methods.split(","), out=Path(tmp) / f"run{i}.jsonl",
                min_time=args.min_time, budget=args.budget,
            )  # fmt: skip
            runs.append({(r["method"], r["size"]): r for r in res if r["outcome"] == "ok"})
    diffs = []
    print(f"{'method':10s} {'n':>8s} {'ratio 1':>10s} {'ratio 2':>10s} {'diff':>7s}")
    for key in sorted(set(runs[0]) & set(runs[1])):
        a, b = runs[0][key]["ratio"], runs[1][key]["ratio"]
        diffs.append(abs(a - b) / min(a, b))
        print(f"{key[0]:10s} {runs[0][key]['n']:8d} {a:10.3g} {b:10.3g} {diffs[-1]:7.1%}")
    if diffs:
        print(f"median difference {statistics.median(diffs):.1%}, largest {max(diffs):.1%}")


if __name__ == "__main__":
    main()
