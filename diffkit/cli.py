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
from typing import Any

__all__ = ["build_parser", "main", "parse_memory", "parse_sizes"]

#: The built-in quick suite of ``diffkit compare`` without arguments: problem -> sizes.
QUICK_SUITE: dict[str, list[int]] = {
    "tiny-net": [9],
    "mlp": [10, 100, 10_000],
    "wide-output": [1024],
}
#: Methods the quick suite runs at its smallest sizes only (symbolic work swells with n).
SMALL_ONLY = {"symbolic"}
QUICK_SMALL: dict[str, list[int]] = {"tiny-net": [9]}
RESULTS_FILE = "results.jsonl"
_PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
#: ``diffkit steps``'s rules without --rules (the complex step left out where invalid).
DEFAULT_RULES = ("forward", "central", "central:4", "complex")


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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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

_COLUMNS = ("problem", "n", "m", "method", "time", "x primal", "evaluations", "rho max", "outcome")


def _row(r: dict[str, Any]) -> list[str]:
    from diffkit.harness.results import _fmt, _fmt_time

    evals = r.get("evaluations") if r.get("evaluations") is not None else r.get("passes")
    outcome = r["outcome"]
    if outcome == "ok" and r.get("accurate") is False:
        outcome = "INACCURATE"
    elif outcome != "ok" and r.get("message"):
        outcome += f": {r['message'][:50]}"
    ratio = r.get("ratio")
    return [
        r["problem"],
        _fmt(r.get("n")),
        _fmt(r.get("m")),
        r["method"],
        _fmt_time(r.get("time_median")),
        "-" if ratio is None else f"{ratio:,.3g}" if ratio < 1e3 else f"{ratio:,.0f}",
        "-" if evals is None else f"{evals:,}",
        _fmt(r.get("rho_max"), 2),
        outcome,
    ]


def _rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    order = sorted(records, key=lambda r: (r["problem"], r["dtype"], r.get("size") or 0))
    return [_row(r) for r in order]


