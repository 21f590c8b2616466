"""The long differential fuzzing run (issue 17): thousands of random programs, every method.

Uses the generator and judge of ``tests/test_fuzz.py``: each example draws a dtype, a program
(a recipe) and a point with special values; ``dual``, ``tape``, ``jax-fwd``, ``jax-rev`` and
(where it applies) ``fd`` are judged against JAX; ``symbolic`` on a share of small programs
in float64. Prints the programs tried, the outcomes per method, and every disagreement with
the call that reproduces it (``check(recipe, point, dtype, methods)`` in tests/test_fuzz.py).

    python benchmarks/fuzz_long.py --examples 2000 --seed 1 --minutes 10
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import test_fuzz as fz
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st


def _replacements(r: tuple) -> list[tuple]:
    """Smaller programs: each node replaced by one of its children of the same shape, by
    ``x`` or by a constant; recursively, one replacement at a time."""
    kind, *a = r
    want = fz.shape(r)
    out = [t for t in a if isinstance(t, tuple) and fz.shape(t) == want]
    out += [("x",)] if want == "v" and r != ("x",) else []
    out += [("const", 1.5)] if want == "s" and kind != "const" else []
    for i, t in enumerate(a):
        if isinstance(t, tuple) and t[0] != "guard":
            out += [(kind, *a[:i], u, *a[i + 1 :]) for u in _replacements(t)]
        elif isinstance(t, tuple):  # keep the guard, shrink inside it
            out += [(kind, *a[:i], (t[0], t[1], u), *a[i + 1 :]) for u in _replacements(t[2])]
    return out


def reduce(recipe: tuple, point: tuple, dtype: str, method: str) -> tuple[tuple, tuple]:
    """Greedy reduction of a finding to the smallest program and the plainest point (each
    coordinate tried at 1.0) on which ``method`` still disagrees with JAX."""

    def fails(r: tuple, p: tuple) -> bool:
        try:
            return bool(fz.findings(fz.check(r, p, dtype, (method,))))
        except Exception:  # JAX itself fails on the candidate: not this finding
            return False

    changed = True
    while changed:
        changed = False
        for r in sorted(_replacements(recipe), key=fz.size):
            if fz.size(r) < fz.size(recipe) and fails(r, point):
                recipe, changed = r, True
                break
        for i in range(len(point)):
            p = (*point[:i], 1.0, *point[i + 1 :])
            if p != point and fails(recipe, p):
                point, changed = p, True
    return recipe, point


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; exit status 1 if any disagreement or error was found."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=2000, help="programs to try")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=10.0, help="stop drawing after this long")
    p.add_argument("--depth", type=int, default=3, help="program depth (symbolic: depth - 1)")
    p.add_argument("--symbolic-every", type=int, default=10, help="symbolic on 1 in k (0: off)")
    p.add_argument("--no-reduce", action="store_true", help="report findings unreduced")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")

    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    refusals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    found: list[str] = []
    tried = [0]
    start = time.perf_counter()
    deadline = start + 60 * args.minutes

    @seed(args.seed)
    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # findings are recorded, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        dtype = data.draw(st.sampled_from(["float64", "float32"]))
        symbolic = (
            args.symbolic_every > 0
            and dtype == "float64"
            and data.draw(st.integers(0, args.symbolic_every // 2 - 1)) == 0
        )
        recipe = data.draw(fz.recipes(args.depth - 1 if symbolic else args.depth))
        point = data.draw(fz.points(dtype, special=data.draw(st.integers(0, 2)) > 0))
        if time.perf_counter() > deadline:  # draw as always (hypothesis replays), skip
            return
        methods = fz.FAST + (("symbolic",) if symbolic else ())
        tried[0] += 1
        try:
            outcomes = fz.check(recipe, point, dtype, methods)
        except Exception as e:  # JAX itself failed on the program: a generator bug
            counts["jax"][f"ERROR {type(e).__name__}"] += 1
            found.append(f"jax ERROR {type(e).__name__}: {e}\n  {recipe!r} {point!r} {dtype}")
            return
        for o in outcomes:
            counts[o.method][o.status] += 1
            if o.status == "refused":
                refusals[o.method][o.detail[:120]] += 1
        bad = fz.findings(outcomes)
        for o in bad:
            r, pt = (recipe, point) if args.no_reduce else reduce(recipe, point, dtype, o.method)
            again = fz.findings(fz.check(r, pt, dtype, (o.method,))) or [o]
            found.append(fz._report(r, pt, dtype, again))
            print(found[-1], flush=True)
        if tried[0] % 100 == 0:
            print(f"... {tried[0]} programs, {time.perf_counter() - start:.0f} s", flush=True)

    run()
    wall = time.perf_counter() - start
    print(f"\nprograms tried: {tried[0]} in {wall:.0f} s (seed {args.seed})")
    for method in (*fz.METHODS, "jax"):
        if counts[method]:
            print(
                f"  {method:9s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts[method].items()))
            )
    for method, msgs in refusals.items():
        for msg, k in msgs.most_common(5):
            print(f"  {method} refused {k}x: {msg}")
    print(f"disagreements and errors: {len(found)}")
    for f in found:
        print(f)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
