"""The spec table's vocabulary and its one check, shared by ``tests/test_rules.py`` and the
family modules ``tests/test_specs_*.py``: input domains, :class:`Spec`, shorthands for
common rows, :func:`check_rows`, which compares rows with JAX's own derivatives, and
:func:`row_params`, which makes each row a test of its own (one node id per row and dtype,
``tests/test_rules.py::test_rules_match_jax[float64-sin]``)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit.accuracy import rho_tree

# Input domains: name -> sampler(rng, shape)
DOMAINS: dict[str, Callable] = {
    "real": lambda r, s: r.normal(size=s),
    "pos": lambda r, s: r.uniform(0.5, 2.0, size=s),
    "unit": lambda r, s: r.uniform(-0.9, 0.9, size=s),
    "gt1": lambda r, s: r.uniform(1.2, 3.0, size=s),
    # normal, with exact zeros at every fifth entry (rules must not divide by x)
    "zeros": lambda r, s: np.where(
        np.arange(np.prod(s)).reshape(s) % 5 == 1, 0.0, r.normal(size=s)
    ),
    # the kinks of piecewise rules: 0, -0, halves, +-1 (ties, bounds, round-half points)
    "kinks": lambda r, s: r.choice([-1.0, -0.5, -0.0, 0.0, 0.5, 1.0], size=s),
}


@dataclass(frozen=True)
class Spec:
    prim: str  # the primitive the row exercises (must appear in the function's jaxpr)
    fun: Callable
    args: tuple[tuple[str, tuple[int, ...]], ...]  # (domain, shape) per float input
    tol32: float = 2e-5
    modes: tuple[str, ...] = ("dual", "tape")
    label: str = ""
    ref: Callable | None = None  # what jax.jvp / jax.vjp differentiate, if not ``fun``
    order2: bool = True  # also check the second order: dual's JVP of tape's VJP


R3, R34 = (("real", (3,)),), (("real", (3, 4)),)
R34_2 = (("real", (3, 4)), ("real", (3, 4)))  # two (3, 4) inputs
IDX = jnp.array([2, 0, 2])
OUT = jnp.array([1, 7, -9])  # out of bounds for 3 rows after the second


def ew(prim: str, f: Callable, *domains: str, tol32: float = 2e-5) -> Spec:
    """An elementwise row on (3, 4) inputs."""
    return Spec(prim, f, tuple((d, (3, 4)) for d in domains), tol32)


def custom_vjp_square():
    @jax.custom_vjp
    def f(x):
        return x * x

    f.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))
    return f


def prims_of(jaxpr) -> set[str]:
    """Every primitive in a jaxpr, sub-jaxprs included."""
    found = set()
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found |= prims_of(inner)
    return found


def inputs_of(spec: Spec, seed: int, dtype: str):
    """Inputs from the row's domains, tangents, and the generator for cotangents."""
    rng = np.random.default_rng(seed)
    make = lambda d, s: jnp.asarray(DOMAINS[d](rng, s), dtype=dtype)  # noqa: E731
    xs = tuple(make(d, s) for d, s in spec.args)
    ts = tuple(make("real", s) for _, s in spec.args)
    return xs, ts, rng


def row_id(spec: Spec) -> str:
    return f"{spec.prim}-{spec.label}" if spec.label else spec.prim


def param_id(spec: Spec) -> str:
    """The row's id as a test id: :func:`row_id` with each run of characters a shell or a
    node id treats specially (spaces, brackets, commas) turned into ``_``."""
    return re.sub(r"[^\w.=+-]+", "_", row_id(spec)).strip("_")


def row_params(sections: dict[str, list[Spec]]) -> list:
    """One ``pytest.param`` per row of ``sections``, with the row's :func:`param_id`."""
    params = [pytest.param(s, id=param_id(s)) for specs in sections.values() for s in specs]
    ids = [p.id for p in params]
    assert len(set(ids)) == len(ids), sorted(i for i in ids if ids.count(i) > 1)
    return params


#: Each row in float32 and float64; float32 is marked slow for time only (the unit tier
#: checks the rows in float64, to rho <= 1e-12); the full suite runs both.
DTYPES = [pytest.param("float32", marks=pytest.mark.slow), "float64"]


def _pulled(vjp, f, ct):
    """``xs -> vjp(f, *xs)[1](ct)``: the cotangent of ``f``'s inputs as a function of them."""
    return lambda *xs: vjp(f, *xs)[1](ct)


def check_rows(specs: list[Spec], dtype: str) -> list[str]:
    """Each row against jax.jvp / jax.vjp, and its second order (dual's JVP of tape's VJP
    against jax.jvp of jax.vjp), in one compiled program: rho <= 1e-12 in float64, the row's
    ``tol32`` in float32. Call it with x64 set for float64. Returns what failed, one line per
    row and product (empty when every row holds): callers ``assert not check_rows(...)``.
    The tests pass one row each: rows compiled one by one take about the time of a section
    compiled at once, and spread over the workers."""
    dual, tape = dk.get("dual"), dk.get("tape")
    cases = []
    for spec in specs:
        xs, ts, rng = inputs_of(spec, zlib.crc32(row_id(spec).encode()), dtype)
        prims = prims_of(jax.make_jaxpr(spec.fun)(*xs).jaxpr)
        if spec.prim not in prims:
            return [f"row {row_id(spec)} misses its primitive"]
        out = jax.eval_shape(spec.fun, *xs)
        ct = [jnp.asarray(rng.normal(size=o.shape), o.dtype) for o in jax.tree.leaves(out)]
        cases.append((xs, ts, jax.tree.unflatten(jax.tree.structure(out), ct)))

    @jax.jit
    def run(cases):
        got, want = [], []
        for spec, (xs, ts, ct) in zip(specs, cases, strict=True):
            ref = spec.ref or spec.fun
            got.append({}), want.append({})
            if "dual" in spec.modes:
                got[-1]["jvp"], want[-1]["jvp"] = dual.jvp(spec.fun, xs, ts), jax.jvp(ref, xs, ts)
            if "tape" in spec.modes:
                got[-1]["vjp"] = tape.vjp(spec.fun, *xs)[1](ct)
                want[-1]["vjp"] = jax.vjp(ref, *xs)[1](ct)
            if spec.order2 and "tape" in spec.modes:  # forward (dual) over reverse (tape)
                got[-1]["jvp of vjp"] = dual.jvp(_pulled(tape.vjp, spec.fun, ct), xs, ts)
                want[-1]["jvp of vjp"] = jax.jvp(_pulled(jax.vjp, ref, ct), xs, ts)
        return got, want

    tol = 1e-12 if dtype == "float64" else None
    failures = []
    for spec, got, want in zip(specs, *run(cases), strict=True):
        for key in got:
            if jax.tree.structure(got[key]) != jax.tree.structure(want[key]):
                failures.append(f"{row_id(spec)} {key}: output structure differs from JAX's")
                continue
            err = rho_tree(got[key], want[key])
            if not err <= (tol or spec.tol32):
                failures.append(f"{row_id(spec)} {key}: rho {err:.2e}")
    return failures
