"""The ``diffkit`` command's argument parser: its commands, their arguments and help texts,
and the parsers of sizes and memory amounts. JAX-free: the command imports this module, and
parses, before JAX is imported (so ``--backend`` can still choose the platform).

Example:
    >>> args = build_parser().parse_args(["compare", "--sizes", "10,100", "--budget", "5"])
    >>> args.command, args.sizes, args.budget, args.dtype
    ('compare', '10,100', 5.0, 'float32')
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "DTYPES",
    "PLATFORMS",
    "CLIError",
    "Parser",
    "build_parser",
    "parse_memory",
    "parse_sizes",
    "split",
]

PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
DTYPES = ["float32", "float64"]


class CLIError(Exception):
    """A bad command line: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors.

    Example:
        >>> Parser(prog="demo").parse_args([])
        Namespace()
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a value such as -1G is an (invalid) value, not an unknown option: the argument's own
        # check then names it, instead of argparse's "expected one argument"
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> Any:
        print(f"diffkit: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def parse_sizes(text: str, flag: str = "--sizes") -> list[int]:
    """Sizes from ``"10,100,1e3"`` or a range ``"1..13"`` (both ends included), or a mix;
    ``flag`` names the argument in errors.

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
                f"{flag}: {part!r} is not a whole number or a range like 1..13; "
                f"write e.g. {flag} 10,100,1e3 or {flag} 1..13"
            ) from None
    if not sizes or min(sizes) < 1:
        raise CLIError(
            f"{flag}: {min(sizes, default=text)!r} is not positive; give whole numbers >= 1, "
            f"e.g. {flag} 1,2,4"
        )
    return sizes


def _sizes(flag: str) -> Callable[[str], str]:
    """An argparse type that checks a list of sizes for ``flag`` and keeps its text."""
    return _argument(lambda text: parse_sizes(text, flag) and text)


def _point(text: str) -> str:
    """An argparse type for ``--at``: finite numbers, comma-separated (the text kept)."""
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not a number; write the point as numbers, e.g. --at 0.5,2"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not finite: a derivative is taken at a finite point; "
                "give finite numbers, e.g. --at 0.5,2"
            )
    return text


def _doctor_target(text: str) -> str:
    """An argparse type for doctor's target: ``module:function`` or a known problem."""
    if ":" in text:
        return text
    from diffkit.harness.families import problems  # JAX, only for a name to look up

    names = problems()
    if text not in names:
        close = difflib.get_close_matches(text, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise argparse.ArgumentTypeError(
            f"unknown problem {text!r}; {hint}'diffkit list' shows the problems; for your own "
            "function write module:function or file.py:function"
        )
    return text


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
        what = "not positive" if text.strip().startswith("-") else "not a memory size"
        raise CLIError(
            f"--memory-limit: {text!r} is {what}; write e.g. 2G, 512M, 1e9 (bytes), auto or none"
        )
    return value


def split(text: str | None) -> list[str] | None:
    """The non-empty items of a comma-separated list; None for no text.

    Example:
        >>> split("tape, fd,,jax-rev"), split(None)
        (['tape', 'fd', 'jax-rev'], None)
    """
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


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


_COMPARE_EXAMPLES = """examples:
  diffkit compare                                    the quick suite (under 30 s)
  diffkit compare --suite gradbench --methods jax-rev,jax-fwd,dual,tape --dtype float64
  diffkit compare --problem mlp --sizes 10,100,1e3,1e4 --methods tape,jax-rev,fd \\
                  --dtype float64 --budget 60 --out results/
  diffkit compare my_model.py:loss --input n,32xn --sizes 10,100
  diffkit compare --problem rosenbrock --format csv > rosenbrock.csv
  diffkit compare --sparse --out sparse/             dense against compressed Jacobians
  diffkit compare --sparse --problem brusselator-2d --sizes 8,16,32,64 --methods jax-fwd,fd
  diffkit compare --resume                           continue an interrupted run
  diffkit compare --resume --budget 300              ... and retry its timeouts with more time
  diffkit compare --fresh                            start again; old results moved aside
  diffkit compare --problem mlp --sizes 1e6 --memory-limit 4G

A results folder is never emptied: running into one that holds results needs --resume or
--fresh, and a second run into a folder in use is refused.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command; ``args.command`` names the command given.

    Example:
        >>> build_parser().parse_args(["list"]).command
        'list'
    """
    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="diffkit",
        description="Differentiate one JAX function six ways and compare cost and accuracy.",
        epilog="examples:\n  diffkit compare\n  diffkit list\n  diffkit explain\n"
        "  diffkit steps --problem lse\n  diffkit swell --sizes 1..13\n"
        "  diffkit plot results/\n  diffkit report results/ -o report.html\n"
        "Run 'diffkit COMMAND --help' for each command's options.",
        formatter_class=fmt,
    )
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    common.add_argument(
        "--backend", choices=list(PLATFORMS), help="the JAX platform to run on (default: JAX's)"
    )
    common.add_argument(
        "--matmul-precision",
        choices=["default", "high", "highest"],
        help="precision of float32 matrix products (JAX's jax_default_matmul_precision; on "
        "recent NVIDIA GPUs 'default' is TF32, about 3 digits: 'highest' gives full float32)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, epilog: str) -> Any:
        return sub.add_parser(
            name, help=help, description=help, epilog=epilog, parents=[common], formatter_class=fmt
        )

    p = command("compare", "measure every differentiator's cost and accuracy", _COMPARE_EXAMPLES)
    _compare_arguments(p)
    command("list", "the differentiators and the problems", "example:\n  diffkit list")

    _study_commands(command)
    return parser


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", help="your function as path/to/module.py:function")
    p.add_argument("--input", default="n", help="argument shapes of your function, e.g. n,32xn")
    p.add_argument("--problem", help="built-in problem(s), comma-separated (see diffkit list)")
    p.add_argument(
        "--suite",
        choices=["quick", "gradbench"],
        default="quick",
        help="without a function or --problem: the quick suite (default) or GradBench's twelve "
        "evals at small sizes, nested ones once per inner method",
    )
    p.add_argument(
        "--sparse",
        action="store_true",
        help="each method's Jacobian dense and compressed (name+sparse: the pattern detected, "
        "coloured, one pass per colour), side by side; without --problem: brusselator-2d, "
        "pde-1d, ba, ht, rosenbrock-ext-hessian",
    )
    p.add_argument("--sizes", help="sizes, e.g. 10,100,1e3,1e4 or 1..13")
    p.add_argument(
        "--methods",
        help="comma-separated differentiators (default: all); name+sparse for a compressed "
        "Jacobian, e.g. jax-fwd+sparse",
    )
    p.add_argument("--dtype", choices=DTYPES, default="float32")
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
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where cases run: this machine's worker (default) or a Ray cluster (diffkit[ray])",
    )
    p.add_argument(
        "--address", help="Ray cluster address, e.g. auto (default: a local Ray instance)"
    )
    p.add_argument(
        "--devices",
        type=_sizes("--devices"),
        help="device counts for a sharded problem (e.g. mlp-sharded), e.g. 1,2,4,8; on a CPU "
        "simulated host devices",
    )


def _study_commands(command: Callable[..., Any]) -> None:
    """swell, steps, explain and plot, with their arguments."""
    p = command(
        "swell",
        "symbolic expression swell, size by size",
        "examples:\n  diffkit swell\n  diffkit swell --problem sigmoid-chain --sizes 1..6",
    )
    p.add_argument("--problem", default="logistic-map")
    p.add_argument("--sizes", default="1..13", help="e.g. 1..13 (default) or 1,2,4,8")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument(
        "--budget", type=_positive("seconds"), default=30.0, help="seconds per stage (default 30)"
    )
    p.add_argument("--out", default="results", help="folder for the plot (default results/)")

    p = command(
        "steps",
        "finite-difference error vs step size (the U-shaped curve)",
        "examples:\n  diffkit steps\n  diffkit steps --problem mlp --size 100 --dtype float32\n"
        "  diffkit steps --rules forward,central,central:4,complex",
    )
    p.add_argument("--problem", default="lse")
    p.add_argument("--size", type=int, default=10, help="problem size (default 10)")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
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
        "  diffkit explain f.py:energy --at 0.5,2\n"
        "  diffkit explain --html              the explorable page -> explain.html\n",
    )
    p.add_argument("target", nargs="?", help="a small function of scalars, path/to/file.py:name")
    p.add_argument("--at", type=_point, help="the point: one number per argument, e.g. 0.5,2")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument(
        "--html",
        nargs="?",
        const="explain.html",
        metavar="FILE",
        help="write the explorable page (graph, step-through, every method) to FILE "
        "(default explain.html) instead of printing tables",
    )

    p = command(
        "plot",
        "regenerate the PNG plots from saved results",
        "examples:\n  diffkit plot results/\n  diffkit plot results/results.jsonl --out figs/",
    )
    p.add_argument("results", help="a results folder or its results.jsonl")
    p.add_argument("--out", help="folder for the PNGs (default: next to the results)")

    p = command(
        "report",
        "one self-contained HTML page of saved results: heat map, charts, filters",
        "examples:\n  diffkit report results/ -o report.html\n"
        "  diffkit report a/results.jsonl b/results.jsonl -o both.html",
    )
    p.add_argument("results", nargs="+", help="results folders or JSON-lines files")
    p.add_argument("-o", "--out", default="report.html", help="the page (default report.html)")
    p.add_argument("--title", default="", help="the page's title (default: the results' path)")

    p = command(
        "doctor",
        "diagnose a gradient: the equation and source line that made it wrong, NaN or zero",
        "examples:\n  diffkit doctor mymodel.py:loss --args n=1000\n"
        "  diffkit doctor sigmoid-chain --args n=40\n"
        "exit status 1 when the gradient is not healthy",
    )
    p.add_argument(
        "target", type=_doctor_target, help="a problem (diffkit list) or your module:function"
    )
    p.add_argument("--args", default="", help="the size of the arguments, e.g. n=1000")
    p.add_argument("--input", default="n", help="argument shapes of your function, e.g. n,32xn")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--method", help="diagnose a differentiator's rules, e.g. tape (default: JAX)")

    p = command(
        "memory",
        "reverse mode's memory against depth: checkpointing schedules and jax.checkpoint policies",
        "examples:\n  diffkit memory --problem deep-mlp --depths 8,32,128,512\n"
        "  diffkit memory --problem rnn --methods 'tape,tape@sqrt,tape@revolve(4)'",
    )
    p.add_argument("--problem", default="deep-mlp", help="deep-mlp (default), resnet or rnn")
    p.add_argument(
        "--depths",
        type=_sizes("--depths"),
        default="8,32,128,512",
        help="depths L, e.g. 8,32,128,512",
    )
    p.add_argument(
        "--methods",
        help="comma-separated NAME@OPTION+OPTION, e.g. tape@sqrt, tape@revolve(8), "
        "jax-rev@sqrt+nothing_saveable (default: the tape's schedules beside JAX's)",
    )
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument(
        "--min-time", type=_positive("seconds"), default=0.1, help="seconds of timing samples"
    )
    p.add_argument("--out", default="results", help="folder for the plot (default results/)")
