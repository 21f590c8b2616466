"""Hand-written AD against JAX's own, side by side: ``tape``/``jax-rev``, ``dual``/``jax-fwd``.

The problem is the MLP loss of ANCHORS.md: widths (h, h, h, 1), tanh hidden layers, batch 32,
mean squared error, on one flat parameter vector of n = (2h + 1)(h + 1) entries. Every
gradient is jit-compiled. For each size the script reports

* the steady-state time of each method (median of interleaved repeats) and the ratio
  hand-written / JAX, measured in the same run;
* the first-call cost (trace + compile + first run) of each, and its ratio;
* rho between the two gradients.

Run:  python benchmarks/bench_hand.py            (default sizes, a few minutes on 2 cores)
      python benchmarks/bench_hand.py --big      (only: dual's gradient at n = 1e5, chunked
                                                  to the memory budget; slow: ~n^2 work)
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's diffkit

import diffkit as dk
from diffkit._core.trees import bytes_per_direction
from diffkit.accuracy import rho

BATCH = 32


def mlp_loss(flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    h = x.shape[1]
    widths = (h, h, h, 1)
    act, start = x, 0
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        W = flat[start : start + a * b].reshape(a, b)
        bias = flat[start + a * b : start + a * b + b]
        start += a * b + b
        act = act @ W + bias
        act = jnp.tanh(act) if i < len(widths) - 2 else act
    return jnp.mean((act[:, 0] - y) ** 2)


def problem(h: int):
    rng = np.random.default_rng(h)
    n = (2 * h + 1) * (h + 1)
    flat = jnp.asarray(rng.normal(size=n) / np.sqrt(h), jnp.float32)
    x = jnp.asarray(rng.normal(size=(BATCH, h)), jnp.float32)
    y = jnp.asarray(rng.normal(size=BATCH), jnp.float32)
    return n, (flat, x, y)


def first_call(fn, args) -> tuple[float, jax.Array]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def steady(fns, args, min_time: float = 2.5, max_rounds: int = 500) -> list[float]:
    """Median time of each function, interleaved round by round, the order flipped every
    round (load on a shared machine then hits every function alike)."""
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    rounds = 0
    while rounds < 7 or (time.perf_counter() - start < min_time and rounds < max_rounds):
        order = range(len(fns)) if rounds % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            t = time.perf_counter()
            jax.block_until_ready(fns[k](*args))
            times[k].append(time.perf_counter() - t)
        rounds += 1
    return [statistics.median(t) for t in times]


def compare(mine: str, ref: str, h: int, **options) -> dict:
    n, args = problem(h)
    f_mine = jax.jit(dk.get(mine, **options).grad(mlp_loss))
    f_ref = jax.jit(dk.get(ref, **options).grad(mlp_loss))
    c_ref, g_ref = first_call(f_ref, args)
    c_mine, g_mine = first_call(f_mine, args)
    t_mine, t_ref = steady([f_mine, f_ref], args)
    return dict(
        n=n,
        t_mine=t_mine,
        t_ref=t_ref,
        ratio=t_mine / t_ref,
        c_mine=c_mine,
        c_ref=c_ref,
        c_ratio=c_mine / c_ref,
        rho=rho(g_mine, g_ref),
    )


def table(title: str, mine: str, ref: str, widths, **options) -> None:
    print(f"\n{title}: {mine} / {ref}, MLP (h, h, h, 1), batch {BATCH}, float32, jit")
    print(
        f"{'n':>9} {mine + ' µs':>11} {ref + ' µs':>11} {'ratio':>6} "
        f"{'1st call s':>11} {'ref 1st s':>10} {'ratio':>6} {'rho':>8}"
    )
    for h in widths:
        r = compare(mine, ref, h, **options)
        print(
            f"{r['n']:>9} {r['t_mine'] * 1e6:>11.1f} {r['t_ref'] * 1e6:>11.1f} {r['ratio']:>6.2f} "
            f"{r['c_mine']:>11.2f} {r['c_ref']:>10.2f} {r['c_ratio']:>6.2f} {r['rho']:>8.1e}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", action="store_true", help="only dual at n = 1e5 (slow)")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    if not args.big:
        table("reverse mode", "tape", "jax-rev", [6, 22, 70, 223, 706])
        table("forward mode (vector mode, gradient by n JVPs)", "dual", "jax-fwd", [2, 6, 22, 70])
    else:
        n, prob = problem(223)
        dual = dk.get("dual")
        chunk = dual._chunk(
            n, bytes_per_direction(lambda w: ((mlp_loss(w, *prob[1:]),), ()), prob[:1])
        )
        print(f"dual at n = {n}: {n} directions in chunks of {chunk} (1 GiB budget)", flush=True)
        t, g = first_call(jax.jit(dual.grad(mlp_loss)), prob)
        err = rho(g, jax.grad(mlp_loss)(*prob))
        print(f"\ndual gradient at n = {n} (chunked to the 1 GiB budget): {t:.1f} s, rho {err:.1e}")


if __name__ == "__main__":
    main()
