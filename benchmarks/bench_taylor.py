"""Higher-order derivatives: the Laplacian six ways, and the K-th derivative against K.

Two measurements, side by side in one run (``python benchmarks/bench_taylor.py``):

* **Laplacian** of a PINN-style MLP ``u: R^d -> R`` (d = 256, width 256, depth 4, tanh,
  float32, CPU): collapsed Taylor mode (= the forward Laplacian), nested reverse (the
  Hessian by ``jacrev(grad)``, then its trace), forward-over-reverse HVPs over the basis,
  Taylor mode (one 2-jet per direction), ``jax.experimental.jet`` (2-jets, vmapped) and folx's
  ``forward_laplacian`` (if installed: ``pip install -e ".[operators-bench]"``). Each method is
  one jitted function; times are medians of interleaved steady-state calls
  (``measure.time_interleaved``). Before timing, every exact method is checked against the
  others in float64 (rho <= 1e-10) at the same sizes. Then the cost against d = 32..256 at
  the same width, with each method's fitted exponent in d.
* **K-th directional derivative** ``d^K/dt^K u(x + t v)`` for K = 1..6 on a smaller MLP
  (d = 64, width 128, depth 3, vmapped over 128 points): Taylor mode (one K-jet:
  ``diffkit.taylor.directional``) against K nested ``jax.jvp``: time, XLA's flop count of
  the compiled program, the jaxpr's equation count (the program before XLA) and the seconds
  to lower and compile it (one cold compile each: noisy), each with
  its fitted exponent in K (log-log, the polynomial law) and its factor per order
  (log-linear, the exponential law). ``--plot PATH`` saves the figure.

``--quick`` runs small sizes only (seconds).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's diffkit
from diffkit.accuracy import rho
from diffkit.harness.measure import time_interleaved
from diffkit.harness.operator_families import mlp, mlp_params
from diffkit.operators import laplacian
from diffkit.taylor import directional

METHODS = ("collapsed", "nested-reverse", "hvp", "taylor", "jet")


def _folx() -> Callable[[Callable, Any], Any] | None:
    try:
        from folx import forward_laplacian
    except ImportError:
        return None

    def lap(f: Callable, x: Any) -> Any:
        return forward_laplacian(f, sparsity_threshold=0)(x).laplacian

    return lap


def laplacians(d: int, width: int, depth: int, dtype: Any) -> dict[str, Callable[[Any], Any]]:
    params = mlp_params(d, width, depth, dtype, np.random.default_rng(0))

    def u(x: Any) -> Any:
        return mlp(params, x)

    fns = {m: jax.jit(functools.partial(laplacian, u, method=m)) for m in METHODS}
    folx = _folx()
    if folx is not None:
        fns["folx"] = jax.jit(functools.partial(folx, u))
    return fns


def bench_laplacian(d: int, width: int, depth: int, min_time: float) -> None:
    print(f"Laplacian of an MLP R^{d} -> R (width {width}, depth {depth}, tanh)")
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, d))
        values = {m: f(x64) for m, f in laplacians(d, width, depth, jnp.float64).items()}
        ref = values["nested-reverse"]
        worst = max(rho(v, ref) for v in values.values())
        print(
            f"  float64 agreement: max rho against nested reverse {worst:.1e} "
            f"({'ok' if worst <= 1e-10 else 'FAILS'} at 1e-10); value {float(ref):.6g}"
        )
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, d), jnp.float32)
    fns = laplacians(d, width, depth, jnp.float32)
    if "folx" not in fns:
        print("  folx not installed: pip install -e '.[operators-bench]' to compare")
    times = time_interleaved({m: functools.partial(f, x) for m, f in fns.items()}, min_time)
    base = times["nested-reverse"]["median"]
    print(f"  {'method':16} {'median ms':>10} {'/ nested-rev':>13} {'/ folx':>8}  n")
    for m, t in times.items():
        vs_folx = f"{t['median'] / times['folx']['median']:8.2f}" if "folx" in times else "       -"
        print(f"  {m:16} {1e3 * t['median']:10.2f} {t['median'] / base:13.2f} {vs_folx}  {t['n']}")


def bench_dims(dims: list[int], width: int, depth: int, min_time: float) -> None:
    """The Laplacian's cost against d at fixed width: the fitted exponent in d of each method
    (the laws: d directions each, so linear in d for the forward methods once the d x width
    first layer does not dominate; nested reverse builds the d x d Hessian)."""
    print(f"Laplacian cost against d (width {width}, depth {depth}, float32)")
    fns = {}
    for d in dims:
        x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, d), jnp.float32)
        for m, f in laplacians(d, width, depth, jnp.float32).items():
            if m != "jet":
                fns[(m, d)] = functools.partial(f, x)
    times = time_interleaved({f"{m} {d}": f for (m, d), f in fns.items()}, min_time)
    for m in dict.fromkeys(m for m, _ in fns):
        t = np.array([times[f"{m} {d}"]["median"] for d in dims])
        power = np.polyfit(np.log(dims), np.log(t), 1)[0]
        print(f"  {m:16} ms: {' '.join(f'{1e3 * s:7.2f}' for s in t)}   exponent in d {power:.2f}")


def _nested(f: Callable, x: Any, v: Any, K: int) -> Any:
    g = lambda t: f(x + t * v)  # noqa: E731
    for _ in range(K):
        g = (lambda h: lambda t: jax.jvp(h, (t,), (jnp.ones_like(t),))[1])(g)
    return g(jnp.zeros((), x.dtype))


def _count(jaxpr: Any) -> int:
    """Equations of a jaxpr, those of its sub-jaxprs included: the program's size before XLA."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", p)
            if hasattr(inner, "eqns"):
                total += _count(inner)
    return total


