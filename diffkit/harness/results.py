"""Results of a sweep: loading, tables (one column spec), CSV, scaling exponents, crossovers,
the verdict, plots.

Example:
    >>> from diffkit.harness import Results
    >>> res = Results([{"problem": "p", "method": "a", "dtype": "float32", "n": n, "m": 1,
    ...                 "size": n, "outcome": "ok", "time_median": 1e-6 * n, "passes": n,
    ...                 "primal_median": 1e-6, "ratio": n, "meta": {"backend": "cpu"}}
    ...                for n in (10, 100, 1000)])
    >>> round(res.fit_exponents()[0]["slope_time"], 3)
    1.0
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from diffkit._core.errors import DiffkitError
from diffkit.harness.record import OK, REQUIRED, SPARSE, Record, field_named
from diffkit.harness.report_page import Report, page

__all__ = [
    "COLUMNS",
    "SUMMARY",
    "TABLE",
    "Results",
    "fmt",
    "fmt_time",
    "load",
    "load_results",
    "read_records",
    "report",
]


def read_records(path: str | Path, strict: bool = False) -> list[Record]:
    """Every complete record of a JSON-lines file. A torn (half-written) record is
    skipped; other lines that are not diffkit records are skipped too, or with ``strict``
    raise a one-line :class:`DiffkitError` naming the line.

    Example:
        >>> import json, tempfile
        >>> rec = {"key": "k", "outcome": "ok", "problem": "p", "method": "a", "dtype": "float32"}
        >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        ...     _ = f.write(json.dumps(rec) + '\\n{"other": 1}\\n{"key": "torn')
        >>> len(read_records(f.name))
        1
        >>> read_records(f.name, strict=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        diffkit._core.errors.DiffkitError: ...:2: not a diffkit record (no 'key'); ...
    """
    records: list[Record] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == last or line.startswith('{"'):  # torn by an interrupted write
                continue
            rec, problem = None, "not JSON"
        if isinstance(rec, dict):
            missing = [k for k, t in REQUIRED.items() if not isinstance(rec.get(k), t)]
            if not missing:  # a JSON object with the required fields: a record
                records.append(cast(Record, rec))
                continue
            problem = f"no {missing[0]!r}" if missing[0] not in rec else f"bad {missing[0]!r}"
        elif rec is not None:
            problem = f"a JSON {type(rec).__name__}, not an object"
        if strict:
            raise DiffkitError(
                f"{path}:{i + 1}: not a diffkit record ({problem}); remove the line, or "
                "start a new results file (diffkit compare --fresh moves this one aside)"
            )
    return records


def load(path: str | Path) -> Results:
    """Load a sweep's JSON-lines file; when a case appears twice, its last record wins.
    A line that is not a diffkit record is an error naming it (a torn last line is skipped)."""
    unique = {r["key"]: r for r in read_records(path, strict=True)}
    return Results(list(unique.values()), path=Path(path))


def fmt_time(t: float | None) -> str:
    """A duration in s, ms, us or ns, three digits.

    Example:
        >>> fmt_time(0.00123), fmt_time(None)
        ('1.23 ms', '-')
    """
    if t is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def fmt(value: Any, digits: int = 3) -> str:
    """A record's value for a table cell: ``-`` for None, yes/NO for booleans.

    Example:
        >>> fmt(0.012345), fmt(False), fmt(None)
        ('0.0123', 'NO', '-')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if value != 0 else "0"
    return str(value)


def fmt_n(n: int) -> str:
    """A whole number with thin thousands separators: ``10 000``."""
    return f"{n:,}".replace(",", " ")


def fmt_ratio(ratio: float) -> str:
    """A cost ratio: two digits below 10, a whole number above (``19 800x``)."""
    return f"{ratio:.2g}x" if ratio < 10 else fmt_n(round(float(f"{ratio:.3g}"))) + "x"


#: A timing is noisy when its interquartile range exceeds this fraction of its median ...
NOISY_IQR = 0.5
#: ... or when it rests on fewer samples than this (a slow derivative is timed once).
MIN_SAMPLES = 10


def noise(r: Mapping[str, Any]) -> str:
    """Why the derivative's timing in record ``r`` is noisy: its IQR over :data:`NOISY_IQR`
    of its median, or under :data:`MIN_SAMPLES` samples (also counted for the primal, which
    the ratio rests on; a primal timed thousands of times has a firm median however wide its
    spread); ``""`` when it is not (or was not recorded).

    Example:
        >>> noise({"time_median": 1.0, "time_iqr": 1.2, "time_n": 4})
        'IQR 120% of the median, 4 samples'
        >>> noise({"time_median": 1.0, "time_iqr": 0.1, "time_n": 40, "primal_n": 3})
        'primal 3 samples'
    """
    why = []
    median, iqr = r.get("time_median"), r.get("time_iqr")
    if median and iqr is not None and iqr > NOISY_IQR * median:
        why.append(f"IQR {iqr / median:.0%} of the median")
    for prefix, what in (("time", ""), ("primal", "primal ")):
        n = r.get(f"{prefix}_n")
        if n is not None and n < MIN_SAMPLES:
            why.append(f"{what}{n} sample{'s' if n != 1 else ''}")
    return ", ".join(why)


def _outcome_note(r: Record) -> str:
    """The outcome, INACCURATE for an ok result outside the tolerance, with the message."""
    outcome = r["outcome"]
    if outcome == OK and r.get("accurate") is False:
        return "INACCURATE"
    if outcome != OK and r.get("message"):
        return outcome + f": {r['message'][:50]}"
    return outcome


def _timing_note(r: Record) -> str:
    """``noisy (why)`` for an ok result whose timing is noisy (:func:`noise`), else ``-``."""
    why = noise(r) if r["outcome"] == OK else ""
    return f"noisy ({why})" if why else "-"


def _x_primal(r: Record) -> str:
    ratio = r.get("ratio")
    return "-" if ratio is None else f"{ratio:,.3g}" if ratio < 1e3 else f"{ratio:,.0f}"


def _method(r: Record) -> str:
    """The method; for a nested problem (an ``inner`` option) the pair ``outer x inner``."""
    inner = (r.get("problem_options") or {}).get("inner")
    return r["method"] if inner is None else f"{r['method']} x {inner}"


def _evaluations(r: Record) -> str:
    evals = r.get("evaluations") if r.get("evaluations") is not None else r.get("passes")
    return "-" if evals is None else f"{evals:,}"


#: Every column a table of records can show: name -> (header, how to show a record).
#: :data:`TABLE` and :data:`SUMMARY` choose from it.
COLUMNS: dict[str, tuple[str, Callable[[Record], str]]] = {
    "problem": ("problem", lambda r: r["problem"]),
    "size": ("size", lambda r: fmt(r.get("size"))),
    "n": ("n", lambda r: fmt(r.get("n"))),
    "m": ("m", lambda r: fmt(r.get("m"))),
    "method": ("method", _method),
    "dtype": ("dtype", lambda r: r["dtype"].replace("float", "f")),
    "outcome": ("outcome", lambda r: r["outcome"]),
    "compile": ("compile", lambda r: fmt_time(r.get("compile_s"))),
    "time": ("time", lambda r: fmt_time(r.get("time_median"))),
    "iqr%": ("iqr%", lambda r: fmt(_iqr_percent(r), 2)),
    "samples": ("samples", lambda r: fmt(r.get("time_n"))),
    "primal": ("primal", lambda r: fmt_time(r.get("primal_median"))),
    "ratio": ("ratio", lambda r: fmt(r.get("ratio"))),
    "x primal": ("x primal", _x_primal),
    "passes": ("passes", lambda r: fmt(r.get("passes"))),
    "evaluations": ("evaluations", _evaluations),
    "rho max": ("rho max", lambda r: fmt(r.get("rho_max"), 2)),
    "cosine": ("cosine", lambda r: fmt(r.get("cosine"), 2)),
    "2nd moment": ("E|g|²/|g|² (theory)", lambda r: _second_moment(r)),
    "accurate": ("accurate", lambda r: fmt(r.get("accurate"))),
    "message": ("message", lambda r: (r.get("message") or "")[:60]),
    "outcome note": ("outcome", _outcome_note),
    "timing": ("timing", _timing_note),
}
#: Columns of :meth:`Results.table`: every field worth a column.
TABLE = (
    "problem", "size", "n", "m", "method", "dtype", "outcome", "compile", "time", "iqr%", "samples",
    "primal", "ratio", "passes", "rho max", "cosine", "2nd moment", "accurate", "message", "timing",
)  # fmt: skip
#: Columns of ``diffkit compare``'s table: what a reader compares.
SUMMARY: tuple[str, ...] = (
    "problem",
    "size",
    "n",
    "m",
    "method",
    "time",
    "x primal",
    "evaluations",
)
SUMMARY += ("rho max", "cosine", "outcome note", "timing")
#: Columns shown only where a stochastic estimator's records are in the table.
ESTIMATOR_COLUMNS = ("cosine", "2nd moment")


def constant_n(records: Sequence[Record]) -> set[str]:
    """Problems whose n and m stay put while their size varies (logistic-map's steps, lstm's
    sequence length): their tables need a size column and their plots the size as x axis.

    Example:
        >>> sorted(constant_n([{"problem": "logistic-map", "size": s, "n": 1, "m": 1}
        ...                    for s in (1, 8)]
        ...                   + [{"problem": "mlp", "size": s, "n": s, "m": 1} for s in (10, 100)]))
        ['logistic-map']
    """
    sizes: dict[str, set[Any]] = {}
    shapes: dict[str, set[Any]] = {}
    for r in records:
        if r.get("size") is not None and r.get("n") is not None:
            sizes.setdefault(r["problem"], set()).add(r["size"])
            shapes.setdefault(r["problem"], set()).add((r["n"], r.get("m")))
    return {p for p in sizes if len(shapes[p]) < len(sizes[p])}


def _second_moment(r: Record) -> str:
    """A stochastic estimate's measured second moment, with its theoretical value."""
    if r.get("second_moment") is None:
        return "-"
    return f"{fmt(r['second_moment'])} ({fmt(r.get('second_moment_theory'))})"


def _iqr_percent(r: Record) -> float | None:
    if r.get("time_iqr") is None or not r.get("time_median"):
        return None
    return 100.0 * r["time_iqr"] / r["time_median"]


def _flatten(rec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def _ms(r: Record | None) -> str:
    """A record's median in milliseconds, or "-" for a case that did not finish."""
    return f"{r['time_median'] * 1e3:.3f} ms" if r else "-"


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Fixed-width text: the headers, then one line per row."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


class Results:
    """Records of measured cases (dicts, one per case), with views for people and programs.

    Prints as a table; renders as HTML in Jupyter; ``to_csv``, ``to_pandas``;
    ``fit_exponents``, ``crossover``, ``overhead`` and ``plot`` analyse it.
    """

    def __init__(self, records: Sequence[Record], path: Path | None = None) -> None:
        self.records = list(records)
        self.path = path

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def filter(self, **fields: Any) -> Results:
        """The records whose fields equal the given values (a list or tuple: any of them).

        Example:
            >>> from diffkit.harness import Results
            >>> len(Results([{"method": "a"}, {"method": "b"}]).filter(method=["a"]))
            1
        """

        def keep(r: Record) -> bool:
            return all(
                r.get(k) in v if isinstance(v, list | tuple) else r.get(k) == v
                for k, v in fields.items()
            )

        return Results([r for r in self.records if keep(r)], self.path)

    # -------------------------------------------------------------- showing
    def rows(
        self, columns: Sequence[str] = TABLE, by_method: bool = True
    ) -> tuple[list[str], list[list[str]]]:
        """Headers and cells of the named :data:`COLUMNS`, one row per record, ordered by
        problem, dtype, size (and method, with ``by_method``; else in measured order).

        Example:
            >>> Results([{"problem": "p", "method": "a", "dtype": "float32", "n": 3,
            ...           "outcome": "ok"}]).rows(["problem", "n", "outcome"])
            (['problem', 'n', 'outcome'], [['p', '3', 'ok']])
        """

        def order(r: Record) -> tuple[Any, ...]:
            key = (r["problem"], r["dtype"], r.get("size") or 0)
            return (*key, r["method"]) if by_method else key

        if not any(r.get("cosine") is not None for r in self.records):  # no estimator here
            columns = [c for c in columns if c not in ESTIMATOR_COLUMNS]
        if not constant_n(self.records):  # n tells the sizes apart: no size column
            columns = [c for c in columns if c != "size"]
        if not any(r["outcome"] == OK and noise(r) for r in self.records):
            columns = [c for c in columns if c != "timing"]  # no timing is noisy
        shows = [COLUMNS[c] for c in columns]
        rows = [[str(show(r)) for _, show in shows] for r in sorted(self.records, key=order)]
        return [h for h, _ in shows], rows

    def table(self) -> str:
        """A fixed-width text table, one row per case."""
        return _text_table(*self.rows())

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        headers, rows = self.rows()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return table + page(self)._repr_html_()

    def to_csv(self, path: str | Path | None = None) -> str:
        """The records as CSV (nested fields as ``meta.backend`` etc.; a compressed case's
        pattern drawing, ``pattern_cells``, is left to the JSON lines and the report); written
        to ``path`` when given; returns the text."""
        flat = [
            _flatten({k: v for k, v in r.items() if k != "pattern_cells"}) for r in self.records
        ]
        fields = list(dict.fromkeys(k for r in flat for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in flat:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )
        if path is not None:
            Path(path).write_text(buf.getvalue(), encoding="utf-8")
        return buf.getvalue()

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the flattened records (needs pandas)."""
        import pandas as pd  # optional dependency

        return pd.DataFrame([_flatten(r) for r in self.records])

    # ------------------------------------------------------------- analysis
    def _series(self) -> dict[tuple[str, ...], list[Record]]:
        groups: dict[tuple[str, ...], list[Record]] = {}
        for r in self.records:
            if r.get("outcome") == OK and r.get("time_median"):
                key = (
                    r["problem"],
                    json.dumps(r.get("problem_options", {}), sort_keys=True),
                    r["method"],
                    r["dtype"],
                    r.get("meta", {}).get("backend", "?"),
                )
                groups.setdefault(key, []).append(r)
        return groups

    def fit_exponents(
        self, against: str = "auto", floor_factor: float = 3.0, min_points: int = 2
    ) -> list[dict[str, Any]]:
        """Log-log slopes per (problem, problem_options, method, dtype, backend), fitted over
        the sizes where compute dominates: those whose derivative time is at least
        ``floor_factor`` times the series' smallest (below that, dispatch overhead flattens
        the curve).

        ``slope_time`` is the exponent of the derivative's run time, ``slope_primal`` the
        primal's, ``slope_ratio`` that of derivative/primal, next to ``expected_ratio``: the
        exponent of the method's declared passes (n for forward-mode gradients and finite
        differences, 1 for reverse mode). ``against`` is "n", "m", "size" or "auto" (the one
        that varies: n, else m, else size). When only the largest size leaves the floor, the
        ``min_points`` largest are used; a series that never leaves it gets None.
        ``noisy`` counts the points used whose timing is noisy (:func:`noise`): a slope
        fitted over them is uncertain.
        """
        fits = []
        for (problem, options, method, dtype, backend), recs in sorted(self._series().items()):
            recs = sorted(recs, key=lambda r: r.get("size") or 0)
            axis = against
            if axis == "auto":
                axis = next(
                    (a for a in ("n", "m", "size") if len({r.get(a) for r in recs}) > 1), "n"
                )
            floor = min(r["time_median"] for r in recs)
            used = [r for r in recs if r["time_median"] >= floor_factor * floor and r.get(axis)]
            if used and len(used) < min_points:  # only the largest size left the floor: take
                used = recs[-min_points:]  # the sizes just below it too
            fit: dict[str, Any] = {
                "problem": problem,
                "problem_options": json.loads(options),  # e.g. nested pairs' inner method
                "method": method,
                "dtype": dtype,
                "backend": backend,
                "against": axis,
                "points": len(used),
                "noisy": sum(1 for r in used if noise(r)),
                "range": [field_named(r, axis) for r in (used[0], used[-1])] if used else None,
            }
            xs = [field_named(r, axis) for r in used]
            ok = len(used) >= min_points and len(set(xs)) > 1
            fit["slope_time"] = _slope(xs, [r["time_median"] for r in used]) if ok else None
            fit["slope_primal"] = _slope(xs, [r["primal_median"] for r in used]) if ok else None
            fit["slope_ratio"] = _slope(xs, [r["ratio"] for r in used]) if ok else None
            passes = [r.get("passes") for r in used]
            good = ok and all(p for p in passes)
            expected = round(_slope(xs, passes), 3) if good else None  # type: ignore[arg-type]
            fit["expected_ratio"] = expected + 0.0 if expected is not None else None  # no -0.0
            fits.append(fit)
        return fits

    def ratio_view(self) -> str:
        """GradBench's view: derivative time / primal time, one row per problem (and inner
        method) at its largest measured size, one column per method; "-" where not ok.

        Example:
            >>> print(Results([{"problem": "lse", "size": 10, "method": "jax-rev",
            ...                 "outcome": "ok", "ratio": 1.21}]).ratio_view())
            problem  size  jax-rev
            lse      10    1.2
        """
        methods = list(dict.fromkeys(r["method"] for r in self.records))
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for r in sorted(self.records, key=lambda r: r.get("size") or 0):
            inner = (r.get("problem_options") or {}).get("inner")
            key = (r["problem"] + (f" x {inner}" if inner else ""), str(r.get("size")))
            rows = {k: v for k, v in rows.items() if k[0] != key[0]} | {key: rows.get(key, {})}
            ok = r.get("outcome") == OK and r.get("ratio") is not None
            rows[key][r["method"]] = fmt(r["ratio"], 2) if ok else "-"
        cells = [
            [p, size, *(by.get(m, "") for m in methods)] for (p, size), by in sorted(rows.items())
        ]
        return _text_table(["problem", "size", *methods], cells)

    def sparse_view(self) -> str:
        """Dense against compressed (``diffkit compare --sparse``): one row per problem,
        size and method that was measured both ways (``m`` and ``m+sparse``): the passes
        each takes (columns or rows, against colours), the pattern's nonzeros, detection and
        colouring, the two derivatives' medians and the speedup (dense / compressed); "-"
        where a case did not finish.

        Example:
            >>> recs = [{"problem": "p", "size": 8, "n": 128, "method": "jax-fwd",
            ...          "outcome": "ok", "passes": 128, "time_median": 2e-3},
            ...         {"problem": "p", "size": 8, "n": 128, "method": "jax-fwd+sparse",
            ...          "outcome": "ok", "passes": 12, "nnz": 768, "time_median": 1e-4,
            ...          "detect_s": 0.05, "colour_s": 0.01}]
            >>> print(Results(recs).sparse_view())
            problem  n    method   passes  nnz  detect+colour  dense     compressed  speedup
            p        128  jax-fwd  128/12  768  60.0 ms        2.000 ms  0.100 ms    20.0x
        """
        ok = {
            (r["problem"], r.get("size"), r["method"], r.get("dtype")): r
            for r in self.records
            if r.get("outcome") == OK and r.get("time_median")
        }
        seen = {(r["problem"], r.get("size"), r["method"], r.get("dtype")) for r in self.records}
        cells = []
        for problem, size, method, dtype in sorted(seen, key=lambda k: (k[0], k[1] or 0, k[2:])):
            if method.endswith(SPARSE) or (problem, size, method + SPARSE, dtype) not in seen:
                continue
            dense, sparse = (
                ok.get((problem, size, method, dtype)),
                ok.get((problem, size, method + SPARSE, dtype)),
            )
            some = sparse or dense or {}
            prep = f"{(sparse['detect_s'] + sparse['colour_s']) * 1e3:.1f} ms" if sparse else "-"
            cells.append([
                problem, str(some.get("n", size)), method,
                f"{dense['passes'] if dense else '-'}/{sparse['passes'] if sparse else '-'}",
                str(sparse["nnz"]) if sparse else "-", prep, _ms(dense), _ms(sparse),
                f"{dense['time_median'] / sparse['time_median']:.1f}x" if dense and sparse else "-",
            ])  # fmt: skip
        head = ["problem", "n", "method", "passes", "nnz", "detect+colour", "dense"]
        return _text_table([*head, "compressed", "speedup"], cells)

    def exponents_table(self, **kwargs: Any) -> str:
        """:meth:`fit_exponents` as a text table."""
        lines = [
            f"{'problem':14s} {'method':10s} {'dtype':8s} {'vs':4s} {'points':>6s} "
            f"{'time':>6s} {'primal':>6s} {'ratio':>6s} {'expected':>8s}  range"
        ]
        for f in self.fit_exponents(**kwargs):
            cells = [fmt(f[k], 2) for k in ("slope_time", "slope_primal", "slope_ratio")]
            noisy = f" ({f['noisy']} of them noisy)" if f["noisy"] and f["range"] else ""
            lines.append(
                f"{f['problem']:14s} {f['method']:10s} {f['dtype']:8s} {f['against']:4s} "
                f"{f['points']:6d} {cells[0]:>6s} {cells[1]:>6s} {cells[2]:>6s} "
                f"{fmt(f['expected_ratio'], 2):>8s}  {f['range'] or '(dispatch-bound)'}{noisy}"
            )
        return "\n".join(lines)

    def crossover(
        self,
        a: str = "jax-fwd",
        b: str = "jax-rev",
        problem: str = "wide-output",
        dtype: str = "float32",
    ) -> dict[str, Any]:
        """Where method ``a`` stops or starts beating ``b`` on ``problem`` as m/n varies:
        the per-size times and the m/n at which their ratio crosses 1 (log-interpolated),
        or None when one method wins at every measured size.
        """
        by = {
            (r["method"], r["size"]): r
            for r in self.filter(problem=problem, dtype=dtype, outcome="ok")
            if r["method"] in (a, b)
        }
        sizes = sorted({s for (_, s) in by if (a, s) in by and (b, s) in by})
        rows = [
            {
                "m_over_n": _count(by[(a, s)], "m") / _count(by[(a, s)], "n"),
                a: by[(a, s)]["time_median"],
                b: by[(b, s)]["time_median"],
            }
            for s in sizes
        ]
        cross = None
        for lo, hi in itertools.pairwise(rows):
            r0, r1 = math.log(lo[a] / lo[b]), math.log(hi[a] / hi[b])
            if r0 == 0 or r0 * r1 < 0:
                x0, x1 = math.log(lo["m_over_n"]), math.log(hi["m_over_n"])
                cross = math.exp(x0 + (x1 - x0) * r0 / (r0 - r1)) if r0 != r1 else lo["m_over_n"]
                break
        return {"a": a, "b": b, "problem": problem, "rows": rows, "m_over_n": cross}

    def overhead(self) -> dict[str, float | None]:
        """Harness overhead: median worker start-up, and median per-case time spent outside
        the case's own measurement (parent wall time minus the worker's case time)."""
        starts = [s for r in self.records if (s := r.get("worker_start_s"))]
        extra = [
            r["wall_s"] - r["case_s"] for r in self.records if r.get("wall_s") and r.get("case_s")
        ]
        return {
            "worker_start_s": float(np.median(starts)) if starts else None,
            "workers": len(starts),
            "per_case_s": float(np.median(extra)) if extra else None,
            "case_s": float(np.median([r["case_s"] for r in self.records if r.get("case_s")]))
            if any(r.get("case_s") for r in self.records)
            else None,
        }

    def verdict(self) -> str:
        """One paragraph computed from the records: the cost of each mode at the largest
        measured gradient size, the fastest method on the widest Jacobian, what the
        estimators cost for their accuracy, noisy timings, accuracy, and failures.

        Only results judged accurate are ranked; a stochastic estimate is not the derivative,
        so estimators are ranked among themselves only, by what one exact step's progress
        costs with them. A noisy timing (:func:`noise`) is said to be noisy.

        Example:
            >>> rec = lambda m, mode, ratio: {"problem": "mlp", "quantity": "grad", "n": 10_000,
            ...     "m": 1, "method": m, "mode": mode, "outcome": "ok", "ratio": ratio,
            ...     "accurate": True, "dtype": "float32"}
            >>> print(Results([rec("jax-rev", "reverse", 2.9), rec("fd", "numerical", 19800.0)]
            ...               ).verdict())
            At n=10 000 (mlp, float32) a gradient costs: reverse mode 2.9x the forward pass \
