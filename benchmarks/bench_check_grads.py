"""Cost of diffkit.testing.check_grads at n = 1e4 inputs (issue: "a few seconds").

The default check uses random directions, not a full Jacobian, so its cost is a handful of
function evaluations plus one compilation per precision. Prints wall and process CPU time of
a first (compiling) and a second (cached) check, and the same for JAX's own check_grads.

    python benchmarks/bench_check_grads.py [--n 10000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from jax.test_util import check_grads as jax_check_grads

from diffkit.testing import check_grads


def timed(fn) -> tuple[float, float, str]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        fn()
        verdict = "passed"
    except AssertionError:
        verdict = "FAILED (the gradient is right: a false alarm)"
    return time.perf_counter() - wall, time.process_time() - cpu, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    n = parser.parse_args().n
    x = jax.random.uniform(jax.random.PRNGKey(0), (n,), jnp.float32, -2.0, 2.0)

    def f(x):
        return jnp.sum(jnp.tanh(x) * x) + jnp.sum(jnp.sin(x[:-1] * x[1:]))

    print(f"check of f: R^{n} -> R (float32), modes fwd+rev, 2 random directions")
    for label, run in [
        ("diffkit check_grads, first call", lambda: check_grads(f, (x,))),
        ("diffkit check_grads, again", lambda: check_grads(f, (x,))),
        ("jax check_grads (order 1)", lambda: jax_check_grads(f, (x,), order=1)),
    ]:
        wall, cpu, verdict = timed(run)
        print(f"  {label:34s} wall {wall:6.2f} s   cpu {cpu:6.2f} s   {verdict}")


if __name__ == "__main__":
    main()