def _fmt_n(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def verdict(records: Sequence[dict[str, Any]]) -> str:
    """One paragraph computed from the records: the cost of each mode at the largest measured
    gradient size, the winner on the widest Jacobian, accuracy, and failures.

    Example:
        >>> rec = lambda m, mode, ratio: {"problem": "mlp", "quantity": "grad", "n": 10_000,
        ...     "m": 1, "method": m, "mode": mode, "outcome": "ok", "ratio": ratio,
        ...     "accurate": True, "dtype": "float32"}
        >>> print(verdict([rec("jax-rev", "reverse", 2.9), rec("fd", "numerical", 19800.0)]))
        At n=10 000 (mlp, float32) a gradient costs: reverse mode 2.9x the forward pass \
(jax-rev); finite differences 19 800x (fd). Every ok result matched the float64 reference.
    """
    ok = [r for r in records if r["outcome"] == "ok" and r.get("ratio")]
    parts = []
    grads = [r for r in ok if r.get("quantity") == "grad"]
    if grads:
        top = max(grads, key=lambda r: (r["n"], r["problem"] == "mlp"))
        same = [r for r in grads if (r["problem"], r["dtype"]) == (top["problem"], top["dtype"])]
        modes = {"reverse": "reverse mode", "forward": "forward mode", "symbolic": "symbolic"}
        modes["numerical"] = "finite differences"
        costs = []
        for mode, label in modes.items():
            of_mode = [r for r in same if r.get("mode") == mode] or [
                r for r in grads if r.get("mode") == mode and r["dtype"] == top["dtype"]
            ]  # a mode run on other problems only (symbolic in the quick suite)
            if of_mode:  # at the largest n this mode finished
                n = max(r["n"] for r in of_mode)
                rs = sorted((r for r in of_mode if r["n"] == n), key=lambda r: r["ratio"])
                what = " the forward pass" if not costs else ""
                where = f" at n={_fmt_n(n)}" if n != top["n"] else ""
                if rs[0]["problem"] != top["problem"]:
                    where += f" on {rs[0]['problem']}"
                each = ", ".join(r["method"] for r in rs)
                costs.append(f"{label} {_fmt_ratio(rs[0]['ratio'])}{what}{where} ({each})")
        head = f"At n={_fmt_n(top['n'])} ({top['problem']}, {top['dtype']}) a gradient costs: "
        parts.append(head + "; ".join(costs) + ".")
    jacs = [r for r in ok if r.get("quantity") == "jacobian"]
    if jacs:
        top = max(jacs, key=lambda r: (r["m"] / max(r["n"], 1), r["m"]))
        at = sorted(
            (r for r in jacs if (r["problem"], r["size"]) == (top["problem"], top["size"])),
            key=lambda r: r["time_median"],
        )
        if len(at) > 1:
            best, worst = at[0], at[-1]
            parts.append(
                f"For a Jacobian with n={top['n']} inputs and m={_fmt_n(top['m'])} outputs "
                f"({top['problem']}), {best['method']} ({best.get('mode')} mode) is fastest, "
                f"{_fmt_ratio(worst['time_median'] / best['time_median'])} faster than "
                f"{worst['method']} ({worst.get('mode')} mode)."
            )
    bad = [r for r in ok if r.get("accurate") is False]
    if ok:
        parts.append(
            "Every ok result matched the float64 reference."
            if not bad
            else "Outside the tolerance: "
            + ", ".join(
                f"{r['method']} on {r['problem']} n={r['n']}"
                + (f" m={r['m']}" if r["m"] > 1 else "")
                for r in bad[:4]
            )
            + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            + "."
        )
    if any(
        r["dtype"] == "float32"
        and r.get("mode") != "numerical"
        and r.get("meta", {}).get("backend") == "gpu"
        and r.get("meta", {}).get("matmul_precision", "default") == "default"
        for r in bad
    ):
        parts.append(
            "On GPUs, float32 matrix products default to reduced precision (TF32 on NVIDIA, "
            "about 3 digits), which derivatives inherit: --matmul-precision highest gives "
            "full float32."
        )
    failed = [r for r in records if r["outcome"] != "ok"]
    if failed:
        kinds = sorted({r["outcome"] for r in failed})
        parts.append(f"{len(failed)} case(s) did not finish ok ({', '.join(kinds)}).")
    return " ".join(parts) or "No case finished."


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2g}x" if ratio < 10 else _fmt_n(round(float(f"{ratio:.3g}"))) + "x"


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


def _compare_in(args: argparse.Namespace) -> int:
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
    if args.target:
        problems = [dk.harness.user_problem(args.target, args.input)]
        problems[0].build(1, args.dtype)  # load the function now: a bad target fails early
    elif named:
        problems = [dk.harness.get_problem(p) for p in named]
    else:
        problems = [dk.harness.get_problem(p) for p in QUICK_SUITE]
        sizes = sizes or QUICK_SUITE  # type: ignore[assignment]
    methods = _split(args.methods) or dk.names()
    for m in methods:  # fail early, naming the valid choices; "module:Class" is imported
        dk.harness.measure.resolve_method(m) if ":" in m else dk.get(m)
    method_sizes = None
    if sizes is QUICK_SUITE:  # methods whose cost swells with n: small sizes only
        method_sizes = {m: QUICK_SMALL for m in SMALL_ONLY & set(methods)}
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

    def step(rec: dict[str, Any], index: int, total: int) -> None:
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
                problems,
                sizes,
                methods,
                args.dtype,
                method_sizes=method_sizes,
                out=path,
                budget=args.budget,
                resume=args.resume,
                progress=step,
                min_time=args.min_time,
                memory_limit=args.memory_limit,
                retry_failed=args.retry_failed,
            )
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
        con = _console()
        fits = [f for f in res.fit_exponents() if f["slope_time"] is not None]
        fits = [f for f in fits if f["problem"] == "mlp"] or fits
        if fits:
            slopes = ", ".join(f"{f['problem']}/{f['method']} {f['slope_time']:.2f}" for f in fits)
            con.print(f"Fitted slopes of time vs n (log-log, compute-bound sizes): {slopes}")
        con.print(verdict(res.records))
        con.print(f"Wrote {', '.join(str(f) for f in files)}")
    return 0


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
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot
    except Exception:
        pass