(jax-rev); finite differences 19 800x (fd). Every ok result matched the float64 reference.
        """
        ok = [r for r in self.records if r["outcome"] == OK and r.get("ratio")]
        exact = [r for r in ok if not _estimator(r) and r.get("accurate") is True]
        parts = [
            _gradient_costs([r for r in exact if r.get("quantity") == "grad"]),
            _jacobian_winner([r for r in exact if r.get("quantity") == "jacobian"]),
            _estimator_costs([r for r in ok if _estimator(r)]),
            _noise_note(ok),
            *_accuracy_notes(ok),
        ]
        failed = [r for r in self.records if r["outcome"] != OK]
        if failed:
            kinds = sorted({r["outcome"] for r in failed})
            parts.append(f"{len(failed)} case(s) did not finish ok ({', '.join(kinds)}).")
        return " ".join(p for p in parts if p) or "No case finished."

    def plot(self, folder: str | Path) -> list[Path]:
        """Write PNG plots (time, ratio and accuracy vs n per problem and dtype) to
        ``folder``; returns their paths. Needs matplotlib."""
        from diffkit.harness.plots import plot_results

        return plot_results(self, Path(folder))


# ------------------------------------------------------------------ the verdict's parts

_MODES = {
    "reverse": "reverse mode",
    "forward": "forward mode",
    "symbolic": "symbolic",
    "numerical": "finite differences",
}


def _estimator(r: Record) -> bool:
    """A stochastic estimator's record: judged as an estimate, never as the derivative."""
    return r.get("mode") == "stochastic" or r.get("cosine") is not None


