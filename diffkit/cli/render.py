"""What the ``diffkit`` command prints: rich tables, the compare summary, the list, swell,
steps and explain output. JAX-free at import (the command imports it before parsing); JAX,
NumPy and the harness are imported inside the functions that need them.

Example:
    >>> print(markdown(["method", "time"], [["tape", "1.5 ms"], ["fd", "3 ms"]]))
    | method | time |
    |---|---|
    | tape | 1.5 ms |
    | fd | 3 ms |
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the harness imports JAX, which the command loads only after parsing
    from diffkit.harness.results import Results

__all__ = [
    "conclude",
    "console",
    "header",
    "lists",
    "markdown",
    "print_walk",
    "progress",
    "show",
    "steps",
    "swell",
    "table",
    "wrote",
]


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr), 160 columns wide when not a terminal.

    Example:
        >>> console().print("hello")
        hello
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 160, highlight=False)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    """A rich table; a column of numbers (with units, ``-`` for none) is right-aligned.

    Example:
        >>> [c.justify for c in table("t", ["method", "time"], [["tape", "1.5 ms"]]).columns]
        ['left', 'right']
    """
    from rich.table import Table

    out = Table(title=title, title_justify="left", header_style="bold")
    for i, h in enumerate(headers):
        out.add_column(h, justify="left" if i == 0 or not rows else _justify(rows, i))
    for row in rows:
        out.add_row(*row)
    return out


def _justify(rows: Sequence[Sequence[str]], i: int) -> Literal["left", "right"]:
    numeric = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?( ?[a-zµ]+)?\*?$")
    return "right" if all(numeric.match(r[i]) or r[i] == "-" for r in rows) else "left"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (see the module's example)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def header() -> str:
    """The backend, its devices, JAX's version and a non-default matmul precision.

    Example:
        >>> header().startswith("backend ")
        True
    """
    import jax

    from diffkit.harness.measure import metadata

    meta = metadata()
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    head = f"backend {meta['backend']} ({meta['device_count']} x {devices}), jax {meta['jax']}"
    if meta["matmul_precision"] != "default":
        head += f", matmul precision {meta['matmul_precision']}"
    return head


def progress(total_hint: str) -> Any:
    """A rich progress bar on stderr (so ``--format csv`` output stays clean).

    Example:
        >>> with progress("demo") as bar:
        ...     task = bar.add_task("", total=1)
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(total_hint),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console(stderr=True),
        transient=False,
    )


def wrote(files: Sequence[Path | str]) -> None:
    """Say which files were written.

    Example:
        >>> wrote(["a.png", "b.png"])
        Wrote a.png, b.png
    """
    console().print("Wrote " + ", ".join(str(f) for f in files))


def show(res: Results, fmt: str, title: str) -> None:
    """The summary of ``res`` as a table, CSV, JSON or Markdown on stdout."""
    from diffkit.harness.results import SUMMARY

    headers, rows = res.rows(SUMMARY, by_method=False)
    if fmt == "csv":
        sys.stdout.write(res.to_csv())
    elif fmt == "json":
        print(json.dumps(res.records, indent=1))
    elif fmt == "markdown":
        print(markdown(headers, rows))
    else:
        console().print(table(title, headers, rows))


def conclude(res: Results, files: list[Path]) -> None:
    """The fitted slopes (of mlp, where measured; each fitted over noisy timings says so),
    the verdict and the files written."""
    con = console()
    fits = [f for f in res.fit_exponents() if f["slope_time"] is not None]
    fits = [f for f in fits if f["problem"] == "mlp"] or fits
    if fits:
        slopes = ", ".join(
            f"{f['problem']}/{f['method']} {f['slope_time']:.2f}"
            + (f" (over {f['noisy']} noisy of {f['points']} points)" if f.get("noisy") else "")
            for f in fits
        )
        against = sorted({f["against"] for f in fits})
        con.print(
            f"Fitted slopes of time vs {' or '.join(against)} (log-log, compute-bound sizes): "
            f"{slopes}"
        )
    con.print(res.verdict())
    wrote(files)


