"""Chunked Jacobians: how many basis directions one vectorised pass takes must not change the
Jacobian. Swept for chunk sizes 1, a divisor of the direction count, a non-divisor and one
over it, for every exact method and fd, in both dtypes, on GradBench's ba and ht and on a
random dense Jacobian, against JAX's float64 Jacobian.

The float32 ba case at chunk 256 was wrong in tape (rows 166 on, rho 0.096): XLA's CPU
YNNPACK fusion of a reduction, compiled for a batch of more than ~110 directions, computed
JAX's vmapped VJP wrongly too; diffkit now compiles its own maps without it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit.harness.families import get_problem


def _dense(dtype: str):
    """A random dense map R^40 -> R^130, nonlinear so that VJPs keep residuals."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((130, 40)) / 6

    def fun(x):
        return jnp.tanh(jnp.asarray(w, x.dtype) @ x) * jnp.sum(x**2)

    return fun, (jnp.asarray(rng.standard_normal(40), dtype),)


def _case(name: str, dtype: str):
    if name == "dense":
        return _dense(dtype)
    inst = get_problem(name).build({"ba": 100, "ht": 10}[name], dtype=dtype)
    return inst.fun, inst.args


def _jacobian64(fun, args) -> np.ndarray:
    with jax.enable_x64(True):
        args64 = [
            jax.tree.map(
                lambda a: (
                    jnp.asarray(np.asarray(a), jnp.float64)
                    if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
                    else a
                ),
                a,
            )
            for a in args
        ]
        return np.asarray(jax.jit(jax.jacrev(fun))(*args64), np.float64)


# (method, tolerance in units of the dtype's epsilon times the Jacobian's largest entry)
METHODS = {"dual": 64, "tape": 64, "jax-fwd": 64, "jax-rev": 64}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ba", "ht", "dense"])
@pytest.mark.parametrize("method", [*METHODS, "fd"])
def test_chunk_size_does_not_change_the_jacobian(name, method, dtype):
    fun, args = _case(name, dtype)
    ref = _jacobian64(fun, args)
    m, n = ref.shape[0], int(np.prod(ref.shape[1:]))
    dirs = n if dk.get(method).passes("jacobian", n, m) == n else m
    divisor = next(d for d in range(dirs // 2, 0, -1) if dirs % d == 0)
    non_divisor = next(c for c in range(dirs - 1, 1, -1) if dirs % c)
    eps = float(jnp.finfo(dtype).eps)
    scale = np.abs(ref).max()
    got = {}
    for chunk in (None, 1, divisor, non_divisor, dirs + 1):
        J = dk.get(method, chunk_size=chunk).jacobian(fun)(*args)
        got[chunk] = np.asarray(J, np.float64).reshape(ref.shape)
        err = np.abs(got[chunk] - ref).max() / scale
        if method in METHODS:
            assert err <= METHODS[method] * eps, (
                f"{method} chunk {chunk}: rho {err:.3g} against JAX's float64 Jacobian; rows "
                f"off: {np.nonzero(np.abs(got[chunk] - ref).max(axis=1) > 64 * eps * scale)[0]}"
            )
    if method == "fd":  # its error is the step's, not eps: chunking must not make it worse
        errs = {c: np.abs(J - ref).max() / scale for c, J in got.items()}
        assert max(errs.values()) <= max(4 * errs[None], 64 * eps), f"fd errors by chunk {errs}"


@pytest.mark.slow
def test_the_harness_compiles_tape_s_ba_jacobian_right_in_float32() -> None:
    """The harness jits each derivative whole (diffkit's own map inlined into it), so it
    compiles every method, and the primal, with the same safe options: rho was 0.36 before."""
    from diffkit.harness import sweep

    res = sweep("ba", [100], ["tape"], min_time=0.01, isolate=False)
    (rec,) = res.records
    assert rec["outcome"] == "ok" and rec["accurate"], rec
    assert rec["rho_max"] <= 1e-5