def _noisy(r: Record) -> str:
    return ", noisy" if noise(r) else ""


def _count(r: Record, axis: Literal["n", "m"]) -> int:
    """``n`` or ``m`` of a record that finished ok (both are set before a case is measured)."""
    count = r[axis]
    assert count is not None, f"a record that finished ok has no {axis}: {r.get('key')}"
    return count


def _scale(r: Record) -> tuple[int, int]:
    """(n, size): what orders a problem's gradient cases, the size where n stays put."""
    return _count(r, "n"), r.get("size") or 0


def _at(r: Record, constant: set[str]) -> str:
    """``n=10 000``; ``n=1, size 16`` for a problem whose n stays put (:func:`constant_n`)."""
    size = f", size {fmt_n(r['size'])}" if r["problem"] in constant and r.get("size") else ""
    return f"n={fmt_n(_count(r, 'n'))}{size}"


def _gradient_costs(grads: list[Record]) -> str:
    """The cost ratio of each exact mode at the largest gradient size (its own largest where
    it stopped earlier, or on another problem where it ran only there), from the accurate
    results given; the cheapest result's timing, when noisy, is said to be."""
    if not grads:
        return ""
    constant = constant_n(grads)
    top = max(grads, key=lambda r: (r["n"], r["problem"] == "mlp", r.get("size") or 0))
    same = [r for r in grads if (r["problem"], r["dtype"]) == (top["problem"], top["dtype"])]
    costs: list[str] = []
    for mode, label in _MODES.items():
        of_mode = [r for r in same if r.get("mode") == mode] or [
            r for r in grads if r.get("mode") == mode and r["dtype"] == top["dtype"]
        ]  # a mode run on other problems only (symbolic in the quick suite)
        if of_mode:  # at the largest n (and size) this mode finished
            largest = max(_scale(r) for r in of_mode)
            rs = sorted((r for r in of_mode if _scale(r) == largest), key=lambda r: r["ratio"])
            what = " the forward pass" if not costs else ""
            where = f" at {_at(rs[0], constant)}" if largest != _scale(top) else ""
            if rs[0]["problem"] != top["problem"]:
                where += f" on {rs[0]['problem']}"
            each = ", ".join(dict.fromkeys(r["method"] for r in rs)) + _noisy(rs[0])
            costs.append(f"{label} {fmt_ratio(rs[0]['ratio'])}{what}{where} ({each})")
    head = f"At {_at(top, constant)} ({top['problem']}, {top['dtype']}) a gradient costs: "
    return head + "; ".join(costs) + "."