def _flops(f: Callable, *args: Any) -> tuple[float, float]:
    """XLA's flop count of the compiled ``f`` and the seconds lowering and compiling took."""
    start = time.perf_counter()
    compiled = f.lower(*args).compile()
    seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", float("nan"))), seconds


def _fit(ks: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """The exponent of a power law ``y ~ K^p`` and the factor per order of ``y ~ g^K``."""
    return np.polyfit(np.log(ks), np.log(ys), 1)[0], np.exp(np.polyfit(ks, np.log(ys), 1)[0])


def bench_orders(
    d: int, width: int, depth: int, batch: int, orders: range, min_time: float, plot: str
) -> None:
    print(
        f"K-th directional derivative of an MLP R^{d} -> R (width {width}, depth {depth}), "
        f"vmapped over {batch} points"
    )
    params = mlp_params(d, width, depth, jnp.float32, np.random.default_rng(0))

    def u(x: Any) -> Any:
        return mlp(params, x)

    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.uniform(-1, 1, (batch, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=d) / np.sqrt(d), jnp.float32)
    fns, size, flops, compile_s = {}, {}, {}, {}
    for K in orders:
        for name, one in (
            ("taylor", functools.partial(directional, u, v=v, order=K)),
            ("nested", functools.partial(_nested, u, v=v, K=K)),
        ):
            f = jax.jit(jax.vmap(one))
            fns[f"{name} K={K}"] = functools.partial(f, xs)
            size[f"{name} K={K}"] = _count(jax.make_jaxpr(jax.vmap(one))(xs).jaxpr)
            flops[f"{name} K={K}"], compile_s[f"{name} K={K}"] = _flops(f, xs)
        a, b = fns[f"taylor K={K}"](), fns[f"nested K={K}"]()
        assert rho(a, b) <= 1e-3, (K, rho(a, b))
    times = time_interleaved(fns, min_time)
    ks = np.array(list(orders), float)
    out = {}
    for name in ("taylor", "nested"):
        keys = [f"{name} K={K}" for K in orders]
        t = np.array([times[k]["median"] for k in keys])
        out[name] = t
        for what, ys, fmt in (
            ("time ms", 1e3 * t, "{:8.3f}"),
            ("XLA flops", np.array([flops[k] for k in keys]), "{:8.2g}"),
            ("jaxpr eqns", np.array([size[k] for k in keys], float), "{:8.0f}"),
            ("compile s", np.array([compile_s[k] for k in keys]), "{:8.3f}"),
        ):
            power, growth = _fit(ks, ys)
            print(
                f"  {name:7} {what:10} {' '.join(fmt.format(y) for y in ys)}   exponent in K "
                f"{power:5.2f}, x{growth:.2f} per order"
            )
    print(f"  nested / taylor time at K={orders[-1]}: {out['nested'][-1] / out['taylor'][-1]:.2f}")
    if plot:
        from diffkit.harness.plots import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.semilogy(ks, 1e3 * out["taylor"], "o-", label="Taylor mode (one K-jet)")
        ax.semilogy(ks, 1e3 * out["nested"], "s-", label="K nested jax.jvp")
        ax.set_xlabel("order K")
        ax.set_ylabel("median time (ms)")
        ax.set_title(f"K-th directional derivative, MLP d={d}, {batch} points")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"  figure: {plot}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--plot", default="", help="save the order sweep's figure here")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per method")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    if args.quick:
        bench_laplacian(16, 32, 2, 0.05)
        bench_dims([4, 8, 16], 32, 2, 0.05)
        bench_orders(8, 16, 2, 4, range(1, 5), 0.05, args.plot)
        return
    bench_laplacian(256, 256, 4, args.min_time)
    bench_dims([32, 64, 128, 256], 256, 4, args.min_time / 2)
    bench_orders(64, 128, 3, 128, range(1, 7), args.min_time / 2, args.plot)


if __name__ == "__main__":
    main()
