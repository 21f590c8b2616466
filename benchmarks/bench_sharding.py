"""The sharded MLP (``mlp-sharded``) at several device counts, every method side by side.

For each device count the harness sweeps the methods (isolated workers, as ``diffkit
compare``) and the script prints, measured in the same run:

* per method and device count: median gradient time, the ratio to the primal, XLA's bytes
  per device, the strong-scaling efficiency ``t(1) / (d t(d))`` (``diffkit.sharding.scaling``);
* the time ratio of each hand-written method to JAX's own of the same mode at the same
  device count (``tape / jax-rev``, ``dual / jax-fwd``);
* in the compiled gradients: all-gathers of the full parameter vector, per method, and the
  gradient's layout (split over the devices or replicated);
* rho of each sharded gradient against the same method's on one device.

On a CPU the devices are simulated (``XLA_FLAGS=--xla_force_host_platform_device_count``, set
here before JAX starts) and share the machine's cores: the times say nothing about scaling,
only the correctness and collective counts do. On a host with several GPUs run it with
``--backend gpu`` for the real figures.

With ``--executors`` it instead runs the quick suite (``diffkit compare``'s) through the local
executor and through a local Ray instance and counts the records that are identical apart
from timing fields (the issue's check of the Ray executor), with both wall times.

Run:  python benchmarks/bench_sharding.py                         (CPU: 1,2,4,8 devices, n=1e4)
      python benchmarks/bench_sharding.py --devices 1,2 --sizes 1e5 --backend gpu
      python benchmarks/bench_sharding.py --executors                (quick suite: local vs Ray)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's diffkit

METHODS = "jax-rev,tape,jax-fwd,dual"
#: Record fields that differ between two runs of one case: timings, memory use, provenance.
VARYING = {"date", "run", "memory_limit", "rss_peak_bytes", "ratio", "host", "device"}


def compare_executors() -> None:
    import time

    import diffkit as dk
    from diffkit.harness.executors import RayExecutor

    def comparable(rec: dict) -> dict:
        timing = lambda k: k.endswith("_s") or k.startswith(("time_", "primal_"))  # noqa: E731
        return {k: v for k, v in rec.items() if k not in VARYING and not timing(k)}

    suite = dk.harness.quick_suite(dk.names())
    t0 = time.perf_counter()
    local = dk.harness.sweep(**suite, resume=False, min_time=0.05)
    t1 = time.perf_counter()
    remote = dk.harness.sweep(**suite, resume=False, min_time=0.05, executor=RayExecutor())
    t2 = time.perf_counter()
    same = 0
    for a, b in zip(local, remote, strict=True):
        ca, cb = comparable(a), comparable(b)
        same += ca == cb
        if ca != cb:
            print(
                "differs:",
                a["key"],
                sorted(k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)),
            )
    print(f"quick suite, {len(local)} cases: local {t1 - t0:.0f} s, ray {t2 - t1:.0f} s")
    print(f"identical apart from timing fields: {same}/{len(local)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--sizes", default="1e4", help="requested n, e.g. 1e3,1e4")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--backend", default="cpu", help="cpu (simulated devices) or gpu")
    parser.add_argument("--min-time", type=float, default=0.2)
    parser.add_argument("--executors", action="store_true", help="quick suite: local vs Ray")
    args = parser.parse_args()
    if args.executors:
        compare_executors()
        return
    from diffkit.cli.parse import parse_sizes

    devices, sizes = parse_sizes(args.devices), parse_sizes(args.sizes)
    os.environ["JAX_PLATFORMS"] = args.backend
    if args.backend == "cpu":
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(devices)}"

    import jax
    import numpy as np

    import diffkit as dk
    from diffkit import sharding
    from diffkit.accuracy import rho

    methods = args.methods.split(",")
    problems = [dk.harness.get_problem("mlp-sharded", devices=d) for d in devices]
    res = dk.harness.sweep(
        problems, sizes, methods, args.dtype, min_time=args.min_time, resume=False
    )
    print(f"{jax.devices()[0].device_kind} x {jax.device_count()}, {args.dtype}")
    print(sharding.scaling_text(res))
    ok = {
        (r["method"], r["size"], r["problem_options"]["devices"]): r
        for r in res
        if r["outcome"] == "ok"
    }
    print("\nhand-written / JAX's own, same mode, same device count (median times):")
    for size in sizes:
        for d in devices:
            cells = []
            for mine, jaxs in (("tape", "jax-rev"), ("dual", "jax-fwd")):
                a, b = ok.get((mine, size, d)), ok.get((jaxs, size, d))
                if a and b:
                    cells.append(f"{mine}/{jaxs} {a['time_median'] / b['time_median']:.2f}")
            print(f"  n={size} devices={d}: " + ", ".join(cells))

    print("\ncompiled gradients at the largest device count: full-vector all-gathers, layout,")
    print("rho against the same method on one device (float64)")
    with jax.enable_x64(True):
        big = problems[-1].build(sizes[0], "float64")
        one = problems[0].with_options(devices=1).build(sizes[0], "float64")
        for method in methods:
            d = dk.get(method)
            compiled = jax.jit(d.grad(big.fun)).lower(*big.args).compile()
            g = np.asarray(compiled(*big.args))
            g1 = np.asarray(jax.jit(d.grad(one.fun))(*one.args))
            spec = compiled(*big.args).sharding.spec
            print(
                f"  {method:8} all-gathers of n={big.n}: {sharding.full_gathers(compiled, big.n)}"
                f", layout {spec}, rho {rho(g[: one.n], g1):.1e}"
            )


if __name__ == "__main__":
    main()
