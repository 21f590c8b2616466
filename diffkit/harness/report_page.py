"""The results report: one self-contained page from a sweep's records: a method x problem heat
map of the derivative/primal ratio (failed cases grey, their reason on hover), per-problem
charts of time, ratio and accuracy against n on log axes with the fitted slopes drawn,
filters by dtype, backend and method, and each point's record with the command that
measures it again.

The slopes are :meth:`Results.fit_exponents`'; each fitted line is drawn through the mean of
the logs of the points in its fitted range (where a least-squares line passes).

Example:
    >>> from diffkit.harness import Results
    >>> recs = [{"problem": "p", "size": n, "n": n, "m": 1, "method": "a", "dtype": "float32",
    ...          "outcome": "ok", "time_median": 1e-6 * n, "primal_median": 1e-6,
    ...          "ratio": float(n), "passes": n, "meta": {"backend": "cpu"}, "key": str(n)}
    ...         for n in (10, 100, 1000)]
    >>> rep = page(Results(recs))
    >>> [round(f["slope_time"], 6) for f in rep.data["fits"]]
    [1.0]
    >>> rep.data["records"][0]["command"]
    'diffkit compare --problem p --sizes 10 --methods a --dtype float32 --backend cpu'
    >>> rep.data["colours"]  # the PNGs' colours (harness.plots.colours)
    {'a': '#bcbd22'}
"""

from __future__ import annotations

import math
import shlex
import statistics
from typing import TYPE_CHECKING, Any

from diffkit.harness.plots import colours
from diffkit.harness.record import SPARSE, Record, field_named
from diffkit.html.page import Page

if TYPE_CHECKING:  # results.py builds its notebook view with page(): it imports this module
    from diffkit.harness.results import Results

__all__ = ["Report", "command", "page", "patterns"]

_BODY = """
<header>
  <h1 id="title"></h1>
  <p class="lead" id="summary"></p>
</header>
<main>
  <section class="filters" id="filters" aria-label="Filters"></section>
  <section aria-labelledby="heat-heading">
    <h2 id="heat-heading">Derivative cost: time of the derivative / time of the function</h2>
    <p class="hint">One cell per method and case; grey: the case did not finish (hover or
    focus it for the reason); click a cell for its record.</p>
    <div class="scroll"><table id="heat" class="numbers heat"></table></div>
  </section>
  <section aria-labelledby="record-heading">
    <h2 id="record-heading">Selected record</h2>
    <div id="record" aria-live="polite"><p class="hint">Click a cell or a point.</p></div>
  </section>
  <section aria-labelledby="charts-heading">
    <h2 id="charts-heading">Against n, per problem (log axes; dashed: fitted slope)</h2>
    <div id="charts"></div>
  </section>
  <section aria-labelledby="patterns-heading" id="patterns-section" hidden>
    <h2 id="patterns-heading">Sparsity patterns of the compressed Jacobians</h2>
    <p class="hint">Outputs down, inputs across, at each problem's largest measured size;
    darker blocks hold more nonzeros. One pass per colour replaces one per column (or row).</p>
    <div id="patterns" class="charts"></div>
  </section>
</main>
<div class="tip" id="tip" role="tooltip"></div>
"""


class Report(Page):
    """A results report: ``data`` (records, fits, commands), ``html`` (the page),
    ``save(path)``; renders inline in notebooks."""

    script, body = "report", _BODY


def command(r: Record) -> str:
    """The command line that measures the case of record ``r`` again.

    Example:
        >>> command({"problem": "user", "problem_options": {"target": "m.py:f", "inputs": "n"},
        ...          "size": 10, "method": "tape", "dtype": "float64", "budget": 30.0})
        'diffkit compare m.py:f --input n --sizes 10 --methods tape --dtype float64 --budget 30'
    """
    opts = dict(r.get("problem_options") or {})
    if r["problem"] == "user":
        words = ["diffkit", "compare", str(opts.pop("target")), "--input", str(opts.pop("inputs"))]
    else:
        words = ["diffkit", "compare", "--problem", r["problem"]]
    words += ["--sizes", str(r.get("size")), "--methods", r["method"], "--dtype", r["dtype"]]
    meta = r.get("meta") or {}
    if meta.get("backend") in ("cpu", "gpu", "tpu"):
        words += ["--backend", meta["backend"]]
    if meta.get("matmul_precision", "default") != "default":
        words += ["--matmul-precision", meta["matmul_precision"]]
    if r.get("budget"):
        words += ["--budget", f"{r['budget']:g}"]
    line = shlex.join(words)
    other = {k: v for k, v in {**opts, **(r.get("method_options") or {})}.items() if v}
    return line + (f"  # with options {other}" if other else "")