def lists(
    differentiators: Sequence[tuple[str, Any, Sequence[str]]], problems: Sequence[Any]
) -> None:
    """The ``list`` command's two tables, from (name, differentiator, its options) and
    (name, problem) pairs."""
    rows = []
    for name, d, options in differentiators:
        native = "+".join(sorted(d.native))  # as configured: symbolic's array level is vjp
        rows.append([name, d.mode, native, ", ".join(options), type(d).description])
    headers = ("differentiator", "mode", "native", "options", "how")
    con = console()
    title = "Differentiators (dk.get(name, **options); compare --methods name+sparse: compressed)"
    con.print(table(title, headers, rows))
    rows = []
    for name, p in problems:
        opts = ", ".join(f"{k}={v}" for k, v in p.options.items())
        sizes = ",".join(f"{s:g}" for s in p.sizes)
        rows.append([name, p.size_means, sizes, opts or "-", p.description])
    headers = ("problem", "size means", "default sizes", "options", "what")
    con.print(table("Problems (diffkit compare --problem NAME)", headers, rows))


def swell(study: Any, dtype: str) -> None:
    """A swell study (``studies.swell_study``): why it stopped, its table and summary."""
    from diffkit.harness import studies

    if study.stopped:
        console(stderr=True).print(study.stopped)
    prob, con = study.problem, console()
    title = f"Expression swell: {prob.name} ({prob.size_means}), {dtype}"
    con.print(table(title, studies.SWELL_HEADERS, study.rows()))
    if study.summary():
        con.print(study.summary())


def steps(study: Any, where: str) -> None:
    """A step study (``studies.step_study``): its notes, table and summary lines."""
    for note in study.notes:
        console(stderr=True).print(note)
    con = console()
    title = f"Finite-difference error (rho vs float64 {study.reference}) by step: {where}"
    con.print(table(title, ["step", *study.sweeps], study.rows()))
    for line in study.summary():
        con.print(line)


def print_walk(walk: dict[str, Any], title: str) -> None:
    """``Tape.walk``'s rows as three tables: forward values, backward steps, gradient."""
    con = console()
    cell = lambda a: a if isinstance(a, str) else _num(a)  # noqa: E731
    con.print(f"[bold]Explaining {title}[/bold]\n")
    con.print("Inputs: " + ", ".join(f"{n}={_num(v)}" for n, v in walk["inputs"]))
    rows = [
        [lhs, f"{prim}({', '.join(map(cell, xs))})", " ".join(map(_num, ys))]
        for lhs, prim, xs, ys in walk["forward"]
    ]
    con.print(table("1. Forward pass: every node's value", ["node", "computes", "value"], rows))
    con.print(f"Output {walk['output'][0]} = {_num(walk['output'][1])}\n")
    rows = [
        [
            f"{lhs} = {prim}(...)",
            "(Jacobian)" if local is None else f"d{lhs}/d{x} = {_num(local)}",
            " ".join(map(_num, upstream)),
            f"{_num(passed)} -> {x}",
        ]
        for lhs, prim, x, local, upstream, passed in walk["backward"]
    ]
    headers = ["node", "local derivative", "upstream (dL/dnode)", "passes on (upstream x local)"]
    con.print(table("2. Backward pass: from the output back to the inputs", headers, rows))
    con.print("(A value used twice receives the sum of what its users pass on.)\n")
    rows = [[n, _num(v), _num(g, signed=True), _meaning(g)] for n, v, g in walk["gradient"]]
    headers = ["parameter", "value", "gradient", "meaning"]
    con.print(table("3. Gradient: dL/d(parameter)", headers, rows))
    con.print(
        "A gradient g says: nudging the parameter by a small e changes the output by about g*e."
    )


def _meaning(g: Any) -> str:
    if g.size != 1:
        return "(array)"
    gv = float(g.ravel()[0])
    return (
        "no effect here"
        if gv == 0
        else "increase it to reduce the loss"
        if gv < 0
        else "decrease it to reduce the loss"
    )


def _num(x: Any, signed: bool = False) -> str:
    import numpy as np

    a = np.asarray(x, dtype=float)
    fmt = "{:+.8g}" if signed else "{:.8g}"
    if a.size == 1:
        return fmt.format(float(a.ravel()[0]))
    if a.size <= 4:
        return "[" + ", ".join(fmt.format(v) for v in a.ravel()) + "]"
    return f"{a.dtype}{list(a.shape)}"
