"""What tests/test_html.py and tests/test_browser.py share: the worked example's page (built
once per process) and its numbers written out by hand, and a small set of results records."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax

import diffkit as dk
from diffkit.examples import tiny_scalar_network
from diffkit.html import Explained


def hand_worked_example() -> tuple[float, dict[str, float]]:
    """Loss and gradient of the 9-parameter network by the chain rule, by hand."""
    x1, x2, y = 1.0, 0.5, 1.0
    w11, w12, b1, w21, w22, b2, v1, v2, b3 = 0.3, 0.7, 0.1, -0.2, 0.5, 0.0, 0.6, -0.4, 0.1
    z1, z2 = w11 * x1 + w12 * x2 + b1, w21 * x1 + w22 * x2 + b2
    h1, h2 = max(z1, 0.0), max(z2, 0.0)
    p = 1 / (1 + math.exp(-(v1 * h1 + v2 * h2 + b3)))
    loss = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    do = p - y  # d loss / d logit for sigmoid + cross-entropy
    d1, d2 = do * v1 * (z1 > 0), do * v2 * (z2 > 0)
    grads = dict(w11=d1 * x1, w12=d1 * x2, b1=d1, w21=d2 * x1, w22=d2 * x2, b2=d2)
    grads.update(v1=do * h1, v2=do * h2, b3=do)
    return loss, grads


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
