"""The ``diffkit`` command line: compare, list, swell, steps, explain, plot.

Every command has ``--help`` with examples. Errors print one line on stderr and exit with
code 2 (``--debug`` shows the traceback); Ctrl-C exits with 130 after saying what was kept.
Tables and progress use rich (progress on stderr, so ``--format csv`` output stays clean);
plots are PNGs written with matplotlib's non-interactive Agg backend.

JAX is imported only once the command line is parsed, so ``--backend`` can choose the
platform (``JAX_PLATFORMS``) before any backend starts; sweep workers inherit it.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the harness imports JAX, which the command loads only after parsing
    from diffkit.harness.record import Record
    from diffkit.harness.results import Results

__all__ = ["build_parser", "main", "parse_memory", "parse_sizes"]

RESULTS_FILE = "results.jsonl"
_PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
_DTYPES = ["float32", "float64"]


class CLIError(Exception):
    """A bad command line: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> Any:
        print(f"diffkit: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


# ------------------------------------------------------------------------ helpers


def parse_sizes(text: str) -> list[int]:
    """Sizes from ``"10,100,1e3"`` or a range ``"1..13"`` (both ends included), or a mix.

    Example:
        >>> parse_sizes("10,1e3,2..4")
        [10, 1000, 2, 3, 4]
    """
    sizes: list[int] = []
    for part in text.replace(" ", "").split(","):
        lo, dots, hi = part.partition("..")
        try:
            if dots:
                sizes += range(int(lo), int(hi) + 1)
            else:
                value = float(part)
                if value != int(value):
                    raise ValueError
                sizes.append(int(value))
        except ValueError:
            raise CLIError(
                f"--sizes: {part!r} is not a whole number or a range like 1..13; "
                "write e.g. --sizes 10,100,1e3 or --sizes 1..13"
            ) from None
    if not sizes or min(sizes) < 1:
        raise CLIError(f"--sizes: sizes must be positive whole numbers, got {text!r}")
    return sizes


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text: str) -> float | str | None:
    """Bytes from ``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"300MB"`` or plain bytes (units
    are powers of 1024); ``"none"`` for no limit, ``"auto"`` for the sweep's default.

    Example:
        >>> parse_memory("512M"), parse_memory("2G"), parse_memory("1e9"), parse_memory("none")
        (536870912.0, 2147483648.0, 1000000000.0, None)
    """
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    if text.strip().lower() == "auto":
        return "auto"
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    try:
        value = float(match.group(1)) * _UNITS[match.group(2).upper()] if match else -1.0
    except ValueError:
        value = -1.0
    if not value > 0 or not math.isfinite(value):
        raise CLIError(
            f"--memory-limit: {text!r} is not a memory size; write e.g. 2G, 512M, 1e9 (bytes), "
            "auto or none"
        )
    return value


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse type: its CLIError becomes argparse's one-line error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except CLIError as exc:
            raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None

    return convert


def _positive(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a positive number of {what}, got {text!r}")
        return value

    return parse


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 160, highlight=False)


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 or not rows else _justify(rows, i))
    for row in rows:
        table.add_row(*row)
    return table


def _justify(rows: Sequence[Sequence[str]], i: int) -> str:
    numeric = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?( ?[a-zµ]+)?\*?$")
    return "right" if all(numeric.match(r[i]) or r[i] == "-" for r in rows) else "left"


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _header() -> str:
    import jax

    from diffkit.harness.measure import metadata

    meta = metadata()
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    head = f"backend {meta['backend']} ({meta['device_count']} x {devices}), jax {meta['jax']}"
    if meta["matmul_precision"] != "default":
        head += f", matmul precision {meta['matmul_precision']}"
    return head


# ------------------------------------------------------------------------ compare


