"""The walk: the function's jaxpr flattened into steps (calls inlined, short ``scan`` loops
unrolled, custom rules kept whole), and one run over them, forward then the reverse sweep,
recording every step's inputs, outputs and cotangents; in the float64 reference run also
each step's own finite differences and the whole function's."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from diffkit._core.jaxpr import evaluate, inner_jaxpr, is_float, user_site
from diffkit._core.registry import get
from diffkit.fd.stencils import default_step, stencil, weights

#: Scans up to this length are unrolled (per-iteration records, per-layer norms).
UNROLL = 128
_OFFSETS = (-2.0, -1.0, 0.0, 1.0, 2.0)
_STENCILS = {  # name: (offsets, weights) over _OFFSETS
    "c4": (-2, -1, 1, 2),
    "c2": (-1, 1),
    "fw": (0, 1, 2),
    "bw": (-2, -1, 0),
}


# ------------------------------------------------------------------ the flattened program


@dataclass
class Step:
    """One equation of the flattened program, or a slice/stack the walk added around an
    unrolled scan: ``fn`` maps the values of the slots ``ins`` to those of ``outs``; ``site``
    is the user's source line, ``layer`` the scan iteration."""

    fn: Callable[[list[Any]], list[Any]]
    eqn: Any | None  # None: a slice/stack the walk added around an unrolled scan
    ins: list[int]
    outs: list[int]
    site: str
    layer: int | None  # scan iteration, for unrolled scans

    @property
    def name(self) -> str:
        return self.eqn.primitive.name if self.eqn is not None else "scan (unrolled)"


@dataclass
class Program:
    """A function's jaxpr as a flat list of steps over integer slots: the constants' slots
    and values, the input and output slots, the steps in order, which slots are floats."""

    consts: dict[int, Any]
    inputs: list[int]
    outputs: list[int]
    steps: list[Step]
    floats: dict[int, bool]  # slot -> floating point


def flatten(closed: Any, n_outs: int) -> Program:
    """The closed jaxpr ``closed`` as a :class:`Program` with its first ``n_outs`` outputs:
    calls inlined, scans of up to :data:`UNROLL` steps unrolled, every other equation
    (custom rules included) one step."""
    counter = itertools.count()
    prog = Program({}, [], [], [], {})

    def new(aval_or_value: Any) -> int:
        s = next(counter)
        prog.floats[s] = is_float(aval_or_value)
        return s

    def const(value: Any) -> int:
        s = new(value)
        prog.consts[s] = value
        return s

    def walk(closed: Any, ins: list[int], site: Any, layer: int | None) -> list[int]:
        jaxpr = closed.jaxpr
        env = {v: const(c) for v, c in zip(jaxpr.constvars, closed.consts, strict=True)}
        env.update(zip(jaxpr.invars, ins, strict=True))

        def read(v: Any) -> int:
            if isinstance(v, jex_core.Literal):
                return const(np.asarray(v.val, cast(Any, v.aval).dtype))
            return env[v]

        for eqn in jaxpr.eqns:
            slots = [read(v) for v in eqn.invars]
            inner = inner_jaxpr(eqn)
            if inner is not None:
                outs = walk(inner, slots, site or eqn, layer)
            elif eqn.primitive.name == "scan" and 0 < eqn.params["length"] <= UNROLL:
                outs = unroll(eqn, slots, site or eqn)
            else:
                outs = [new(v.aval) for v in eqn.outvars]
                fn = lambda xs, eqn=eqn: evaluate(eqn, xs)  # noqa: E731
                prog.steps.append(Step(fn, eqn, slots, outs, _site(eqn, site), layer))
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    def unroll(eqn: Any, slots: list[int], site: Any) -> list[int]:
        p = eqn.params
        nc, nk, n = p["num_consts"], p["num_carry"], p["length"]
        consts, carry, xs = slots[:nc], slots[nc : nc + nk], slots[nc + nk :]
        where = user_site(eqn, site)
        order = range(n - 1, -1, -1) if p["reverse"] else range(n)
        ys: list[list[int]] = []
        for i in order:
            x_i = []
            for s, v in zip(xs, eqn.invars[nc + nk :], strict=True):
                out = new(v.aval)
                fn: Callable[..., list[Any]] = lambda a, i=i: [a[0][i]]  # noqa: E731
                prog.steps.append(Step(fn, None, [s], [out], where, i))
                x_i.append(out)
            outs = walk(p["jaxpr"], [*consts, *carry, *x_i], site or eqn, i)
            carry, y = outs[:nk], outs[nk:]
            ys.append(y)
        if p["reverse"]:
            ys.reverse()
        stacked = []
        for j, v in enumerate(eqn.outvars[nk:]):
            out = new(v.aval)
            fn = lambda a: [jnp.stack(a)]  # noqa: E731
            prog.steps.append(Step(fn, None, [y[j] for y in ys], [out], where, None))
            stacked.append(out)
        return [*carry, *stacked]

    prog.inputs = [new(v.aval) for v in closed.jaxpr.invars]
    prog.outputs = walk(closed, prog.inputs, None, None)[:n_outs]
    return prog


