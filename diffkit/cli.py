"""The ``diffkit`` command line.

``diffkit compare`` prints, for the 9-parameter worked example, the gradient from every
registered differentiator side by side, with each one's largest deviation from ``jax-rev``
in float64. ``diffkit list`` lists the differentiators.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax

import diffkit as dk
from diffkit.examples import TINY_NAMES, tiny_network


def _compare(args: argparse.Namespace) -> int:
    with jax.enable_x64(args.dtype == "float64"):
        ex = tiny_network()
        methods = args.methods.split(",") if args.methods else dk.names()
        for name in methods:
            dk.get(name)  # fail early, with the list of valid names
        reference = ex.names(dk.get("jax-rev").grad(ex.fun)(*ex.args))
        columns: dict[str, dict[str, float]] = {}
        for name in methods:
            columns[name] = ex.names(dk.get(name).grad(ex.fun)(*ex.args))
        loss = float(ex.fun(*ex.args))
    print(f"{ex.description}; loss = {loss:.8f} ({args.dtype}, backend {jax.default_backend()})")
    width = max(12, *(len(m) + 2 for m in methods))
    print("param".ljust(8) + "".join(m.rjust(width) for m in methods))
    for p in TINY_NAMES:
        print(p.ljust(8) + "".join(f"{columns[m][p]:+{width}.8f}" for m in methods))
    devs = {m: max(abs(columns[m][p] - reference[p]) for p in TINY_NAMES) for m in methods}
    print("max |diff| from jax-rev:")
    print(" " * 8 + "".join(f"{devs[m]:{width}.1e}" for m in methods))
    return 0


def _list(args: argparse.Namespace) -> int:
    for name in dk.names():
        d = dk.get(name)
        opts = ", ".join(dk.options(name))
        print(f"{name:10s} {d.mode:10s} {type(d).description}  [options: {opts}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffkit",
        description="Differentiate one JAX function six ways and compare cost and accuracy.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    compare = sub.add_parser(
        "compare",
        help="gradients of the 9-parameter example from every differentiator",
        epilog="example: diffkit compare --methods jax-fwd,jax-rev --dtype float32",
    )
    compare.add_argument("--methods", help="comma-separated differentiator names (default: all)")
    compare.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    compare.set_defaults(run=_compare)
    lst = sub.add_parser("list", help="the registered differentiators and their options")
    lst.set_defaults(run=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffkit`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args))
    except dk.DiffkitError as exc:
        if args.debug:
            raise
        print(f"diffkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffkit: interrupted", file=sys.stderr)
        return 130