def _cases(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep's problems, sizes and methods from the command line (the quick suite when
    neither a function nor a problem is given)."""
    import diffkit as dk

    if args.target and args.problem:
        raise CLIError("give either a function (module.py:function) or --problem, not both")
    sizes = parse_sizes(args.sizes) if args.sizes else None
    named = _split(args.problem) or []
    if len(named) == 1 and ":" in named[0]:  # --problem module:function is a user function
        args.target, named = named[0], []
    if "user" in named:
        raise CLIError(
            "--problem user needs your function: give it as the target, e.g. "
            "diffkit compare my_model.py:loss --input n (or my_module:loss)"
        )
    methods = _split(args.methods) or dk.names()
    for m in methods:  # fail early, naming the valid choices; "module:Class" is imported
        dk.harness.measure.resolve_method(m) if ":" in m else dk.get(m)
    if not args.target and not named:
        return dk.harness.quick_suite(methods) | ({"sizes": sizes} if sizes else {})
    if args.target:
        problems = [dk.harness.user_problem(args.target, args.input)]
        problems[0].build(1, args.dtype)  # load the function now: a bad target fails early
    else:
        problems = [dk.harness.get_problem(p) for p in named]
    return {"problems": problems, "sizes": sizes, "methods": methods}


def _results_path(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: this is a file; give a folder for the results")
    path = out / RESULTS_FILE
    if args.resume and args.fresh:
        raise CLIError("--resume keeps the results in --out and --fresh moves them aside: give one")
    if not args.resume and not args.fresh and path.exists() and path.stat().st_size > 0:
        raise CLIError(
            f"{path} already holds results: add --resume to continue them, or --fresh to move "
            "them aside (kept as results.<timestamp>.jsonl) and start again"
        )
    return path


def _compare_in(args: argparse.Namespace) -> int:
    import diffkit as dk

    cases, path = _cases(args), _results_path(args)
    out = path.parent
    err = _console(stderr=True)
    err.print(f"diffkit compare: {_header()}, {args.dtype}; results in {out}/")
    progress = _progress("measuring")
    # Import matplotlib for the plots while the worker measures and this process waits.
    # Not before: NumPy, which JAX has now imported, must not be imported by two threads
    # at once (the second sees a partially initialised module and fails).
    import numpy  # noqa: F401  (already imported by JAX; made explicit for the order above)

    threading.Thread(target=_import_plotting, daemon=True).start()
    done = [0]  # cases finished
    interrupted = [False]

    def step(rec: Record, index: int, total: int) -> None:
        if interrupted[0]:  # a Ctrl-C that Python swallowed (see _noting_interrupts)
            raise KeyboardInterrupt
        done[0] = index
        what = f"{rec['problem']} n={rec.get('n')} {rec['method']}"
        progress.update(task, total=total, completed=index, description=what)
        if not err.is_terminal:  # a log: one line per case instead of a live bar
            err.print(f"[{index}/{total}] {what}: {rec['outcome']}")

    try:
        with progress, _noting_interrupts(interrupted):
            task = progress.add_task("", total=None)
            dk.harness.sweep(
                **cases, dtypes=args.dtype, out=path, budget=args.budget, resume=args.resume,
                progress=step, min_time=args.min_time, memory_limit=args.memory_limit,
                retry_failed=args.retry_failed,
            )  # fmt: skip
    except KeyboardInterrupt:
        _write_outputs(dk.harness.load(path) if path.exists() else dk.harness.Results([]), out)
        print(
            f"diffkit: interrupted; {done[0]} finished case(s) kept in {path}; "
            "run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    res = dk.harness.load(path)
    files = _write_outputs(res, out)
    _show(res, args.format, f"diffkit compare ({_header()}, {args.dtype})")
    if args.format == "table":
        _conclude(res, files)
    return 0


def _conclude(res: Results, files: list[Path]) -> None:
    """The fitted slopes (of mlp, where measured), the verdict and the files written."""
    con = _console()
    fits = [f for f in res.fit_exponents() if f["slope_time"] is not None]
    fits = [f for f in fits if f["problem"] == "mlp"] or fits
    if fits:
        slopes = ", ".join(f"{f['problem']}/{f['method']} {f['slope_time']:.2f}" for f in fits)
        con.print(f"Fitted slopes of time vs n (log-log, compute-bound sizes): {slopes}")
    con.print(res.verdict())
    con.print(f"Wrote {', '.join(str(f) for f in files)}")


def _progress(total_hint: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(total_hint),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=_console(stderr=True),
        transient=False,
    )


def _compare(args: argparse.Namespace) -> int:
    from diffkit import _process

    # Start the sweep's worker process first: its start-up (seconds) then overlaps with
    # this process's own import of JAX.
    _process.prestart()
    try:
        return _compare_in(args)
    finally:
        _process.close_spares()  # not taken: the arguments were bad


@contextlib.contextmanager
def _noting_interrupts(flag: list[bool]) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets ``flag[0]``. Python drops an
    exception raised inside a garbage-collector callback (JAX installs one), so a Ctrl-C
    that lands there would be lost; the sweep's progress callback raises it again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        flag[0] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _import_plotting() -> None:
    """Import matplotlib ahead of the plots; a failure here is reported by the plots."""
    try:
        from diffkit.harness.plots import pyplot

        pyplot()
    except Exception:
        pass


def _write_outputs(res: Results, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "results.csv"
    res.to_csv(csv)
    return [out / RESULTS_FILE, csv, *res.plot(out)]


def _show(res: Results, fmt: str, title: str) -> None:
    from diffkit.harness.results import SUMMARY

    headers, rows = res.rows(SUMMARY, by_method=False)
    if fmt == "csv":
        sys.stdout.write(res.to_csv())
    elif fmt == "json":
        print(json.dumps(res.records, indent=1))
    elif fmt == "markdown":
        print(_markdown(headers, rows))
    else:
        _console().print(_table(title, headers, rows))


# --------------------------------------------------------------------------- list


def _list(args: argparse.Namespace) -> int:
    import diffkit as dk

    con = _console()
    rows = []
    for name in dk.names():
        d = dk.get(name)
        native = "+".join(sorted(type(d).native))
        rows.append([name, d.mode, native, ", ".join(dk.options(name)), type(d).description])
    headers = ("differentiator", "mode", "native", "options", "how")
    con.print(_table("Differentiators (dk.get(name, **options))", headers, rows))
    rows = []
    for name in dk.harness.problems():
        p = dk.harness.get_problem(name)
        opts = ", ".join(f"{k}={v}" for k, v in p.options.items())
        sizes = ",".join(f"{s:g}" for s in p.sizes)
        rows.append([name, p.size_means, sizes, opts or "-", p.description])
    headers = ("problem", "size means", "default sizes", "options", "what")
    con.print(_table("Problems (diffkit compare --problem NAME)", headers, rows))
    return 0


# ------------------------------------------------------------------ swell, steps


def _swell(args: argparse.Namespace) -> int:
    from diffkit.harness import plots, studies

    sizes = parse_sizes(args.sizes)
    with _progress("swell") as progress:
        task = progress.add_task("", total=len(sizes))

        def step(what: str) -> None:
            progress.update(task, description=what, completed=sizes.index(int(what.split()[-1])))

        study = studies.swell_study(args.problem, sizes, args.dtype, args.budget, step)
    if study.stopped:
        _console(stderr=True).print(study.stopped)
    prob, con = study.problem, _console()
    title = f"Expression swell: {prob.name} ({prob.size_means}), {args.dtype}"
    con.print(_table(title, studies.SWELL_HEADERS, study.rows()))
    if study.summary():
        con.print(study.summary())
    if study.reports:
        png = Path(args.out) / f"swell-{prob.name}.png"
        con.print(f"Wrote {plots.swell_figure(study.reports, prob.name, prob.size_means, png)}")
    return 0


def _steps(args: argparse.Namespace) -> int:
    from diffkit import fd
    from diffkit.harness import plots, studies

    rules = None if args.rules is None else _split(args.rules) or []
    for spec in rules or []:
        if not re.fullmatch(r"[a-z]+(:\d+)?", spec):
            raise CLIError(f"--rules: {spec!r} is not SCHEME or SCHEME:ORDER (e.g. central:4)")
        fd.stencil(*studies.parse_rule(spec))  # fail early on an unknown scheme or order
    with _progress("steps") as progress:
        task = progress.add_task("", total=len(rules or studies.DEFAULT_RULES))

        def step(what: str) -> None:
            progress.update(task, description=what, advance=1)

        study = studies.step_study(args.problem, args.size, args.dtype, rules, step)
    for note in study.notes:
        _console(stderr=True).print(note)
    con, name = _console(), study.problem.name
    where = f"{name} n={study.n}, {args.dtype}"
    title = f"Finite-difference error (rho vs float64 {study.reference}) by step: {where}"
    con.print(_table(title, ["step", *study.sweeps], study.rows()))
    for line in study.summary():
        con.print(line)
    png = Path(args.out) / f"steps-{name}-{args.dtype}.png"
    con.print(f"Wrote {plots.steps_figure(study.sweeps, study.eps, where, png)}")
    return 0


# ------------------------------------------------------------------------ explain


def _point(target: str, at: str | None) -> tuple[Any, dict[str, float]]:
    """The function of ``path/to/file.py:name`` and the point ``--at`` names, by argument."""
    from diffkit.harness.problems import resolve_target

    fun = resolve_target(target)
    names = [
        p.name
        for p in inspect.signature(fun).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not at:
        raise CLIError(f"explain {target}: give the point with --at, e.g. --at 0.5,2")
    try:
        values = [float(v) for v in at.split(",")]
    except ValueError:
        raise CLIError(f"--at: {at!r} is not a list of numbers like 0.5,2") from None
    if len(values) != len(names):
        raise CLIError(
            f"--at: {target} takes {len(names)} argument(s) ({', '.join(names)}), "
            f"got {len(values)} value(s)"
        )
    return fun, dict(zip(names, values, strict=True))


def _explain(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    import diffkit as dk
    from diffkit.examples import tiny_scalar_network

    title = "the 9-parameter network (2 inputs, 2 ReLU units, sigmoid output, cross-entropy)"
    if args.target:
        fun, point = _point(args.target, args.at)
        title = f"{args.target} at " + ", ".join(f"{k}={v:g}" for k, v in point.items())
    with jax.enable_x64(args.dtype == "float64"):
        if not args.target:  # its values are made in the dtype of the x64 setting
            fun, point = tiny_scalar_network()
        xs = [jnp.asarray(v, args.dtype) for v in point.values()]
        _print_walk(dk.get("tape").record(fun, *xs).walk(list(point)), title)
    return 0


def _print_walk(walk: dict[str, Any], title: str) -> None:
    """``Tape.walk``'s rows as three tables: forward values, backward steps, gradient."""
    con = _console()
    cell = lambda a: a if isinstance(a, str) else _num(a)  # noqa: E731
    con.print(f"[bold]Explaining {title}[/bold]\n")
    con.print("Inputs: " + ", ".join(f"{n}={_num(v)}" for n, v in walk["inputs"]))
    rows = [
        [lhs, f"{prim}({', '.join(map(cell, xs))})", " ".join(map(_num, ys))]
        for lhs, prim, xs, ys in walk["forward"]
    ]
    con.print(_table("1. Forward pass: every node's value", ["node", "computes", "value"], rows))
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
    con.print(_table("2. Backward pass: from the output back to the inputs", headers, rows))
    con.print("(A value used twice receives the sum of what its users pass on.)\n")
    rows = [[n, _num(v), _num(g, signed=True), _meaning(g)] for n, v, g in walk["gradient"]]
    headers = ["parameter", "value", "gradient", "meaning"]
    con.print(_table("3. Gradient: dL/d(parameter)", headers, rows))
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