def _site(eqn: Any, site: Any) -> str:
    """The user's line of ``eqn``; for a custom rule called from library code (e.g. by a
    checker), the user's line of its primal body."""
    where = user_site(eqn, site)
    body = eqn.params.get("call_jaxpr") if eqn.primitive.name.startswith("custom_") else None
    if ("diffkit/" in where or where.startswith("<")) and body is not None:
        eqns = getattr(body, "jaxpr", body).eqns
        if eqns:
            return user_site(eqns[0])
    return where


# ------------------------------------------------------------------ one run


def _vjp(method: str | None, fun: Callable, xs: list[Any]) -> tuple[Any, Callable]:
    if method is None:
        return jax.vjp(fun, *xs)
    return get(method).vjp(fun, *xs)


def run(
    prog: Program,
    wrt: Sequence[bool],
    method: str | None,
    with_fd: bool,
    leaves: list[Any],
    seed_bar: list[Any],
    key: Any,
) -> dict[str, Any]:
    """Forward over the steps, then the reverse sweep; with ``with_fd`` each active step's
    five-point finite differences along a random tangent. Returns plain pytrees of arrays."""
    vals = dict(prog.consts)
    vals.update(zip(prog.inputs, leaves, strict=True))
    cache: dict[Any, _Local] = {}
    active = {s for s, w in zip(prog.inputs, wrt, strict=True) if w and prog.floats[s]}
    recs: list[dict[str, Any]] = []
    pullbacks: list[Any] = []
    for i, step in enumerate(prog.steps):
        xs = [vals[s] for s in step.ins]
        act = [s in active for s in step.ins]
        fl = [prog.floats[s] for s in step.outs]
        rec: dict[str, Any] = {
            "xs": [x for x, s in zip(xs, step.ins, strict=True) if prog.floats[s]]
        }
        ys = step.fn(xs)
        if not any(act) or not any(fl):
            pullbacks.append(None)
        else:
            pos = tuple(j for j, a in enumerate(act) if a)
            local = _local(cache, step, pos, tuple(fl), method)
            pullbacks.append(functools.partial(local.back, xs))
            active.update(s for s, f in zip(step.outs, fl, strict=True) if f)
            if with_fd:
                rec.update(local.fd(xs, key + 7.0 * i))
        vals.update(zip(step.outs, ys, strict=True))
        rec["ys"] = [y for y, f in zip(ys, fl, strict=True) if f]
        recs.append(rec)
    bars: dict[int, Any] = {}
    flags: dict[int, Any] = {}
    for s, b in zip(prog.outputs, seed_bar, strict=True):
        if s in active:  # in the output's dtype (code may fix its own dtypes)
            _add(bars, flags, s, jnp.asarray(b, jnp.result_type(vals[s])))
    for i in range(len(prog.steps) - 1, -1, -1):
        step, pb = prog.steps[i], pullbacks[i]
        if pb is None:
            continue
        outs = [s for s in step.outs if prog.floats[s]]
        got = [bars.pop(s, None) for s in outs]
        if all(b is None for b in got):
            continue
        y_bars = [
            jnp.zeros_like(y) if b is None else b for y, b in zip(recs[i]["ys"], got, strict=True)
        ]
        recs[i]["y_bar"] = y_bars
        recs[i]["sum_nan"] = jnp.any(jnp.stack([jnp.any(flags.pop(s, False)) for s in outs]))
        x_bars = pb(y_bars)
        recs[i]["x_bar"] = list(x_bars)
        for s, b in zip(_active_ins(step, prog, active), x_bars, strict=True):
            _add(bars, flags, s, b)
    grads = [bars.get(s) if s in active else None for s in prog.inputs]
    outs = [vals[s] for s in prog.outputs]
    return {"steps": recs, "grads": grads, "outs": outs}


