"""The ``diffkit`` command line: compare, list, swell, steps, explain, plot, report.

Every command has ``--help`` with examples. Errors print one line on stderr and exit with
code 2 (``--debug`` shows the traceback); Ctrl-C exits with 130 after saying what was kept.
Tables and progress use rich (progress on stderr, so ``--format csv`` output stays clean);
plots are PNGs written with matplotlib's non-interactive Agg backend.

JAX is imported only once the command line is parsed, so ``--backend`` can choose the
platform (``JAX_PLATFORMS``) before any backend starts; sweep workers inherit it.

This module is the shell: each command parses (``diffkit/cli/parse.py``: the parser, its
help texts and argument types), calls the library, and renders (``diffkit/cli/render.py``:
tables and printed text). Both are JAX-free at import.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from diffkit.cli import render
from diffkit.cli.parse import PLATFORMS, CLIError, build_parser, parse_memory, parse_sizes, split

if TYPE_CHECKING:  # the harness imports JAX, which the command loads only after parsing
    from diffkit.diagnosis import Diagnosis
    from diffkit.differentiators.tape import TapeReverse
    from diffkit.harness.record import Record
    from diffkit.harness.results import Results

__all__ = ["build_parser", "main", "parse_memory", "parse_sizes"]

RESULTS_FILE = "results.jsonl"


# ------------------------------------------------------------------------ compare


def _cases(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep's problems, sizes and methods from the command line (the quick suite when
    neither a function nor a problem is given)."""
    import diffkit as dk
    from diffkit.harness.measure import resolve_method
    from diffkit.harness.sweeps import check_target

    if args.target and args.problem:
        raise CLIError("give either a function (module.py:function) or --problem, not both")
    sizes = parse_sizes(args.sizes) if args.sizes else None
    named = split(args.problem) or []
    if len(named) == 1 and ":" in named[0]:  # --problem module:function is a user function
        args.target, named = named[0], []
    if "user" in named:
        raise CLIError(
            "--problem user needs your function: give it as the target, e.g. "
            "diffkit compare my_model.py:loss --input n (or my_module:loss)"
        )
    methods = split(args.methods) or dk.names()
    for m in methods:  # fail early, naming the valid choices; "module:Class" is imported
        resolve_method(m)
    if getattr(args, "suite", "quick") == "gradbench":
        if args.target or named or args.sparse:
            raise CLIError(
                "--suite gradbench runs its own problems: leave out --problem/function/--sparse"
            )
        return dk.harness.gradbench_suite(methods) | ({"sizes": sizes} if sizes else {})
    if args.sparse:  # each method dense and compressed; the estimators only when asked for
        if not args.methods:
            methods = [m for m in methods if resolve_method(m)[0].mode != "stochastic"]
        methods = dk.harness.with_sparse(methods)
        if not args.target and not named:
            return dk.harness.sparse_suite(methods) | ({"sizes": sizes} if sizes else {})
    if not args.target and not named:
        return dk.harness.quick_suite(methods) | ({"sizes": sizes} if sizes else {})
    if args.target:
        # Not loaded here: the user's code runs only in the sweep's worker, under the time
        # budget and memory limit; only that the file or module exists is checked.
        check_target(args.target)
        problems = [dk.harness.user_problem(args.target, args.input)]
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
    from diffkit.harness.executors import executor_of

    cases, path = _cases(args), _results_path(args)
    out = path.parent
    if args.devices:  # a sharded problem family at each device count (diffkit.sharding)
        cases["problems"] = [
            dk.harness.get_problem(p, devices=d)
            for p in cases["problems"]
            for d in parse_sizes(args.devices)
        ]
    err = render.console(stderr=True)
    err.print(f"diffkit compare: {render.header()}, {args.dtype}; results in {out}/")
    progress = render.progress("measuring")
    # Import matplotlib for the plots while the worker measures and this process waits.
    # Not before: NumPy, which JAX has now imported, must not be imported by two threads
    # at once (the second sees a partially initialised module and fails).
    import numpy  # noqa: F401  (already imported by JAX; made explicit for the order above)

    threading.Thread(target=import_plotting, daemon=True).start()
    done = [0]  # cases finished
    interrupted = [False]

    def step(rec: Record, index: int, total: int) -> None:
        if interrupted[0]:  # a Ctrl-C that Python swallowed (see noting_interrupts)
            raise KeyboardInterrupt
        done[0] = index
        what = f"{rec['problem']} n={rec.get('n')} {rec['method']}"
        progress.update(task, total=total, completed=index, description=what)
        if not err.is_terminal:  # a log: one line per case instead of a live bar
            err.print(f"[{index}/{total}] {what}: {rec['outcome']}")

    try:
        with progress, noting_interrupts(interrupted):
            task = progress.add_task("", total=None)
            dk.harness.sweep(
                **cases, dtypes=args.dtype, out=path, budget=args.budget, resume=args.resume,
                progress=step, min_time=args.min_time, memory_limit=args.memory_limit,
                retry_failed=args.retry_failed,
                executor=executor_of(args.executor, args.address),
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
    render.show(res, args.format, f"diffkit compare ({render.header()}, {args.dtype})")
    if args.devices:
        from diffkit.sharding import scaling_text

        print(f"\nscaling with the device count:\n{scaling_text(res)}")
    if args.format == "table" and getattr(args, "suite", "quick") == "gradbench":
        print("\nGradBench's view: derivative time / primal time\n" + res.ratio_view())
    if args.format == "table" and args.sparse:
        print(f"\ndense against compressed (passes: dense/colours)\n{res.sparse_view()}\n")
    if args.format == "table":
        render.conclude(res, files)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from diffkit.harness import worker as workers

    with _host_devices(args.devices):
        # Start the sweep's worker process first: its start-up (seconds) then overlaps with
        # this process's own import of JAX.
        workers.prestart()
        try:
            return _compare_in(args)
        finally:
            workers.close_spares()  # not taken: the arguments were bad


@contextlib.contextmanager
def _host_devices(devices: str | None) -> Iterator[None]:
    """``--devices`` on a CPU: as many simulated host devices as the largest count asks for
    (``XLA_FLAGS``, read when JAX starts, here and in the workers); restored afterwards."""
    saved = os.environ.get("XLA_FLAGS")
    if devices and "host_platform_device_count" not in (saved or ""):
        count = max(parse_sizes(devices))
        flag = f"--xla_force_host_platform_device_count={count}"
        os.environ["XLA_FLAGS"] = f"{saved or ''} {flag}".strip()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = saved


@contextlib.contextmanager
def noting_interrupts(flag: list[bool]) -> Iterator[None]:
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


def import_plotting() -> None:
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


# --------------------------------------------------------------------------- list


def _list(args: argparse.Namespace) -> int:
    import diffkit as dk

    differentiators = [(name, dk.get(name), dk.options(name)) for name in dk.names()]
    problems = [(name, dk.harness.get_problem(name)) for name in dk.harness.problems()]
    render.lists(differentiators, problems)
    return 0


# ------------------------------------------------------------------ swell, steps


def _swell(args: argparse.Namespace) -> int:
    from diffkit.harness import plots, studies

    sizes = parse_sizes(args.sizes)
    with render.progress("swell") as progress:
        task = progress.add_task("", total=len(sizes))

        def step(what: str) -> None:
            progress.update(task, description=what, completed=sizes.index(int(what.split()[-1])))

        study = studies.swell_study(args.problem, sizes, args.dtype, args.budget, step)
        progress.update(task, completed=len(study.reports))  # the last size is done too
    render.swell(study, args.dtype)
    if study.reports:
        prob = study.problem
        png = Path(args.out) / f"swell-{prob.name}.png"
        render.wrote([plots.swell_figure(study.reports, prob.name, prob.size_means, png)])
    return 0


def _steps(args: argparse.Namespace) -> int:
    from diffkit import fd
    from diffkit.harness import plots, studies

    rules = None if args.rules is None else split(args.rules) or []
    for spec in rules or []:
        if not re.fullmatch(r"[a-z]+(:\d+)?", spec):
            raise CLIError(f"--rules: {spec!r} is not SCHEME or SCHEME:ORDER (e.g. central:4)")
        fd.stencil(*studies.parse_rule(spec))  # fail early on an unknown scheme or order
    with render.progress("steps") as progress:
        task = progress.add_task("", total=len(rules or studies.DEFAULT_RULES))

        def step(what: str) -> None:
            progress.update(task, description=what, advance=1)

        study = studies.step_study(args.problem, args.size, args.dtype, rules, step)
        done = len(study.sweeps)  # the complex step is left out of a non-holomorphic problem
        progress.update(task, total=done, completed=done)
    name = study.problem.name
    where = f"{name} n={study.n}, {args.dtype}"
    render.steps(study, where)
    png = Path(args.out) / f"steps-{name}-{args.dtype}.png"
    render.wrote([plots.steps_figure(study.sweeps, study.eps, where, png)])
    return 0


# ------------------------------------------------------------------------ explain


def _point(target: str, at: str | None) -> tuple[Any, dict[str, float]]:
    """The function of ``path/to/file.py:name`` and the point ``--at`` names, by argument."""
    from diffkit.harness.families import resolve_target

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
        if args.html:  # the explorable page (diffkit/html) instead of the tables
            from diffkit.html import explain

            page = explain(fun, *xs, names=list(point), title=title, dtype=args.dtype)
            render.wrote([page.save(args.html)])
            return 0
        tape = cast("TapeReverse", dk.get("tape"))
        render.print_walk(tape.record(fun, *xs).walk(list(point)), title)
    return 0


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
    render.wrote(files)
    return 0


def _report(args: argparse.Namespace) -> int:
    from diffkit.html import report

    render.wrote([report(args.results, title=args.title).save(args.out)])
    return 0


def _memory(args: argparse.Namespace) -> int:
    from diffkit.harness.memory import DEFAULT_METHODS, memory_sweep

    depths, methods = parse_sizes(args.depths), split(args.methods)
    total = len(depths) * len(methods or DEFAULT_METHODS)
    done = iter(range(1, total + 1))

    def progress(rec: Record) -> None:  # a line per case: the study takes minutes
        line = f"[{next(done)}/{total}] L={rec['size']} {rec['label']}: {rec['outcome']}"
        print(line, file=sys.stderr, flush=True)

    front = memory_sweep(
        args.problem, depths, methods, args.dtype, min_time=args.min_time, progress=progress
    )
    print(front.table())
    print("log-log slope of XLA temporaries vs L: " + ", ".join(
        f"{label} {slope:.2f}" for label, slope in front.slopes().items()
    ))  # fmt: skip
    render.wrote([front.plot(Path(args.out) / f"memory-{front.problem}.png")])
    return 0


def diagnose(
    target: str,
    sizes: str = "",
    inputs: str = "n",
    dtype: str = "float32",
    method: str | None = None,
) -> Diagnosis:
    """The doctor of the ``diffkit doctor`` command: ``target`` is a problem name (``diffkit
    list``) or the user's ``module:function`` / ``file.py:function``, whose arguments are
    seeded random arrays of the shapes ``inputs`` (``"n,32xn"``); ``sizes`` sets ``n``
    (``"n=1000"``; default: the family's smallest size).

    Example:
        >>> diagnose("rosenbrock", "n=5", dtype="float64").ok
        True
    """
    import jax

    from diffkit._core.errors import DiffkitError
    from diffkit.diagnosis import doctor
    from diffkit.harness.families import get_problem, problems, user_problem

    n = None
    for item in filter(None, (s.strip() for s in sizes.split(","))):
        name, _, value = item.partition("=")
        if name.strip() != "n" or not value.strip().isdigit():
            raise DiffkitError(f"doctor: --args takes n=<size>, e.g. n=1000; got {item!r}")
        n = int(value)
    problem = get_problem(target) if target in problems() else user_problem(target, inputs)
    inst = problem.build(n, dtype)
    with jax.enable_x64(dtype == "float64"):
        return doctor(inst.fun, *inst.args, method=method)


def _doctor(args: argparse.Namespace) -> int:
    report = diagnose(args.target, args.args, args.input, args.dtype, args.method)
    print(report)
    return 0 if report.ok else 1


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compare": _compare,
    "list": _list,
    "swell": _swell,
    "steps": _steps,
    "explain": _explain,
    "plot": _plot,
    "memory": _memory,
    "report": _report,
    "doctor": _doctor,
}


