"""Memory of a forward-mode gradient at n = 1e5: jax.jacfwd's full n x n tangent basis versus
diffkit's jax-fwd, whose basis directions are vmapped in chunks sized to ``memory_budget``.

Figures are XLA's compiled memory analysis (temporary buffers), so nothing is run and the
script finishes in seconds whatever n is.

    python benchmarks/bench_jax_fwd_memory.py [--n 100000]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import diffkit as dk


def temp_mib(fn, x) -> float:
    analysis = jax.jit(fn).lower(x).compile().memory_analysis()
    return analysis.temp_size_in_bytes / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    n = parser.parse_args().n
    weights = jnp.arange(n, dtype=jnp.float32)

    def f(x):
        return jnp.sum(jnp.sin(x) ** 2 * weights)

    x = jnp.linspace(0.0, 1.0, n)
    print(f"gradient of f: R^{n} -> R, float32, XLA temporary memory")
    print(f"  jax.jacfwd (one n x n basis)        {temp_mib(jax.jacfwd(f), x):10.0f} MiB")
    for budget in (2**30, 2**26):
        d = dk.get("jax-fwd", memory_budget=budget)
        label = f"dk jax-fwd, memory_budget {budget / 2**20:.0f} MiB"
        print(f"  {label:36s}{temp_mib(d.grad(f), x):10.0f} MiB")
    rev = temp_mib(dk.get("jax-rev").grad(f), x)
    print(f"  {'dk jax-rev (one backward pass)':36s}{rev:10.1f} MiB")


if __name__ == "__main__":
    main()