def _jacobian_winner(jacs: list[Record]) -> str:
    """The fastest and slowest method (of the accurate, exact results given) on the Jacobian
    with the most outputs per input; a noisy timing among the two is said to be."""
    if not jacs:
        return ""
    top = max(jacs, key=lambda r: (_count(r, "m") / max(_count(r, "n"), 1), _count(r, "m")))
    at = sorted(
        (r for r in jacs if (r["problem"], r["size"]) == (top["problem"], top["size"])),
        key=lambda r: r["time_median"],
    )
    if len(at) < 2:
        return ""
    best, worst = at[0], at[-1]
    noisy = [r["method"] for r in (best, worst) if noise(r)]
    return (
        f"For a Jacobian with n={top['n']} inputs and m={fmt_n(_count(top, 'm'))} outputs "
        f"({top['problem']}), {best['method']} ({best.get('mode')} mode) is the fastest "
        f"accurate method, {fmt_ratio(worst['time_median'] / best['time_median'])} faster than "
        f"{worst['method']} ({worst.get('mode')} mode)"
        + (f" (noisy timing: {', '.join(noisy)})." if noisy else ".")
    )


def _estimator_costs(estimates: list[Record]) -> str:
    """The estimators compared among themselves at the largest n they ran: each one's cost
    per estimate, its accuracy (cosine with the exact derivative, second moment against
    theory) and so the cost of one exact step's progress: with a tuned step size a step
    makes about |g|²/E|g|² of an exact step's progress, so that costs ratio x E|g|²/|g|²
    forward passes. Only unbiased estimators (judged accurate) are called cheapest."""
    estimates = [r for r in estimates if r.get("cosine") is not None]
    if not estimates:
        return ""
    top = max(estimates, key=lambda r: (r["n"], r["problem"] == "mlp"))
    at = [r for r in estimates if (r["problem"], r["n"], r["dtype"]) == (
        top["problem"], top["n"], top["dtype"])]  # fmt: skip
    at.sort(key=lambda r: r["method"])
    each = "; ".join(
        f"{r['method']} ({r.get('passes')} pass{'es' if r.get('passes') != 1 else ''}) cosine "
        f"{r['cosine']:.2g}, E|g|²/|g|² {fmt(r.get('second_moment'))} "
        f"(theory {fmt(r.get('second_moment_theory'))}), {fmt_ratio(r['ratio'])} the forward "
        f"pass{' (noisy)' if noise(r) else ''}"
        for r in at
    )
    unbiased = "unbiased but " if all(r.get("accurate") for r in at) else ""
    text = (
        f"The estimators (ranked among themselves only: an estimate is not the derivative) "
        f"are {unbiased}noisy: at n={fmt_n(_count(top, 'n'))} ({top['problem']}) {each}: with "
        "a tuned step size, a step makes about |g|²/E|g|² of an exact gradient step's "
        "progress on a smooth loss"
    )
    step = {
        r["method"]: r["ratio"] * r["second_moment"]
        for r in at
        if r.get("accurate") is True and r.get("second_moment")
    }
    if not step:
        return text + "."
    cheapest = min(step, key=lambda m: step[m])
    costs = [f"{fmt_ratio(c)} by {m}" for m, c in sorted(step.items(), key=lambda i: i[1])]
    costs[0] = costs[0].replace("x by", "x the forward pass by", 1)
    return (
        f"{text}, so one exact step's progress costs about {', '.join(costs)}: {cheapest} is "
        "the cheapest estimator here."
    )