class _Local(NamedTuple):
    """One equation's derivative work: ``fd(xs, seed)`` its five-point differences,
    ``back(xs, y_bars)`` its pullback (run eagerly: JAX caches each primitive's compiled
    kernel across calls, where one program per equation or per walk compiled for seconds)."""

    fd: Callable
    back: Callable


def _local(cache: dict, step: Step, pos: tuple, fl: tuple, method: str | None) -> _Local:
    key = (id(step.eqn) if step.eqn is not None else id(step.fn), pos, fl)
    if key not in cache:

        def fun(xs: list[Any], *a: Any) -> list[Any]:
            full = list(xs)
            for j, v in zip(pos, a, strict=True):
                full[j] = v
            return [y for y, f in zip(step.fn(full), fl, strict=True) if f]

        def fd(xs: list[Any], seed: Any) -> dict[str, Any]:
            return _fd(functools.partial(fun, xs), [xs[j] for j in pos], seed)

        def back(xs: list[Any], y_bars: list[Any]) -> list[Any]:
            _, pullback = _vjp(method, functools.partial(fun, xs), [xs[j] for j in pos])
            return list(pullback(y_bars))

        cache[key] = _Local(fd, back)
    return cache[key]


def _active_ins(step: Step, prog: Program, active: set[int]) -> list[int]:
    return [s for s in step.ins if s in active]


def _add(bars: dict[int, Any], flags: dict[int, Any], s: int, b: Any) -> None:
    if s not in bars:
        bars[s] = b
        return
    a = bars[s]
    total = a + b
    born = jnp.isnan(total) & ~jnp.isnan(a) & ~jnp.isnan(b)
    flags[s] = flags.get(s, False) | jnp.any(born)
    bars[s] = total


def _direction(x: Any, seed: Any) -> Any:
    """A fixed pseudo-random direction shaped like ``x``, entries in (-1, 1): a hash of the
    index (``jax.random`` would add a threefry kernel per equation to compile)."""
    i = jnp.arange(1, x.size + 1, dtype=x.dtype).reshape(x.shape)
    return jnp.sin(12.9898 * i + 78.233 * (seed + 1.0)) * 0.999 + 1e-3


def _fd(fun: Callable, xs: list[Any], key: Any) -> dict[str, Any]:
    """Five-point finite differences of one equation along a random tangent ``v``: the rules
    of :data:`_STENCILS`, as output lists."""
    v = [_direction(x, key + k) for k, x in enumerate(xs)]
    flat_x = jnp.concatenate([jnp.ravel(x) for x in xs])
    flat_v = jnp.concatenate([jnp.ravel(t) for t in v])
    h = default_step(flat_x, stencil("central", 4))
    v_max = jnp.maximum(jnp.max(jnp.abs(flat_v)), 1e-300)
    t = jnp.max(jnp.abs(h * flat_v)) / v_max**2
    points = jax.vmap(lambda c: fun(*[x + c * d for x, d in zip(xs, v, strict=True)]))(
        jnp.asarray(_OFFSETS, flat_x.dtype) * t
    )
    out: dict[str, Any] = {"v": v}
    for name, offs in _STENCILS.items():
        w = weights(offs)
        idx = [_OFFSETS.index(float(o)) for o in offs]
        out[name] = [
            sum(float(wj) * p[k] for wj, k in zip(w, idx, strict=True)) / t for p in points
        ]
    return out


def reference_run(prog, closed, wrt, method, leaves, seed_bar, key) -> dict[str, Any]:
    """The float64 run with per-equation finite differences, plus the whole function's."""
    out = run(prog, wrt, method, True, leaves, seed_bar, key)
    pos = [k for k, w in enumerate(wrt) if w]

    def whole(*a: Any) -> list[Any]:
        full = list(leaves)
        for k, x in zip(pos, a, strict=True):
            full[k] = x
        n = len(prog.outputs)
        return jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *full)[:n]

    out["whole"] = _fd(whole, [leaves[k] for k in pos], key - 1.0)
    out["seed"] = seed_bar
    return out