# --------------------------------------------------------------------------- plot


def _plot(args: argparse.Namespace) -> int:
    import diffkit as dk

    where = Path(args.results)
    path = where / RESULTS_FILE if where.is_dir() else where
    if not path.exists():
        raise CLIError(f"no results at {path}; run diffkit compare --out {where} first")
    res = dk.harness.load(path)
    out = Path(args.out) if args.out else path.parent
    files = res.plot(out)
    if not files:
        raise CLIError(f"{path} holds no case that finished ok: nothing to plot")
    _console().print("Wrote " + ", ".join(str(f) for f in files))
    return 0


# ------------------------------------------------------------------------- parser

_COMPARE_EXAMPLES = """examples:
  diffkit compare                                    the quick suite (under a minute)
  diffkit compare --problem mlp --sizes 10,100,1e3,1e4 --methods tape,jax-rev,fd \\
                  --dtype float64 --budget 60 --out results/
  diffkit compare my_model.py:loss --input n,32xn --sizes 10,100
  diffkit compare --problem rosenbrock --format csv > rosenbrock.csv
  diffkit compare --resume                           continue an interrupted run
  diffkit compare --resume --budget 300              ... and retry its timeouts with more time
  diffkit compare --fresh                            start again; old results moved aside
  diffkit compare --problem mlp --sizes 1e6 --memory-limit 4G

A results folder is never emptied: running into one that holds results needs --resume or
--fresh, and a second run into a folder in use is refused.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="diffkit",
        description="Differentiate one JAX function six ways and compare cost and accuracy.",
        epilog="examples:\n  diffkit compare\n  diffkit list\n  diffkit explain\n"
        "  diffkit steps --problem lse\n  diffkit swell --sizes 1..13\n"
        "  diffkit plot results/\nRun 'diffkit COMMAND --help' for each command's options.",
        formatter_class=fmt,
    )
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    common.add_argument(
        "--backend", choices=list(_PLATFORMS), help="the JAX platform to run on (default: JAX's)"
    )
    common.add_argument(
        "--matmul-precision",
        choices=["default", "high", "highest"],
        help="precision of float32 matrix products (JAX's jax_default_matmul_precision; on "
        "recent NVIDIA GPUs 'default' is TF32, about 3 digits: 'highest' gives full float32)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, epilog: str, run: Callable[..., int]) -> Any:
        p = sub.add_parser(
            name, help=help, description=help, epilog=epilog, parents=[common], formatter_class=fmt
        )
        p.set_defaults(run=run)
        return p

    p = command(
        "compare", "measure every differentiator's cost and accuracy", _COMPARE_EXAMPLES, _compare
    )
    _compare_arguments(p)
    command("list", "the differentiators and the problems", "example:\n  diffkit list", _list)

    _study_commands(command)
    return parser


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", help="your function as path/to/module.py:function")
    p.add_argument("--input", default="n", help="argument shapes of your function, e.g. n,32xn")
    p.add_argument("--problem", help="built-in problem(s), comma-separated (see diffkit list)")
    p.add_argument("--sizes", help="sizes, e.g. 10,100,1e3,1e4 or 1..13")
    p.add_argument("--methods", help="comma-separated differentiators (default: all)")
    p.add_argument("--dtype", choices=_DTYPES, default="float32")
    p.add_argument(
        "--budget", type=_positive("seconds"), default=60.0, help="seconds per case (default 60)"
    )
    p.add_argument(
        "--min-time", type=_positive("seconds"), default=0.05, help="seconds of timing samples"
    )
    p.add_argument(
        "--memory-limit",
        type=_argument(parse_memory),
        default="auto",
        help="memory per case, e.g. 2G, 512M or bytes (default: 70%% of the memory available "
        "now); a case estimated to need more is recorded out-of-memory without running",
    )
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished cases in --out; retry timeouts, skipped sizes, out-of-memory "
        "and crashes given a larger --budget / --memory-limit",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start again: move --out's results aside (results.<timestamp>.jsonl), never delete",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume, retry timeouts, skipped, out-of-memory and crashed cases anyway",
    )
    p.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table")


def _study_commands(command: Callable[..., Any]) -> None:
    """swell, steps, explain and plot, with their arguments."""
    p = command(
        "swell",
        "symbolic expression swell, size by size",
        "examples:\n  diffkit swell\n  diffkit swell --problem sigmoid-chain --sizes 1..6",
        _swell,
    )
    p.add_argument("--problem", default="logistic-map")
    p.add_argument("--sizes", default="1..13", help="e.g. 1..13 (default) or 1,2,4,8")
    p.add_argument("--dtype", choices=_DTYPES, default="float64")
    p.add_argument(
        "--budget", type=_positive("seconds"), default=30.0, help="seconds per stage (default 30)"
    )
    p.add_argument("--out", default="results", help="folder for the plot (default results/)")

    p = command(
        "steps",
        "finite-difference error vs step size (the U-shaped curve)",
        "examples:\n  diffkit steps\n  diffkit steps --problem mlp --size 100 --dtype float32\n"
        "  diffkit steps --rules forward,central,central:4,complex",
        _steps,
    )
    p.add_argument("--problem", default="lse")
    p.add_argument("--size", type=int, default=10, help="problem size (default 10)")
    p.add_argument("--dtype", choices=_DTYPES, default="float64")
    p.add_argument(
        "--rules",
        help="SCHEME[:ORDER] list (schemes: forward, backward, central, complex, richardson); "
        "default: forward,central,central:4 and complex where the function is analytic",
    )
    p.add_argument("--out", default="results", help="folder for the plot (default results/)")

    p = command(
        "explain",
        "backpropagation step by step, node by node",
        "examples:\n  diffkit explain                     the 9-parameter network\n"
        "  diffkit explain f.py:energy --at 0.5,2\n",
        _explain,
    )
    p.add_argument("target", nargs="?", help="a small function of scalars, path/to/file.py:name")
    p.add_argument("--at", help="the point: one number per argument, e.g. 0.5,2")
    p.add_argument("--dtype", choices=_DTYPES, default="float64")

    p = command(
        "plot",
        "regenerate the PNG plots from saved results",
        "examples:\n  diffkit plot results/\n  diffkit plot results/results.jsonl --out figs/",
        _plot,
    )
    p.add_argument("results", help="a results folder or its results.jsonl")
    p.add_argument("--out", help="folder for the PNGs (default: next to the results)")


@contextlib.contextmanager
def _jax_settings(args: argparse.Namespace) -> Iterator[None]:
    """``--backend`` and ``--matmul-precision``, for this process and the sweep workers."""
    settings = {"jax_platforms": _PLATFORMS.get(args.backend or "")}
    settings["jax_default_matmul_precision"] = getattr(args, "matmul_precision", None)
    for option, value in settings.items():
        if value:
            os.environ[option.upper()] = value  # JAX reads its options from JAX_... too
            if "jax" in sys.modules:
                sys.modules["jax"].config.update(option, value)
    yield


def _check_backend(backend: str | None) -> None:
    """Fail in one line when the platform asked for with ``--backend`` is not available."""
    if not backend:
        return
    import jax

    try:
        jax.devices()
    except Exception as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(
            f"--backend {backend}: JAX cannot start a {backend} backend here ({why[:120]}); "
            f"install JAX with {backend} support (see JAX's installation guide) or use "
            "--backend cpu"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffkit`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # 'module:function' targets in the working directory
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with _jax_settings(args):
            _check_backend(args.backend)
            return int(args.run(args))
    except KeyboardInterrupt:
        print("diffkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        what = text[0] if text else type(exc).__name__
        from diffkit._errors import DiffkitError

        if not isinstance(exc, CLIError | DiffkitError):
            what = f"{type(exc).__name__}: {what} (run with --debug for the traceback)"
        print(f"diffkit: error: {what}", file=sys.stderr)
        return 2