def _noise_note(ok: list[Record]) -> str:
    """The results whose timings are noisy (:func:`noise`), first four named."""
    noisy = [r for r in ok if noise(r)]
    if not noisy:
        return ""
    constant = constant_n(ok)
    named = "; ".join(
        f"{r['method']} on {r['problem']} {_at(r, constant)} ({noise(r)})" for r in noisy[:4]
    )
    more = f" and {len(noisy) - 4} more" if len(noisy) > 4 else ""
    return (
        f"Noisy timings (IQR over {NOISY_IQR:.0%} of the median, or under {MIN_SAMPLES} "
        f"samples; their ratios and any slope fitted over them are uncertain): {named}{more}."
    )


def _accuracy_notes(ok: list[Record]) -> list[str]:
    """Whether every ok result matched the reference, else which did not; a note on TF32
    where float32 AD results on a GPU at the default matmul precision were inaccurate."""
    if not ok:
        return []
    bad = [r for r in ok if r.get("accurate") is False]
    if not bad:
        return ["Every ok result matched the float64 reference."]
    constant = constant_n(ok)
    named = ", ".join(
        f"{r['method']} on {r['problem']} {_at(r, constant)}"
        + (f" m={r['m']}" if _count(r, "m") > 1 else "")
        for r in bad[:4]
    )
    notes = [
        f"Outside the tolerance: {named}{f' and {len(bad) - 4} more' if len(bad) > 4 else ''}."
    ]
    if any(
        r["dtype"] == "float32"
        and r.get("mode") != "numerical"
        and r.get("meta", {}).get("backend") == "gpu"
        and r.get("meta", {}).get("matmul_precision", "default") == "default"
        for r in bad
    ):
        notes.append(
            "On GPUs, float32 matrix products default to reduced precision (TF32 on NVIDIA, "
            "about 3 digits), which derivatives inherit: --matmul-precision highest gives "
            "full float32."
        )
    return notes


