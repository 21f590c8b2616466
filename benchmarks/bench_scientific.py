"""Speed of the hand-written interpreters against JAX on the scientific real-code cases.

    python benchmarks/bench_scientific.py [--repeats 30] [--cases SUBSTRING]
                                          [--pairs tape/jax-rev,dual/jax-fwd]

For each pair (``tape/jax-rev``, ``dual/jax-fwd``) and each case of tests/scientific_cases.py
that both methods differentiate (float64), the two gradient functions are jit-compiled and
warmed up, then timed interleaved: each repeat calls both, alternating which goes first, each
call blocked on (``block_until_ready``; a sample is several calls in a row where one call
takes under 2 ms, the same number for both). It prints each case's median time of both and their
ratio, and per pair the median of the ratios (issue 32's target: <= 1.10). A case that one
of the two cannot differentiate, or that gives a different gradient (rho > 1e-10), is listed
and left out of the median.

Run it on an otherwise idle machine: the ratio of two medians taken side by side is robust
to a steady load, not to a bursty one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

SAMPLE_S = 2e-3  # one timing sample lasts at least this long (several calls if need be)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _timed(fn, x, inner: int = 1) -> float:  # type: ignore[no-untyped-def]
    """Seconds per call, over ``inner`` calls in a row (each blocked on)."""
    import jax

    start = time.perf_counter()
    for _ in range(inner):
        jax.block_until_ready(fn(x))
    return (time.perf_counter() - start) / inner


def bench_pair(name: str, mine: str, theirs: str, repeats: int) -> tuple[float, float] | str:
    """``(median seconds of mine, of theirs)``, or why the case is left out."""
    import jax
    import scientific_cases as sc

    import diffkit as dk
    from diffkit.accuracy import rho_tree

    f, x = sc.built(name)
    fns = {}
    for method in (mine, theirs):
        fn = jax.jit(dk.get(method).grad(f))
        try:
            got = jax.block_until_ready(fn(x))  # compile and warm up
        except Exception as e:
            return f"{method} raises {type(e).__name__}: {str(e).splitlines()[0][:160]}"
        if rho_tree(got, sc.reference(name)) > sc.TOL:
            return f"{method} differs from jax.grad"
        fns[method] = fn
    # calls per sample, the same for both: a sample of at least SAMPLE_S seconds (small
    # cases run in microseconds, where one call's timing is mostly the timer and dispatch)
    once = max(min(_timed(fn, x) for _ in range(3)) for fn in fns.values())
    inner = max(1, int(SAMPLE_S / max(once, 1e-7)))
    times: dict[str, list[float]] = {mine: [], theirs: []}
    for r in range(repeats):
        order = (mine, theirs) if r % 2 == 0 else (theirs, mine)
        for method in order:
            times[method].append(_timed(fns[method], x, inner))
    return statistics.median(times[mine]), statistics.median(times[theirs])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--cases", default="", help="only cases whose name contains this")
    p.add_argument("--pairs", default="tape/jax-rev,dual/jax-fwd")
    a = p.parse_args(argv)

    import jax
    import scientific_cases as sc

    cases = [c.name for c in sc.CASES if a.cases in c.name]
    with jax.enable_x64(True):
        for pair in a.pairs.split(","):
            mine, theirs = pair.split("/")
            print(f"\n{mine} / {theirs}: median seconds (interleaved, {a.repeats} repeats)")
            print(f"  {'case':38s} {mine:>10s} {theirs:>10s} {'ratio':>7s}")
            ratios, left_out = [], []
            for name in cases:
                result = bench_pair(name, mine, theirs, a.repeats)
                if isinstance(result, str):
                    left_out.append(f"{name}: {result}")
                    continue
                t_mine, t_theirs = result
                ratios.append(t_mine / t_theirs)
                print(f"  {name:38s} {t_mine:10.2e} {t_theirs:10.2e} {ratios[-1]:7.2f}")
            if ratios:
                print(f"  median of {len(ratios)} ratios: {statistics.median(ratios):.2f}")
            for line in left_out:
                print(f"  left out: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
