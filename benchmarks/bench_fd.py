"""Finite-difference gradients of an MLP loss: diffkit's ``fd`` against the naive strategies.

The loss: 3 layers (8 -> w -> w -> 1, tanh), batch 32, mean squared error, parameters as one
flat vector of n ~ 1e2, 1e3, 1e4 (1e5 with ``--big``). For each n, side by side in one run:

* ``fd``          -- ``jax.jit(dk.get("fd").grad(loss))``: central, vmapped in chunks;
* ``loop``        -- a Python loop over coordinates of one jitted shifted evaluation, 2 per input;
* ``vmap``        -- one unchunked ``jax.vmap`` over all 2n shifted evaluations, jitted
                     (skipped where its n x n perturbations would pass ``--vmap-limit`` bytes);
* ``fd-rich``     -- ``dk.get("fd", scheme="richardson")`` (6 evaluations per input), and
* ``numdifftools``-- ``nd.Gradient`` (central + Richardson, float64), if installed, n <= 1e3
                     by default (``--nd-max``), at the accuracy ``fd-rich`` must match or beat.

Times are medians of repeated steady-state calls (compilation excluded, ``block_until_ready``);
``err`` is rho against ``jax.grad`` in float64. Run: ``python benchmarks/bench_fd.py`` (about
2-3 minutes on 2 cores; ``--sizes 100 1000`` for a quick look).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's diffkit
import diffkit as dk
from diffkit.accuracy import rho

BATCH, D_IN = 32, 8


def mlp(n_target: int, dtype) -> tuple[Callable, jax.Array]:
    """The loss of a 8-w-w-1 tanh MLP on a fixed batch, as a function of a flat vector."""
    w = max(2, round((-11 + math.sqrt(121 + 4 * (n_target - 1))) / 2))  # n = w^2 + 11 w + 1
    shapes = [(D_IN, w), (w,), (w, w), (w,), (w, 1), (1,)]
    sizes = [math.prod(s) for s in shapes]
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (BATCH, D_IN), dtype)
    y = jax.random.normal(ky, (BATCH, 1), dtype)
    theta = jax.random.normal(kp, (sum(sizes),), dtype) / math.sqrt(w)

    def loss(p: jax.Array) -> jax.Array:
        parts, start = [], 0
        for shape, size in zip(shapes, sizes, strict=True):
            parts.append(p[start : start + size].reshape(shape))
            start += size
        W1, b1, W2, b2, W3, b3 = parts
        h = jnp.tanh(x @ W1 + b1)
        h = jnp.tanh(h @ W2 + b2)
        return jnp.mean((h @ W3 + b3 - y) ** 2)

    return loss, theta


def timed(fn: Callable, arg, budget: float, least: int = 3) -> float:
    """Median seconds of steady-state calls within ~budget seconds, after one warm-up call
    (none when ``least`` is 1: a single slow call of functions already compiled)."""
    if least > 1:
        jax.block_until_ready(fn(arg))
    times: list[float] = []
    while len(times) < least or (sum(times) < budget and len(times) < 50):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_loop(loss: Callable, h: jax.Array) -> Callable:
    shifted = jax.jit(lambda p, i, c: loss(p.at[i].add(c)))
    steps = np.asarray(h).tolist()

    def grad(p):
        pairs = [(shifted(p, i, s), shifted(p, i, -s)) for i, s in enumerate(steps)]
        return np.array(
            [(float(a) - float(b)) / (2 * s) for (a, b), s in zip(pairs, steps, strict=True)]
        )

    return grad


def naive_vmap(loss: Callable, h: jax.Array) -> Callable:
    def one(p, i):
        return (loss(p.at[i].add(h[i])) - loss(p.at[i].add(-h[i]))) / (2 * h[i])

    return jax.jit(lambda p: jax.vmap(lambda i: one(p, i))(jnp.arange(p.size)))


def numdifftools_grad(loss: Callable) -> Callable | None:
    try:
        import numdifftools as nd
    except ImportError:
        return None
    f = jax.jit(loss)
    g = nd.Gradient(lambda p: float(f(jnp.asarray(p))))
    return lambda p: np.asarray(g(np.asarray(p)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    ap.add_argument("--big", action="store_true", help="also n = 1e5")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per case")
    ap.add_argument("--nd-max", type=int, default=1_100, help="largest n for numdifftools")
    ap.add_argument("--loop-max", type=int, default=20_000, help="largest n for the loop")
    ap.add_argument("--vmap-limit", type=float, default=8e9, help="bytes the vmap may take")
    args = ap.parse_args()
    sizes = args.sizes + ([100_000] if args.big else [])
    with jax.enable_x64(args.dtype == "float64"):
        dtype = jnp.dtype(args.dtype)
        print(
            f"fd gradient of an MLP loss, {args.dtype}, {jax.devices()[0].platform}; "
            "median seconds, err = rho vs jax.grad (float64)"
        )
        head = f"{'n':>7} {'method':>13} {'seconds':>10} {'err':>8} {'x fd':>7}"
        print(head)
        for n_target in sizes:
            loss, theta = mlp(n_target, dtype)
            n = theta.size
            with jax.enable_x64(True):
                want = np.asarray(jax.grad(loss)(theta.astype(jnp.float64)))
            fd = dk.get("fd")
            h = dk.fd.default_step(theta, fd.stencil)
            cases: dict[str, Callable | None] = {
                "fd": jax.jit(fd.grad(loss)),
                "loop": naive_loop(loss, h) if n <= args.loop_max else None,
                "vmap": naive_vmap(loss, h)
                if 6 * n * n * dtype.itemsize < args.vmap_limit
                else None,
                "fd-rich": jax.jit(dk.get("fd", scheme="richardson").grad(loss)),
                "numdifftools": numdifftools_grad(loss) if n <= args.nd_max else None,
            }
            results = {}
            for name, fn in cases.items():
                if fn is None:
                    print(f"{n:>7} {name:>13} {'skipped':>10}")
                    continue
                slow = name == "numdifftools" and n >= 1_000  # one call (~1 min) suffices
                seconds = timed(fn, theta, args.budget, least=1 if slow else 3)
                err = rho(np.asarray(fn(theta), np.float64), want)
                results[name] = seconds
                base = results["fd-rich" if name == "numdifftools" else "fd"]
                print(
                    f"{n:>7} {name:>13} {seconds:>10.4g} {err:>8.1e} {seconds / base:>7.2f}",
                    flush=True,
                )
            naive = [results[k] for k in ("loop", "vmap") if k in results]
            if naive:
                print(
                    f"{n:>7} {'':>13} fd vs the better naive strategy: "
                    f"{min(naive) / results['fd']:.2f}x faster"
                )


if __name__ == "__main__":
    main()