def load_results(paths: Sequence[str | Path]) -> Results:
    """The records of results folders (their ``results.jsonl``) and JSON-lines files; a case
    found twice keeps its last record.

    Example:
        >>> load_results(["no/such/folder"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        diffkit._core.errors.DiffkitError: no results at no/such/folder...
    """
    records: dict[str, Record] = {}
    for given in paths:
        where = Path(given)
        path = where / "results.jsonl" if where.is_dir() else where
        if not path.is_file():
            raise DiffkitError(
                f"no results at {where}: give a results folder or .jsonl file "
                "(diffkit compare --out FOLDER writes one)"
            )
        records.update((r["key"], r) for r in load(path))
    return Results(list(records.values()), Path(paths[0]) if len(paths) == 1 else None)


def report(results: Results | str | Path | Sequence[str | Path], title: str = "") -> Report:
    """The report page of ``results`` (a :class:`Results`, or results folders / files):
    its heat map of cost ratios, per-problem charts with the fitted slopes, and each record
    with the command that measures it again (:mod:`diffkit.harness.report_page`).

    Example:
        >>> r = report(Results([{"problem": "p", "method": "a", "dtype": "float32",
        ...     "outcome": "timeout", "message": "over 60 s", "key": "k"}]))
        >>> r.data["records"][0]["outcome"], "<svg" in r.html or "heat" in r.html
        ('timeout', True)
    """
    if isinstance(results, str | Path):
        results = load_results([results])
    elif not isinstance(results, Results):
        results = load_results(list(results))
    return page(results, title)
