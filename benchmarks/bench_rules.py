"""The value-dependent rows of the rule table against JAX's own derivatives, side by side.

For each function below (one per family: sort, top_k, scatter, cumprod, cummax,
cumlogsumexp) on a float32 vector of n entries, every derivative is jit-compiled and the
script reports, measured in the same run with interleaved repeats:

* ``tape`` / ``jax.grad``: the steady-state time ratio of the hand-written gradient to JAX's;
* ``dual`` / ``jax.jvp``: the same for one directional derivative;
* rho of each float32 result (hand-written and JAX's) against JAX's in float64.

Run:  python benchmarks/bench_rules.py                 (n = 1e4 and 1e5, about a minute)
      python benchmarks/bench_rules.py --sizes 1000     (other sizes)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's diffkit

import diffkit as dk
from diffkit.accuracy import rho
from diffkit.harness.measure import time_interleaved

FUNCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sort (trimmed mean)": lambda x: jnp.mean(jnp.sort(x)[x.size // 10 : -x.size // 10] ** 2),
    "top_k": lambda x: jnp.sum(lax.top_k(jnp.sin(x), max(1, x.size // 100))[0]),
    "scatter (x.at[i].set)": lambda x: jnp.sum(
        jnp.cos(x.at[jnp.arange(0, x.size, 3)].set(x[: (x.size + 2) // 3] ** 2))
    ),
    "cumprod": lambda x: jnp.sum(jnp.cumprod(1 + 1e-4 * jnp.tanh(x))),
    "cummax": lambda x: jnp.sum(lax.cummax(x) * jnp.sin(x)),  # no ties: see the README
    "cumlogsumexp": lambda x: jnp.sum(lax.cumlogsumexp(x)),
}


def _square(x: jax.Array) -> jax.Array:
    k = round(x.size**0.5)
    return x[: k * k].reshape(k, k)


def _sym_pd(a: jax.Array) -> jax.Array:
    """``a + a^T + k I``: symmetric, positive definite for a normal ``a`` (diagonal-heavy)."""
    return a + a.T + a.shape[0] * jnp.eye(a.shape[0], dtype=a.dtype)


# Rows of the section modules diffkit/rules/{array,linalg,special}.py, one dict each; every
# function takes the float32 vector x of n entries (reshape it as the row needs).
ARRAY: dict[str, Callable[[jax.Array], jax.Array]] = {  # images (1, 50, n / 200, 4)
    "conv 3x3 NHWC (x and w)": lambda x: jnp.sum(
        jnp.tanh(
            lax.conv_general_dilated(
                x.reshape(1, 50, -1, 4),
                0.1 * x[:288].reshape(3, 3, 4, 8),
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        )
    ),
    "max_pool 3x3/2 SAME": lambda x: jnp.sum(
        lax.reduce_window(
            x.reshape(1, 50, -1, 4), -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME"
        )
        ** 2
    ),
    "avg_pool 2x2/2": lambda x: jnp.sum(
        jnp.sin(
            lax.reduce_window(
                x.reshape(1, 50, -1, 4), 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
            )
        )
    ),
    "stack+tile": lambda x: jnp.sum(jnp.tile(jnp.stack([x, x * x], axis=1), (1, 2)) ** 3),
    "segment_max": lambda x: jnp.sum(
        jnp.sin(
            jax.ops.segment_max(x, jnp.arange(x.size) % max(1, x.size // 10), max(1, x.size // 10))
        )
    ),
}
LINALG: dict[str, Callable[[jax.Array], jax.Array]] = {  # x: a square matrix, k x k
    "cholesky": lambda x: jnp.sum(jnp.linalg.cholesky(_sym_pd(_square(x))) ** 2),
    "triangular_solve": lambda x: jnp.sum(
        lax.linalg.triangular_solve(_sym_pd(_square(x)), _square(x), left_side=True, lower=True)
        ** 2
    ),
    "lu": lambda x: jnp.sum(lax.linalg.lu(_sym_pd(_square(x)))[0] ** 2),
    "qr": lambda x: (lambda q, r: jnp.sum(q * _square(x)) + jnp.sum(r**2))(
        *jnp.linalg.qr(_square(x))
    ),
    # functions of the factors that do not depend on the eigen/singular vectors' signs
    "eigh": lambda x: (lambda w, v: jnp.sum(w**2) + jnp.sum(jnp.outer(v[:, -1], v[:, -1]) ** 3))(
        *jnp.linalg.eigh(_sym_pd(_square(x)))
    ),
    "svd": lambda x: (lambda u, s, vt, m: jnp.sum(jnp.sin((u[:, :m] * s[:m]) @ vt[:m])))(
        *jnp.linalg.svd(_square(x), full_matrices=False), round(x.size**0.5) // 2
    ),
    "eig (eigenvalues)": lambda x: jnp.sum(
        lax.convert_element_type(jnp.linalg.eigvals(_square(x)) ** 2, x.dtype)
    ),
    "tridiagonal_solve": lambda x: jnp.sum(
        lax.linalg.tridiagonal_solve(jnp.tanh(x), 4 + x * x, jnp.tanh(x), jnp.cos(x)[:, None]) ** 2
    ),
}
SPECIAL: dict[str, Callable[[jax.Array], jax.Array]] = {
    "bessel_i0e, i1e": lambda x: jnp.sum(lax.bessel_i0e(x) * lax.bessel_i1e(x)),
    "polygamma": lambda x: jnp.sum(lax.polygamma(jnp.full_like(x, 2.0), 1 + jnp.abs(x))),
    "igamma (a and x)": lambda x: jnp.sum(lax.igamma(1 + jnp.abs(x), 1 + x * x)),
    "betainc (x)": lambda x: jnp.sum(lax.betainc(jnp.full_like(x, 2.0), 3.0, lax.logistic(x))),
    "random_gamma": lambda x: jnp.sum(jax.random.gamma(jax.random.key(0), 1 + jnp.abs(x))),
    "complex abs, exp": lambda x: jnp.sum(jnp.abs(jnp.exp(lax.complex(x, 0.5 * x)))),
    "fft power spectrum": lambda x: jnp.sum(jnp.abs(jnp.fft.fft(lax.complex(x, x[::-1]))) ** 2),
    "rfft / irfft": lambda x: jnp.sum(jnp.fft.irfft(jnp.fft.rfft(x) * 0.5j, x.size) ** 2),
}
FUNCTIONS.update({**ARRAY, **LINALG, **SPECIAL})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated n")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds of samples")
    parser.add_argument("--only", default="", help="run only functions whose name contains this")
    args = parser.parse_args()
    print(f"backend {jax.default_backend()}, jax {jax.__version__}, float32")
    head = ["tape/grad", "dual/jvp", "rho tape", "rho grad", "rho dual", "rho jvp"]
    print(f"{'function':<24} {'n':>9} " + " ".join(f"{h:>9}" for h in head))
    ratios: dict[str, list[float]] = {"rev": [], "fwd": []}
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(n)
        x = jnp.asarray(rng.normal(size=n), jnp.float32)
        v = jnp.asarray(rng.normal(size=n), jnp.float32)
        for name, f in FUNCTIONS.items():
            if args.only not in name:
                continue
            fns = {
                "tape": jax.jit(dk.get("tape").grad(f)),
                "grad": jax.jit(jax.grad(f)),
                "dual": jax.jit(lambda x, v, f=f: dk.get("dual").jvp(f, (x,), (v,))[1]),
                "jvp": jax.jit(lambda x, v, f=f: jax.jvp(f, (x,), (v,))[1]),
            }
            args_of = {"tape": (x,), "grad": (x,), "dual": (x, v), "jvp": (x, v)}
            out = {k: g(*args_of[k]) for k, g in fns.items()}
            times = time_interleaved(
                {k: (lambda g=g, a=args_of[k]: g(*a)) for k, g in fns.items()},
                min_time=args.min_time,
            )
            med = {k: t["median"] for k, t in times.items()}
            rev, fwd = med["tape"] / med["grad"], med["dual"] / med["jvp"]
            ratios["rev"].append(rev)
            ratios["fwd"].append(fwd)
            with jax.enable_x64(True):  # the float64 reference
                x64, v64 = x.astype(jnp.float64), v.astype(jnp.float64)
                ref_rev = jax.jit(jax.grad(f))(x64)
                ref_fwd = jax.jit(lambda x, v, f=f: jax.jvp(f, (x,), (v,))[1])(x64, v64)
                rhos = [
                    rho(out[k], ref_rev if k in ("tape", "grad") else ref_fwd)
                    for k in ("tape", "grad", "dual", "jvp")
                ]
            cells = [f"{rev:>9.2f}", f"{fwd:>9.2f}", *(f"{r:>9.1e}" for r in rhos)]
            print(f"{name:<24} {n:>9} " + " ".join(cells))
    print(
        f"median ratio over all rows: tape/jax.grad {statistics.median(ratios['rev']):.2f}, "
        f"dual/jax.jvp {statistics.median(ratios['fwd']):.2f}"
    )


if __name__ == "__main__":
    main()
