"""Cost of the gradient doctor against one gradient evaluation, on the MLP at n = 1e4
(issue 15: "at most ~20x one gradient evaluation").

The doctor walks the jaxpr eagerly (JAX caches each primitive's compiled kernel), records
every equation in float32 and float64, and evaluates each equation five more times for its
finite differences. A gradient can be evaluated eagerly too (``jax.grad(loss)(...)``, each
primitive dispatched on its own, as the doctor does) or as one jit-compiled program. The
script prints the median over repeats of each, measured side by side in one run, after one
warm-up call each (the kernels are compiled), and the ratios:

    python benchmarks/bench_doctor.py [--n 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

import diffkit as dk


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    inst = dk.harness.get_problem("mlp").build(args.n, "float32")
    grad = jax.grad(inst.fun)
    jitted = jax.jit(grad)
    print(f"mlp, n = {inst.n} parameters, float32; median of {args.repeats} after a warm-up")
    doctor = median_time(lambda: dk.doctor(inst.fun, *inst.args).ok, args.repeats)
    eager = median_time(lambda: grad(*inst.args), args.repeats)
    compiled = median_time(lambda: jitted(*inst.args), args.repeats)
    report = dk.doctor(inst.fun, *inst.args)
    print(f"  doctor (float32 + float64 walks)   {doctor * 1e3:9.2f} ms   ok={report.ok}")
    print(f"  jax.grad, eager                    {eager * 1e3:9.2f} ms")
    print(f"  jax.jit(jax.grad), compiled        {compiled * 1e3:9.2f} ms")
    print(f"  doctor / eager gradient     {doctor / eager:8.1f}x")
    print(f"  doctor / compiled gradient  {doctor / compiled:8.1f}x")


if __name__ == "__main__":
    main()
