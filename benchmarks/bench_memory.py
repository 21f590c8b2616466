"""Reverse mode's memory against depth: the tape's checkpointing schedules beside
jax.checkpoint, and gradient accumulation, measured in one run.

Memory is XLA's compiled ``memory_analysis()`` (temporary buffers: what a schedule keeps
alive), deterministic on the CPU; times are the fastest of interleaved runs
(``measure.time_interleaved``), so the ratios printed side by side share the machine's load.

    PYTHONPATH=. python benchmarks/bench_memory.py [--depths 64,128,256,512,1024]
        [--problem deep-mlp] [--revolve 8] [--min-time 0.5]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import diffkit as dk
from diffkit import checkpoint as ck
from diffkit.accuracy import rho_tree
from diffkit.harness.measure import time_interleaved
from diffkit.harness.memory import method_spec


def compiled(spec: str, fun, args):
    name, options = method_spec(spec)
    return jax.jit(dk.get(name, **options).grad(fun)).lower(*args).compile()


def temp(c) -> int:
    return c.memory_analysis().temp_size_in_bytes


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def depth_study(problem: str, depths: list[int], revolve: int, min_time: float) -> None:
    methods = [
        "tape", "tape@sqrt", f"tape@revolve({revolve})",
        "jax-rev", "jax-rev@nothing_saveable", "jax-rev@sqrt+nothing_saveable",
    ]  # fmt: skip
    prob = dk.harness.get_problem(problem)
    mem = {m: [] for m in methods}
    deepest = None
    for L in depths:
        inst = prob.build(L)
        progs = {m: compiled(m, inst.fun, inst.args) for m in methods}
        for m in methods:
            mem[m].append(temp(progs[m]))
        deepest = (L, inst, progs)
    print(f"\n{problem}, float32: XLA temporaries [MiB] by depth L")
    print(f"{'method':<32}" + "".join(f"{L:>9}" for L in depths) + "   slope")
    for m in methods:
        row = "".join(f"{b / 2**20:9.3f}" for b in mem[m])
        print(f"{m:<32}{row}   {slope(depths, mem[m]):5.2f}")
    L, inst, progs = deepest
    t = time_interleaved({m: (lambda c=c: c(*inst.args)) for m, c in progs.items()}, min_time)
    base = {"tape": "tape", "jax-rev": "jax-rev"}
    print(f"\nL = {L}: time (fastest of interleaved runs: the least disturbed by a shared machine)")
    print(f"{'method':<32}{'time':>10}{'/store-all':>12}{'memory':>10}{'recomputed':>12}")
    for m in methods:
        b = base[m.split("@")[0]]
        name, options = method_spec(m)
        plan = ck.parse(options.get("checkpoint"))
        rec = (plan.plan(L).recomputed if plan else 0) if name == "tape" else "-"
        ratio = t[m]["min"] / t[b]["min"]
        print(
            f"{m:<32}{t[m]['min'] * 1e3:8.2f}ms{ratio:12.2f}"
            f"{mem[m][-1] / mem[b][-1]:10.3f}{rec!s:>12}"
        )
    pairs = [("tape", "jax-rev@nothing_saveable"), ("tape@sqrt", "jax-rev@sqrt+nothing_saveable")]
    print("\ntape vs the equivalent jax.checkpoint (each step's state kept / sqrt segments):")
    for a, b in pairs:
        print(
            f"  {a:<12} / {b:<30} memory {mem[a][-1] / mem[b][-1]:5.2f}x, "
            f"time {t[a]['min'] / t[b]['min']:5.2f}x"
        )
    ref = progs["tape"](*inst.args)
    with jax.enable_x64(True):  # the schedules' gradients against store-all's, in float64
        inst64 = prob.build(L, "float64")
        ref64 = compiled("tape", inst64.fun, inst64.args)(*inst64.args)
        worst = max(
            rho_tree(compiled(m, inst64.fun, inst64.args)(*inst64.args), ref64)
            for m in ("tape@sqrt", f"tape@revolve({revolve})")
        )
    print(f"float64 rho of sqrt and revolve vs store-all at L = {L}: {worst:.1e}")
    del ref


def revolve_counts(depths: list[int], revolve: int) -> None:
    print(f"\nrevolve({revolve}): step evaluations, plan vs Griewank's r L - beta(c + 1, r - 1)")
    for L in depths:
        plan = ck.revolve(revolve).plan(L)
        theory = ck.revolve_steps(L, revolve)
        print(
            f"  L = {L:>5}: r = {ck.repetitions(L, revolve)}, plan {plan.advances}, theory "
            f"{theory}, equal {plan.advances == theory}, recomputed {plan.recomputed} "
            f"({plan.recomputed / L:.2f} per step)"
        )


def accumulation(min_time: float) -> None:
    rng = np.random.default_rng(0)
    batch, width = 4096, 256
    x = jnp.asarray(rng.standard_normal((batch, width)), jnp.float32)
    y = jnp.asarray(rng.standard_normal(batch), jnp.float32)
    params = {
        "W1": jnp.asarray(rng.standard_normal((width, width)) / 16, jnp.float32),
        "w2": jnp.asarray(rng.standard_normal(width) / 16, jnp.float32),
    }

    def loss(p, data):
        xb, yb = data
        return jnp.mean((jnp.tanh(xb @ p["W1"]) @ p["w2"] - yb) ** 2)

    print(f"\ngradient accumulation: MLP {width} wide, batch {batch}, float32")
    print(f"{'micro-batch':>12}{'XLA temp MiB':>14}{'time':>10}")
    full = jax.jit(jax.grad(loss)).lower(params, (x, y)).compile()
    rows = {"full": (full, (params, (x, y)))}
    for size in (1024, 256, 64):

        def acc(p, data, size=size):
            return dk.accumulate(jax.grad(loss), p, ck.micro_batches(data, size))

        rows[str(size)] = (jax.jit(acc).lower(params, (x, y)).compile(), (params, (x, y)))
    t = time_interleaved({k: (lambda c=c, a=a: c(*a)) for k, (c, a) in rows.items()}, min_time)
    for k, (c, _) in rows.items():
        print(f"{k:>12}{temp(c) / 2**20:14.2f}{t[k]['median'] * 1e3:8.2f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="deep-mlp")
    parser.add_argument("--depths", default="64,128,256,512,1024")
    parser.add_argument("--revolve", type=int, default=8)
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    depth_study(args.problem, depths, args.revolve, args.min_time)
    revolve_counts(depths, args.revolve)
    accumulation(args.min_time)


if __name__ == "__main__":
    main()