def page(results: Results, title: str = "") -> Report:
    """The report page of ``results`` (a :class:`~diffkit.harness.results.Results`; the
    public :func:`diffkit.html.report` also takes results folders and files).

    Example:
        >>> from diffkit.harness import Results
        >>> r = page(Results([{"problem": "p", "method": "a", "dtype": "float32",
        ...     "outcome": "timeout", "message": "over 60 s", "key": "k"}]))
        >>> r.data["records"][0]["outcome"], "<svg" in r.html or "heat" in r.html
        ('timeout', True)
    """
    records = [
        {k: v for k, v in r.items() if k != "pattern_cells"}  # drawn once, in "patterns"
        | {"command": command(r), "backend": (r.get("meta") or {}).get("backend", "?")}
        for r in results
    ]
    fits = [_fit_line(f, results) for f in results.fit_exponents()]
    where = str(results.path) if results.path else ""
    palette = colours(r["method"] for r in results)  # the PNGs' colours
    data = {"title": title or where or "results", "records": records, "fits": fits}
    return Report(data | {"colours": palette, "patterns": patterns(results)})


def patterns(results: Results) -> list[dict[str, Any]]:
    """The sparsity pattern of each problem's compressed Jacobians (``+sparse`` cases), at
    its largest measured size: the pattern drawn small (``shape``, ``grid``, ``cells``:
    :func:`~diffkit.harness.measure.pattern_cells`), its ``nnz``, and per method its
    colours, mode and dense / compressed time there.

    Example:
        >>> from diffkit.harness import Results
        >>> cells = {"shape": [4, 4], "grid": [2, 2], "cells": [[0, 0, 2], [1, 1, 2]]}
        >>> recs = [{"problem": "p", "size": 2, "n": 4, "m": 4, "method": "jax-fwd",
        ...          "outcome": "ok", "time_median": 4e-6},
        ...         {"problem": "p", "size": 2, "n": 4, "m": 4, "method": "jax-fwd+sparse",
        ...          "outcome": "ok", "time_median": 1e-6, "nnz": 4, "colours": 1,
        ...          "sparse_mode": "fwd", "pattern_cells": cells}]
        >>> [(p["problem"], p["nnz"], p["methods"]) for p in patterns(Results(recs))]
        [('p', 4, [{'method': 'jax-fwd', 'colours': 1, 'mode': 'fwd', 'speedup': 4.0}])]
    """
    drawn = [r for r in results if r.get("pattern_cells") and r.get("outcome") == "ok"]
    out = []
    for problem in sorted({r["problem"] for r in drawn}):
        mine = [r for r in drawn if r["problem"] == problem]
        size = max(r.get("size") or 0 for r in mine)
        here = [r for r in mine if (r.get("size") or 0) == size]
        dense = {
            (r["method"], r.get("dtype")): r["time_median"]
            for r in results
            if r["problem"] == problem and (r.get("size") or 0) == size
            and r.get("outcome") == "ok" and r.get("time_median")
        }  # fmt: skip
        methods = []
        for r in sorted(here, key=lambda r: r["method"]):
            base = r["method"].removesuffix(SPARSE)
            d = dense.get((base, r.get("dtype")))
            speedup = d / r["time_median"] if d and r.get("time_median") else None
            methods.append(
                {"method": base, "colours": r.get("colours"), "mode": r.get("sparse_mode"),
                 "speedup": speedup}
            )  # fmt: skip
        first = here[0]
        out.append(
            {"problem": problem, "size": size, "n": first.get("n"), "m": first.get("m"),
             "nnz": first.get("nnz"), **first["pattern_cells"], "methods": methods}
        )  # fmt: skip
    return out


def _fit_line(fit: dict[str, Any], results: Results) -> dict[str, Any]:
    """A fit of :meth:`Results.fit_exponents`, with the ends of its time and ratio lines."""
    fit = dict(fit)
    if fit["slope_time"] is None:
        return fit
    axis, (lo, hi) = fit["against"], fit["range"]
    used = [
        r for r in results
        if r["outcome"] == "ok" and r.get("time_median")
        and (r["problem"], r["method"], r["dtype"]) == (fit["problem"], fit["method"], fit["dtype"])
        and (r.get("meta") or {}).get("backend", "?") == fit["backend"]
        and lo <= r.get(axis, math.nan) <= hi
    ]  # fmt: skip
    mx = statistics.fmean(math.log(field_named(r, axis)) for r in used)
    for key, slope in (("time_median", "slope_time"), ("ratio", "slope_ratio")):
        my = statistics.fmean(math.log(field_named(r, key)) for r in used)
        fit[f"line_{key}"] = [[x, math.exp(my + fit[slope] * (math.log(x) - mx))] for x in (lo, hi)]
    return fit
