"""Results of a sweep: loading, tables, CSV, scaling exponents, crossovers, plots.

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffkit._errors import DiffkitError

__all__ = ["Results", "load", "read_records"]


#: Fields every record has, with their types: a line without them is not a diffkit record.
_REQUIRED = {"key": str, "outcome": str, "problem": str, "method": str, "dtype": str}


def read_records(path: str | Path, strict: bool = False) -> list[dict[str, Any]]:
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
        diffkit._errors.DiffkitError: ...:2: not a diffkit record (no 'key'); ...
    """
    records = []
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
            missing = [k for k, t in _REQUIRED.items() if not isinstance(rec.get(k), t)]
            if not missing:
                records.append(rec)
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


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if value != 0 else "0"
    return str(value)


#: Columns of :meth:`Results.table`: (header, how to show a record).
COLUMNS: list[tuple[str, Any]] = [
    ("problem", lambda r: r["problem"]),
    ("n", lambda r: _fmt(r.get("n"))),
    ("m", lambda r: _fmt(r.get("m"))),
    ("method", lambda r: r["method"]),
    ("dtype", lambda r: r["dtype"].replace("float", "f")),
    ("outcome", lambda r: r["outcome"]),
    ("compile", lambda r: _fmt_time(r.get("compile_s"))),
    ("time", lambda r: _fmt_time(r.get("time_median"))),
    ("iqr%", lambda r: _fmt(_iqr_percent(r), 2)),
    ("primal", lambda r: _fmt_time(r.get("primal_median"))),
    ("ratio", lambda r: _fmt(r.get("ratio"))),
    ("passes", lambda r: _fmt(r.get("passes"))),
    ("rho max", lambda r: _fmt(r.get("rho_max"), 2)),
    ("accurate", lambda r: _fmt(r.get("accurate"))),
    ("message", lambda r: (r.get("message") or "")[:60]),
]


def _iqr_percent(r: dict[str, Any]) -> float | None:
    if r.get("time_iqr") is None or not r.get("time_median"):
        return None
    return 100.0 * r["time_iqr"] / r["time_median"]


def _flatten(rec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


class Results:
    """Records of measured cases (dicts, one per case), with views for people and programs.

    Prints as a table; renders as HTML in Jupyter; ``to_csv``, ``to_pandas``;
    ``fit_exponents``, ``crossover``, ``overhead`` and ``plot`` analyse it.
    """

    def __init__(self, records: Sequence[dict[str, Any]], path: Path | None = None) -> None:
        self.records = list(records)
        self.path = path

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.records[i]

    def filter(self, **fields: Any) -> Results:
        """The records whose fields equal the given values (a list or tuple: any of them).

        Example:
            >>> from diffkit.harness import Results
            >>> len(Results([{"method": "a"}, {"method": "b"}]).filter(method=["a"]))
            1
        """

        def keep(r: dict[str, Any]) -> bool:
            return all(
                r.get(k) in v if isinstance(v, list | tuple) else r.get(k) == v
                for k, v in fields.items()
            )

        return Results([r for r in self.records if keep(r)], self.path)

    # -------------------------------------------------------------- showing
    def _rows(self) -> tuple[list[str], list[list[str]]]:
        order = sorted(
            self.records,
            key=lambda r: (r["problem"], r["dtype"], r.get("size") or 0, r["method"]),
        )
        headers = [h for h, _ in COLUMNS]
        return headers, [[str(show(r)) for _, show in COLUMNS] for r in order]

    def table(self) -> str:
        """A fixed-width text table, one row per case."""
        headers, rows = self._rows()
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        headers, rows = self._rows()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_csv(self, path: str | Path | None = None) -> str:
        """The records as CSV (nested fields as ``meta.backend`` etc.); written to ``path``
        when given; returns the text."""
        flat = [_flatten(r) for r in self.records]
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
    def _series(self) -> dict[tuple[str, ...], list[dict[str, Any]]]:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in self.records:
            if r.get("outcome") == "ok" and r.get("time_median"):
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
        """Log-log slopes per (problem, method, dtype, backend), fitted over the sizes where
        compute dominates: those whose derivative time is at least ``floor_factor`` times the
        series' smallest (below that, dispatch overhead flattens the curve).

        ``slope_time`` is the exponent of the derivative's run time, ``slope_primal`` the
        primal's, ``slope_ratio`` that of derivative/primal, next to ``expected_ratio``: the
        exponent of the method's declared passes (n for forward-mode gradients and finite
        differences, 1 for reverse mode). ``against`` is "n", "m", "size" or "auto" (the one
        that varies: n, else m, else size). When only the largest size leaves the floor, the
        ``min_points`` largest are used; a series that never leaves it gets None.
        """
        fits = []
        for (problem, _, method, dtype, backend), recs in sorted(self._series().items()):
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
                "method": method,
                "dtype": dtype,
                "backend": backend,
                "against": axis,
                "points": len(used),
                "range": [used[0][axis], used[-1][axis]] if used else None,
            }
            xs = [r[axis] for r in used]
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

    def exponents_table(self, **kwargs: Any) -> str:
        """:meth:`fit_exponents` as a text table."""
        lines = [
            f"{'problem':14s} {'method':10s} {'dtype':8s} {'vs':4s} {'points':>6s} "
            f"{'time':>6s} {'primal':>6s} {'ratio':>6s} {'expected':>8s}  range"
        ]
        for f in self.fit_exponents(**kwargs):
            cells = [_fmt(f[k], 2) for k in ("slope_time", "slope_primal", "slope_ratio")]
            lines.append(
                f"{f['problem']:14s} {f['method']:10s} {f['dtype']:8s} {f['against']:4s} "
                f"{f['points']:6d} {cells[0]:>6s} {cells[1]:>6s} {cells[2]:>6s} "
                f"{_fmt(f['expected_ratio'], 2):>8s}  {f['range'] or '(dispatch-bound)'}"
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
                "m_over_n": by[(a, s)]["m"] / by[(a, s)]["n"],
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
        starts = [r["worker_start_s"] for r in self.records if r.get("worker_start_s")]
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

    def plot(self, folder: str | Path) -> list[Path]:
        """Write PNG plots (time, ratio and accuracy vs n per problem and dtype) to
        ``folder``; returns their paths. Needs matplotlib."""
        from diffkit.harness.plots import plot_results

        return plot_results(self, Path(folder))
