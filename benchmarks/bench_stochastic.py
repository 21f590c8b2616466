"""Gradient estimators without backpropagation: second moment against theory, and cost.

Two measurements, side by side in one run (``python benchmarks/bench_stochastic.py``):

* **second moment** -- ``E||g_hat||^2 / ||g||^2`` of ``forward-grad`` (one Gaussian tangent:
  theory ``n + 2``) and ``spsa`` (one Rademacher direction: ``n``) on
  ``f(x) = sum(sin x) + x.x / 2`` (exact gradient ``cos x + x``, written out) at n = 1e2,
  1e4, 1e6, over ``--repeats`` keys (``harness.estimators.quality``); printed with its
  standard error and the relative deviation from theory.
* **cost** -- on the harness's ``mlp`` loss (batch 32), one jitted estimate with k tangents
  (samples) against the work it is made of, with the same directions given as an input:
  ``k`` JVPs (``jax.vmap`` of ``jax.jvp``), and ``2k`` evaluations of the loss (vmapped).
  Times are medians of interleaved steady-state calls (``measure.time_interleaved``);
  the ratios are what the issue bounds by 1.2 (forward-grad, Gaussian and Rademacher
  tangents) and 1.1 (spsa).

Both take a few minutes on 2 loaded cores; ``--quick`` runs small sizes only.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's diffkit
import diffkit as dk
from diffkit.harness.estimators import quality
from diffkit.harness.measure import time_interleaved


def sine(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.sin(x)) + 0.5 * x @ x


def second_moments(sizes: list[int], repeats: int) -> None:
    print(f"second moment E||g||^2/||g||^2 over {repeats} keys (float32)")
    print(f"{'method':>13} {'n':>9} {'measured':>12} {'se':>9} {'theory':>10} {'dev':>7}")
    for n in sizes:
        x = jnp.linspace(-2.0, 2.0, n, dtype=jnp.float32)
        exact = jnp.cos(x) + x
        for name in ("forward-grad", "spsa"):
            q = quality(dk.get(name), sine, (x,), exact, repeats=repeats, seed=1)
            dev = q["second_moment"] / q["second_moment_theory"] - 1
            print(
                f"{name:>13} {n:>9} {q['second_moment']:>12.6g} {q['second_moment_se']:>9.3g} "
                f"{q['second_moment_theory']:>10.6g} {dev:>+7.2%}"
            )


def _contenders(fun: Callable, rest: tuple, k: int) -> dict[str, Callable]:
    """Jitted ``(theta, v) -> ...``: the estimators (ignoring ``v``, they draw their own
    directions), the k JVPs and 2k evaluations along ``v`` (k, n), and jax.grad."""

    def loss(t: jax.Array) -> jax.Array:
        return fun(t, *rest)

    def estimator(name: str, **options: Any) -> Callable:
        grad = dk.get(name, **options).grad(loss)
        return jax.jit(lambda t, v: grad(t))

    def jvps(t: jax.Array, v: jax.Array) -> jax.Array:
        return jax.vmap(lambda u: jax.jvp(loss, (t,), (u,))[1])(v)

    def evals(t: jax.Array, v: jax.Array) -> jax.Array:
        return jax.vmap(lambda u: loss(t + 1e-3 * u) - loss(t - 1e-3 * u))(v)

    return {
        "fg": estimator("forward-grad", tangents=k),
        "fg_rad": estimator("forward-grad", tangents=k, distribution="rademacher"),
        "jvps": jax.jit(jvps),
        "spsa": estimator("spsa", samples=k),
        "evals": jax.jit(evals),
        "rev": jax.jit(lambda t, v: jax.grad(loss)(t)),
    }


def costs(sizes: list[int], ks: list[int], min_time: float) -> None:
    print("\ncost of one estimate vs the passes it is made of (mlp loss, float32)")
    print(f"{'n':>8} {'k':>3} {'fg':>9} {'fg-rad':>9} {'k JVPs':>9} {'ratio':>6} {'rad':>6} "
          f"{'spsa':>9} {'2k evals':>9} {'ratio':>6} {'jax-rev':>9}")  # fmt: skip
    for size in sizes:
        inst = dk.harness.get_problem("mlp").build(size, "float32")
        theta, rest = inst.args[0], inst.args[1:]
        for k in ks:
            v = jax.random.normal(jax.random.key(0), (k, theta.size), theta.dtype)
            t = time_interleaved(
                {
                    name: functools.partial(fn, theta, v)
                    for name, fn in _contenders(inst.fun, rest, k).items()
                },
                min_time=min_time,
            )
            med = {name: s["median"] for name, s in t.items()}
            print(
                f"{inst.n:>8} {k:>3} {med['fg'] * 1e6:>7.0f}us {med['fg_rad'] * 1e6:>7.0f}us "
                f"{med['jvps'] * 1e6:>7.0f}us {med['fg'] / med['jvps']:>6.2f} "
                f"{med['fg_rad'] / med['jvps']:>6.2f} {med['spsa'] * 1e6:>7.0f}us "
                f"{med['evals'] * 1e6:>7.0f}us {med['spsa'] / med['evals']:>6.2f} "
                f"{med['rev'] * 1e6:>7.0f}us"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--repeats", type=int, default=8000, help="keys per second moment")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timing")
    args = parser.parse_args()
    print(jax.devices()[0].device_kind, jax.__version__)
    if args.quick:
        second_moments([100, 10_000], 1000)
        costs([1_000], [1, 4], 0.1)
    else:
        second_moments([100, 10_000, 1_000_000], args.repeats)
        costs([1_000, 10_000, 100_000], [1, 4, 16], args.min_time)


if __name__ == "__main__":
    main()
