"""What tests/test_html.py and tests/test_browser.py share: the worked example's page (built
once per process) and its numbers written out by hand (tests/test_cli.py's), and a small set
of results records."""

from __future__ import annotations

import functools
from typing import Any

import jax
from test_cli import worked_example as hand_worked_example  # the chain rule, by hand

import diffkit as dk
from diffkit.examples import tiny_scalar_network
from diffkit.html import Explained

__all__ = ["hand_worked_example", "records", "worked_page"]


@functools.cache
def worked_page() -> Explained:
    """The explain page of the worked example, as ``diffkit explain --html`` builds it."""
    with jax.enable_x64(True):
        f, at = tiny_scalar_network()
    return dk.explain(f, *at.values(), names=list(at), title="the worked example")


def records() -> list[dict[str, Any]]:
    """Records as the harness writes them: two problems, three methods, two dtypes, one
    timeout; times follow exact power laws (derivative = c n^k), so fitted slopes are k."""
    out = []
    slopes = {"jax-rev": 1.0, "fd": 2.0, "tape": 1.0}
    for problem in ("mlp", "rosenbrock"):
        for dtype in ("float32", "float64"):
            for n in (100, 1000, 10000):
                for method, k in slopes.items():
                    primal = 1e-6 * n
                    time = 3e-6 * n**k * (1.5 if method == "tape" else 1.0)
                    rec: dict[str, Any] = {
                        "problem": problem, "problem_options": {}, "size": n, "n": n, "m": 1,
                        "method": method, "method_options": {}, "dtype": dtype, "seed": 0,
                        "quantity": "grad", "outcome": "ok", "message": "",
                        "time_median": time, "primal_median": primal, "ratio": time / primal,
                        "passes": n if method == "fd" else 1, "rho_max": 1e-7 * k,
                        "accurate": True, "budget": 60.0, "meta": {"backend": "cpu"},
                    }  # fmt: skip
                    rec["key"] = str([problem, n, method, dtype])
                    out.append(rec)
    timeout = dict(out[-1], outcome="timeout", message="over the 60 s budget", ratio=None)
    del timeout["time_median"], timeout["rho_max"]
    out[-1] = timeout
    return out