@contextlib.contextmanager
def _jax_settings(args: argparse.Namespace) -> Iterator[None]:
    """``--backend`` and ``--matmul-precision``, for this process and the sweep workers."""
    settings = {"jax_platforms": PLATFORMS.get(args.backend or "")}
    settings["jax_default_matmul_precision"] = getattr(args, "matmul_precision", None)
    saved = {option: os.environ.get(option.upper()) for option in settings}
    jax = sys.modules.get("jax")
    configured = {option: getattr(jax.config, option) for option in settings} if jax else {}
    for option, value in settings.items():
        if value:
            os.environ[option.upper()] = value  # JAX reads its options from JAX_... too
            if jax:
                jax.config.update(option, value)
    try:
        yield
    finally:  # main() called in-process (a notebook, a test) leaves no setting behind
        for option, value in saved.items():
            if value is None:
                os.environ.pop(option.upper(), None)
            else:
                os.environ[option.upper()] = value
        for option, value in configured.items():
            assert jax is not None  # configured is empty without it
            if value != getattr(jax.config, option):
                jax.config.update(option, value)


def _check_backend(backend: str | None) -> None:
    """Fail in one line when the platform asked for with ``--backend`` is not available."""
    if not backend:
        return
    import jax

    try:  # the platform by name: JAX started earlier in this process keeps its first backend
        jax.devices(PLATFORMS[backend])
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
            return int(_COMMANDS[args.command](args))
    except KeyboardInterrupt:
        print("diffkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        what = text[0] if text else type(exc).__name__
        from diffkit._core.errors import DiffkitError

        if not isinstance(exc, CLIError | DiffkitError):
            what = f"{type(exc).__name__}: {what} (run with --debug for the traceback)"
        print(f"diffkit: error: {what}", file=sys.stderr)
        return 2
