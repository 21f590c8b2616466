"""Census of the scientific real-code cases: every case, every method, one verdict each.

    python benchmarks/scientific_census.py [--methods dual,tape,...] [--cases SUBSTRING]
                                           [--symbolic-budget SECONDS] [--jsonl FILE]

The cases are tests/scientific_cases.py (diffrax, lineax, optimistix, equinox, jax-md,
TFP's JAX substrate; the ``scientific`` extra installs them), in float64. Each method's
gradient (jitted; symbolic compiles its own) is judged against ``jax.grad``:

- exact: rho <= 1e-10 (fd: within its own error estimate plus the case's ``approx``, the
  estimate itself below 1e-4 relative);
- refused: a diffkit error of one line naming the primitive and a source line (for jax-fwd
  and jax-rev: any exception, JAX's own refusal); a refusal whose site does not name the
  library function the user called (``diffeqsolve``, ``linear_solve``, ...) is still counted
  refused, and the listing says so;
- crash: any other exception (a raw ValueError, RecursionError, ...; or a diffkit error of
  several lines or without the primitive or the line);
- wrong: a gradient that differs.

It prints a table per library per method (exact/refused/crash/wrong) and lists every
outcome that is not exact with its one-line message. Slow (minutes: diffrax compiles
slowly); symbolic runs with a short time budget per stage (``--symbolic-budget``, 20 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

# XLA compiles fast rather than well, as in the test suite (tests/conftest.py): the census is
# mostly compilation; a flag the caller set is left as given
for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()

VERDICTS = ("exact", "refused", "crash", "wrong")
ALL_METHODS = ("dual", "tape", "jax-fwd", "jax-rev", "fd", "symbolic")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--cases", default="", help="only cases whose name contains this")
    p.add_argument("--symbolic-budget", type=float, default=20.0)
    p.add_argument("--jsonl", default="", help="also write one JSON line per outcome here")
    a = p.parse_args(argv)

    import jax
    import scientific_cases as sc

    methods = [m for m in a.methods.split(",") if m]
    cases = [c for c in sc.CASES if a.cases in c.name]
    rows: list[dict] = []
    out = open(a.jsonl, "w") if a.jsonl else None
    start = time.perf_counter()
    with jax.enable_x64(True):
        for case in cases:
            try:
                sc.built(case.name)
                sc.reference(case.name)
            except Exception as e:  # the case itself does not run: say so, skip it
                print(f"! {case.name}: cannot build: {type(e).__name__}: {e}", flush=True)
                continue
            for method in methods:
                outcome = sc.run(case.name, method, symbolic_budget=a.symbolic_budget)
                verdict, message = sc.judge(case.name, method, outcome)
                row = {
                    "case": case.name,
                    "library": case.library,
                    "method": method,
                    "verdict": verdict,
                    "message": message,
                    "seconds": round(outcome.seconds, 2),
                }
                rows.append(row)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                print(
                    f"  {case.name:38s} {method:9s} {verdict:8s} {outcome.seconds:6.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
    if out:
        out.close()
    print(render(rows, methods))
    print(f"({len(rows)} outcomes in {time.perf_counter() - start:.0f} s)")
    return 0


def render(rows: list[dict], methods: list[str]) -> str:
    """The table (library x method: exact/refused/crash/wrong of n) and the non-exact list."""
    libraries = list(dict.fromkeys(r["library"] for r in rows))
    counts = Counter((r["library"], r["method"], r["verdict"]) for r in rows)
    cases = Counter(r["library"] for r in rows if r["method"] == methods[0])
    lines = ["per library, per method: exact/refused/crash/wrong (of n cases)", ""]
    header = f"{'library':12s} {'n':>3s} " + " ".join(f"{m:>14s}" for m in methods)
    lines += [header, "-" * len(header)]
    for lib in [*libraries, "all"]:
        libs = libraries if lib == "all" else [lib]
        cells = []
        for m in methods:
            c = [sum(counts[(x, m, v)] for x in libs) for v in VERDICTS]
            cells.append(f"{'/'.join(map(str, c)):>14s}")
        n = sum(cases[x] for x in libs)
        lines.append(f"{lib:12s} {n:>3d} " + " ".join(cells))
    lines += ["", "not exact:"]
    for r in rows:
        if r["verdict"] != "exact":
            msg = r["message"] if len(r["message"]) <= 400 else r["message"][:400] + " ..."
            lines.append(f"  {r['case']} | {r['method']} | {r['verdict']} | {msg}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