def _write_outputs(res: Any, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "results.csv"
    res.to_csv(csv)
    return [out / RESULTS_FILE, csv, *res.plot(out)]


def _show(res: Any, fmt: str, title: str) -> None:
    rows = _rows(res.records)
    if fmt == "csv":
        sys.stdout.write(res.to_csv())
    elif fmt == "json":
        print(json.dumps(res.records, indent=1))
    elif fmt == "markdown":
        print(_markdown(_COLUMNS, rows))
    else:
        _console().print(_table(title, _COLUMNS, rows))


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


# -------------------------------------------------------------------------- swell


def _swell(args: argparse.Namespace) -> int:
    import jax

    import diffkit as dk

    if "symbolic" not in dk.names():
        raise CLIError(
            "swell needs the symbolic differentiator, which is not registered in this install"
        )
    prob = dk.harness.get_problem(args.problem)
    sizes = parse_sizes(args.sizes)
    d = dk.get("symbolic", time_budget=args.budget)
    reports: list[tuple[int, Any]] = []
    stopped = ""
    err = _console(stderr=True)
    with _progress("swell") as progress:
        task = progress.add_task("", total=len(sizes))
        for size in sizes:
            progress.update(task, description=f"{args.problem} size {size}")
            inst = prob.build(size, args.dtype)
            try:
                with jax.enable_x64(args.dtype == "float64"):
                    reports.append((size, d.swell(inst.fun, *inst.args)))
            except dk.DiffkitError as exc:
                if "budget" not in type(exc).__name__.lower():
                    raise
                stopped = f"stopped at size {size}: {str(exc).splitlines()[0]}"
                break
            progress.advance(task)
    if stopped:
        err.print(stopped)
    headers = ("size", "jaxpr eqns", "f tree ops", "f' tree ops", "growth", "f' DAG nodes")
    headers += ("f' ops after CSE", "growth (CSE)", "differentiate", "compile")
    rows = []
    prev: Any = None
    for size, rep in reports:
        f, df = rep.function, rep.derivative
        growth = _growth(prev, rep, "tree_ops")
        growth_cse = _growth(prev, rep, "cse_ops")
        times = rep.times
        rows.append(
            [
                str(size),
                str(rep.jaxpr_eqns),
                f"{f.tree_ops:,}",
                f"{df.tree_ops:,}",
                growth,
                f"{df.dag_nodes:,}",
                "-" if df.cse_ops is None else f"{df.cse_ops:,}",
                growth_cse,
                f"{times.get('differentiate', 0):.3g} s",
                f"{times.get('compile', 0):.3g} s",
            ]
        )
        prev = rep
    con = _console()
    con.print(
        _table(f"Expression swell: {prob.name} ({prob.size_means}), {args.dtype}", headers, rows)
    )
    if len(reports) >= 3:
        (s0, r0), (s1, r1) = reports[1], reports[-1]  # from the second size: the first is tiny
        per = (r1.derivative.tree_ops / max(r0.derivative.tree_ops, 1)) ** (1 / max(s1 - s0, 1))
        con.print(
            f"Written out as a tree, the derivative grows {per:.2f}x per step from size {s0} to "
            f"{s1} ({r0.derivative.tree_ops:,} -> {r1.derivative.tree_ops:,} operations; "
            f"{rows[-1][4]} at the last step); after CSE it has {r1.derivative.cse_ops or 0:,} "
            f"operations and the function's jaxpr {r1.jaxpr_eqns} equations."
        )
    if reports:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        png = out / f"swell-{prob.name}.png"
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [s for s, _ in reports]
        for label, get in (
            ("f' as a tree", lambda r: r.derivative.tree_ops),
            ("f' after CSE", lambda r: r.derivative.cse_ops),
            ("f' DAG nodes", lambda r: r.derivative.dag_nodes),
            ("f as a tree", lambda r: r.function.tree_ops),
            ("jaxpr equations", lambda r: r.jaxpr_eqns),
        ):
            ys = [get(r) for _, r in reports]
            if all(y for y in ys):
                ax.semilogy(xs, ys, "o-", label=label)
        ax.set(xlabel=prob.size_means, ylabel="operations", title=f"expression swell: {prob.name}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        con.print(f"Wrote {png}")
    return 0


def _growth(prev: Any, rep: Any, key: str) -> str:
    if prev is None:
        return "-"
    a, b = getattr(prev.derivative, key), getattr(rep.derivative, key)
    return f"{b / a:.2f}x" if a and b is not None else "-"


# -------------------------------------------------------------------------- steps


def _rule(spec: str) -> tuple[str, int | None]:
    scheme, _, order = spec.partition(":")
    return scheme, int(order) if order.isdigit() else None


def _steps(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    import diffkit as dk

    prob = dk.harness.get_problem(args.problem)
    inst = prob.build(args.size, args.dtype)
    rules = _split(args.rules) or []
    if args.rules is None:  # the default set: the complex step only where it is valid
        rules = list(DEFAULT_RULES)
        try:
            with jax.enable_x64(args.dtype == "float64"):
                dk.fd.check_analytic(lambda x0: inst.fun(x0, *inst.args[1:]), inst.args[0])
        except dk.DiffkitError as exc:
            rules.remove("complex")
            why = str(exc).partition(": ")[2].split(" (first from")[0].split(":")[0]
            _console(stderr=True).print(f"complex step left out: {why} (not complex-analytic)")
    for spec in rules:
        if not re.fullmatch(r"[a-z]+(:\d+)?", spec):
            raise CLIError(f"--rules: {spec!r} is not SCHEME or SCHEME:ORDER (e.g. central:4)")
        dk.fd.stencil(*_rule(spec))  # fail early on an unknown scheme or order

    def f(x0: Any) -> Any:
        return inst.fun(x0, *inst.args[1:])

    eps = float(np.finfo(args.dtype).eps)
    steps = np.logspace(0, math.floor(math.log10(eps)) - 1, -math.floor(math.log10(eps)) + 2)
    sweeps = {}
    with jax.enable_x64(args.dtype == "float64"), _progress("steps") as progress:
        task = progress.add_task("", total=len(rules))
        for spec in rules:
            progress.update(task, description=spec)
            scheme, order = _rule(spec)
            sweeps[spec] = dk.fd.step_sweep(f, inst.args[0], steps, scheme=scheme, order=order)
            progress.advance(task)
    rows = []
    for k, h in enumerate(steps):
        cells = []
        for s in sweeps.values():
            e = s.errors[k]
            mark = "*" if h == s.optimal_step else ""
            cells.append("-" if not np.isfinite(e) else f"{e:.1e}{mark}")
        rows.append([f"{h:.0e}", *cells])
    con = _console()
    what = "jax.grad" if inst.quantity == "grad" else f"jax.jacrev, m={inst.m}"
    title = f"Finite-difference error (rho vs float64 {what}) by step: {prob.name} n={inst.n}, {args.dtype}"  # noqa: E501
    con.print(_table(title, ["step", *sweeps], rows))
    for spec, s in sweeps.items():
        con.print(
            f"{spec}: optimal step {s.optimal_step:.0e} (error {s.optimal_error:.1e}, marked *); "
            f"the default step rule gives {s.default_error:.1e}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"steps-{prob.name}-{args.dtype}.png"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = eps / 10
    for spec, s in sweeps.items():
        (line,) = ax.loglog(s.steps, np.maximum(s.errors, floor), "o-", ms=3, label=spec)
        ax.loglog(
            [s.optimal_step], [max(s.optimal_error, floor)], "*", ms=14, color=line.get_color()
        )
    ax.set(xlabel="step h", ylabel="max rho vs float64 reference", title=f"{title.split(': ')[1]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="* optimal step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    con.print(f"Wrote {png}")
    return 0


# ------------------------------------------------------------------------ explain


def tiny_scalar_network() -> tuple[Callable[..., Any], dict[str, float]]:
    """The 9-parameter worked example written with one scalar per parameter (so every tape
    node is a scalar), and its parameter values, taken from :func:`diffkit.examples.tiny_network`.

    Example:
        >>> f, at = tiny_scalar_network()
        >>> round(float(f(**at)), 5)
        0.46286
    """
    import jax.numpy as jnp

    from diffkit.examples import tiny_network

    ex = tiny_network()
    values = ex.names(ex.args[0])
    x1, x2 = (float(v) for v in ex.args[1])
    y = float(ex.args[2])

    def loss(w11, w12, b1, w21, w22, b2, v1, v2, b3):  # type: ignore[no-untyped-def]
        h1 = jnp.maximum(w11 * x1 + w12 * x2 + b1, 0.0)  # hidden unit 1 (ReLU)
        h2 = jnp.maximum(w21 * x1 + w22 * x2 + b2, 0.0)  # hidden unit 2
        y_hat = 1.0 / (1.0 + jnp.exp(-(v1 * h1 + v2 * h2 + b3)))  # sigmoid output
        return -(y * jnp.log(y_hat) + (1.0 - y) * jnp.log(1.0 - y_hat))  # cross-entropy

    return loss, values


def _explain(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    import diffkit as dk
    from diffkit.harness.problems import _resolve

    if args.target:
        fun = _resolve(args.target)
        names = [
            p.name
            for p in inspect.signature(fun).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not args.at:
            raise CLIError(f"explain {args.target}: give the point with --at, e.g. --at 0.5,2")
        try:
            values = [float(v) for v in args.at.split(",")]
        except ValueError:
            raise CLIError(f"--at: {args.at!r} is not a list of numbers like 0.5,2") from None
        if len(values) != len(names):
            raise CLIError(
                f"--at: {args.target} takes {len(names)} argument(s) ({', '.join(names)}), "
                f"got {len(values)} value(s)"
            )
        point = dict(zip(names, values, strict=True))
        title = f"{args.target} at " + ", ".join(f"{k}={v:g}" for k, v in point.items())
    else:
        fun, point = None, {}
        title = "the 9-parameter network (2 inputs, 2 ReLU units, sigmoid output, cross-entropy)"
    with jax.enable_x64(args.dtype == "float64"):
        if fun is None:
            fun, point = tiny_scalar_network()
        xs = [jnp.asarray(v, args.dtype) for v in point.values()]
        tape = dk.get("tape").record(fun, *xs)
        grads = tape.backward()
        _print_walk(tape, list(point), grads, title)
    return 0


def _print_walk(tape: Any, names: list[str], grads: Sequence[Any], title: str) -> None:
    import jax.numpy as jnp
    import numpy as np

    con = _console()
    label = {k: n for k, n in zip(tape.in_keys, names, strict=True) if k is not None}

    def name(k: int | None, v: Any) -> str:
        return label.get(k, f"t{k}") if k is not None else _num(v)

    con.print(f"[bold]Explaining {title}[/bold]\n")
    rows = []
    for node in tape.nodes:
        args = ", ".join(name(k, x) for k, x in zip(node.in_keys, node.inputs, strict=True))
        lhs = ", ".join(name(k, None) for k in node.out_keys if k is not None)
        rows.append([lhs, f"{node.primitive}({args})", " ".join(_num(y) for y in node.outputs)])
    inputs = ", ".join(f"{n}={_num(v)}" for n, v in zip(names, tape.inputs, strict=True))
    con.print(f"Inputs: {inputs}")
    con.print(
        _table(
            "1. Forward pass: every node's value",
            ["node", "computes", "value"],
            rows,
        )
    )
    out = tape.outputs[0]
    con.print(
        f"Output {name(getattr(out, 'key', None), None)} = {_num(getattr(out, 'value', out))}\n"
    )

    rows = []
    for node in reversed(tape.nodes):
        y_bars = [tape.adjoints.get(k) if k is not None else None for k in node.out_keys]
        if all(b is None for b in y_bars):
            continue
        y_bars = [
            jnp.zeros_like(y) if b is None else b for y, b in zip(node.outputs, y_bars, strict=True)
        ]
        scalar = all(np.size(y) == 1 for y in node.outputs) and len(node.outputs) == 1
        local = node.pullback([jnp.ones_like(y) for y in node.outputs]) if scalar else None
        passed = node.pullback(y_bars)
        for i, (k, x) in enumerate(zip(node.in_keys, node.inputs, strict=True)):
            if k is None:
                continue
            lhs = name(node.out_keys[0], None)
            rows.append(
                [
                    f"{lhs} = {node.primitive}(...)",
                    f"d{lhs}/d{name(k, x)} = {_num(local[i])}"
                    if local is not None
                    else "(Jacobian)",
                    " ".join(_num(b) for b in y_bars),
                    f"{_num(passed[i])} -> {name(k, x)}",
                ]
            )
    headers = ["node", "local derivative", "upstream (dL/dnode)", "passes on (upstream x local)"]
    con.print(_table("2. Backward pass: from the output back to the inputs", headers, rows))
    con.print("(A value used twice receives the sum of what its users pass on.)\n")

    rows = []
    for n, v, g in zip(names, tape.inputs, grads, strict=True):
        gv = float(np.asarray(g).ravel()[0]) if np.size(g) == 1 else None
        meaning = (
            "(array)"
            if gv is None
            else "no effect here"
            if gv == 0
            else "increase it to reduce the loss"
            if gv < 0
            else "decrease it to reduce the loss"
        )
        rows.append([n, _num(v), _num(g, signed=True), meaning])
    con.print(
        _table("3. Gradient: dL/d(parameter)", ["parameter", "value", "gradient", "meaning"], rows)
    )
    con.print(
        "A gradient g says: nudging the parameter by a small e changes the output by about g*e."
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
    p.add_argument("target", nargs="?", help="your function as path/to/module.py:function")
    p.add_argument("--input", default="n", help="argument shapes of your function, e.g. n,32xn")
    p.add_argument("--problem", help="built-in problem(s), comma-separated (see diffkit list)")
    p.add_argument("--sizes", help="sizes, e.g. 10,100,1e3,1e4 or 1..13")
    p.add_argument("--methods", help="comma-separated differentiators (default: all)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
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

    command("list", "the differentiators and the problems", "example:\n  diffkit list", _list)

    p = command(
        "swell",
        "symbolic expression swell, size by size",
        "examples:\n  diffkit swell\n  diffkit swell --problem sigmoid-chain --sizes 1..6",
        _swell,
    )
    p.add_argument("--problem", default="logistic-map")
    p.add_argument("--sizes", default="1..13", help="e.g. 1..13 (default) or 1,2,4,8")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
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
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
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
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")

    p = command(
        "plot",
        "regenerate the PNG plots from saved results",
        "examples:\n  diffkit plot results/\n  diffkit plot results/results.jsonl --out figs/",
        _plot,
    )
    p.add_argument("results", help="a results folder or its results.jsonl")
    p.add_argument("--out", help="folder for the PNGs (default: next to the results)")
    return parser


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
