"""The gradient doctor: when a gradient is wrong, NaN or zero, name the equation and the
user's source line that made it so, say why, and suggest a fix.

:func:`doctor` walks the function's jaxpr once per precision (calls inlined, ``scan`` loops
of up to :data:`UNROLL` steps unrolled, custom rules kept whole, as they are part of the
program) and records, for every equation, its inputs, outputs and cotangents:

* in the function's own precision (float16, bfloat16, float32) and in a float64 reference run
  of the same program, aligned equation by equation;
* in float64, finite differences *of that equation alone* at its recorded inputs (central of
  orders 4 and 2, one-sided of order 2, five points, one batched evaluation) compared with
  the equation's own derivative rule (JAX's, the library's custom rule, or a diffkit
  differentiator's) by the dot-product test with the cotangent that really reached it.

The whole gradient is checked first (its value, NaN and inf, float64 against finite
differences, the own precision against float64, one-sided derivatives for kinks); findings
about single equations are *culprits* only when the whole gradient shows the symptom they
explain, otherwise they are *notes* (a kink of ``relu`` whose cotangent is zero is harmless).
Culprits come in the order the reverse sweep meets them (forward-value problems first).

Example:
    >>> import jax.numpy as jnp
    >>> import diffkit as dk
    >>> def loss(x):
    ...     return jnp.sum(jnp.where(x > 0, jnp.sqrt(x), 0.0))
    >>> report = dk.doctor(loss, jnp.array([4.0, -1.0]))
    >>> report.ok, report.culprits[0].kind, report.culprits[0].primitive
    (False, 'masked-nan', 'sqrt')
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from diffkit._core.errors import DiffkitError
from diffkit._core.jaxpr import evaluate, inner_jaxpr, is_float, user_site
from diffkit._core.registry import get
from diffkit.fd.stencils import default_step, stencil, weights

__all__ = ["RTOL_LOW", "Diagnosis", "Finding", "doctor"]

#: Scans up to this length are unrolled (per-iteration records, per-layer norms).
UNROLL = 128
#: Per-element tolerance (rho, scaled by the gradient's size) of a low-precision gradient
#: against the float64 one.
RTOL_LOW = {"float32": 2e-3, "float16": 5e-2, "bfloat16": 1e-1}
#: Tolerance of the dot-product tests against finite differences in float64.
RTOL = 1e-6
#: Layer norms spreading by more than this factor are a vanishing/exploding gradient.
SPREAD = 1e6
_OFFSETS = (-2.0, -1.0, 0.0, 1.0, 2.0)
_STENCILS = {  # name: (offsets, weights) over _OFFSETS
    "c4": (-2, -1, 1, 2),
    "c2": (-1, 1),
    "fw": (0, 1, 2),
    "bw": (-2, -1, 0),
}

_FIXES = {
    "masked-nan": (
        "use the double where: make the unselected branch's input safe before the "
        "operation, e.g. jnp.where(mask, jnp.sqrt(jnp.where(mask, x, 1.0)), 0.0)"
    ),
    "infinite-derivative": (
        "keep the input away from the singular point (add a small eps, e.g. "
        "jnp.sqrt(s + 1e-12)), or write the derivative you want with jax.custom_jvp "
        "(a safe norm), or jnp.where the point out before the operation"
    ),
    "zero-times-inf": (
        "an infinite intermediate multiplies a zero: avoid producing inf (clip, or compute "
        "in log space: logsumexp, log1p, xlogy) before it is multiplied"
    ),
    "inf-minus-inf": (
        "two infinite cotangents of opposite sign meet: keep the intermediate finite "
        "(compute in log space, or rescale) so that its derivatives stay finite"
    ),
    "non-finite-value": (
        "the value itself is NaN or inf: keep the input inside the operation's domain "
        "(jnp.where the bad entries out before it, or clip)"
    ),
    "overflow": (
        "compute this step in float32 (x.astype(jnp.float32)), rescale before it (e.g. "
        "divide by the largest |x| first, as a stable norm does), or use a wider dtype"
    ),
    "underflow": (
        "compute this step in float32/float64 or in log space (log1p, expm1, logsumexp), "
        "or rescale the inputs so the intermediate stays above the dtype's smallest normal"
    ),
    "custom-rule": (
        "fix the custom rule (its fwd/bwd or jvp) so that it matches the derivative of its "
        "own primal; check it alone with diffkit.testing.check_grads"
    ),
    "stop-gradient": (
        "remove the stop_gradient (or move it to the value that should be constant): it "
        "blocks a derivative the function's value depends on"
    ),
    "wrong-rule": (
        "the primitive's derivative rule disagrees with finite differences here; check the "
        "point (near a singularity?) or report the rule"
    ),
    "kink": (
        "the function is not differentiable at this point: check at a point away from the "
        "kink, or smooth it (softplus for relu, a Huber loss for abs)"
    ),
    "vanishing": (
        "the gradient shrinks geometrically through the repeated layers: use a residual "
        "connection, a normalization, a better initialization or a non-saturating activation"
    ),
    "exploding": (
        "the gradient grows geometrically through the repeated layers: clip gradients, "
        "normalize, or initialize the layers with a smaller scale"
    ),
    "wrong-gradient": (
        "no single equation disagrees with its own finite differences; check the "
        "derivative rules of the whole function with diffkit.testing.check_grads"
    ),
}


@dataclass(frozen=True)
class Finding:
    """One diagnosis: which equation (``step`` in the walk; ``-1`` for the whole function),
    its ``primitive``, the user's source ``site``, ``what`` is wrong, ``why``, and a ``fix``."""

    kind: str
    step: int
    primitive: str
    site: str
    what: str
    why: str
    fix: str

    def __str__(self) -> str:
        where = (
            "the whole function"
            if self.step < 0
            else f"equation {self.step} ({self.primitive}) at {self.site}"
        )
        return (
            f"[{self.kind}] {where}\n"
            f"    what: {self.what}\n    why:  {self.why}\n    fix:  {self.fix}"
        )


@dataclass
class Diagnosis:
    """The doctor's findings: ``ok`` is False when anything is wrong; ``culprits`` lists the
    findings that explain the symptoms, first culprit first; ``notes`` the local oddities
    that do not reach the gradient; ``layer_norms`` the cotangent norm per repetition of the
    most repeated source line (scan steps, repeated blocks), forward order."""

    dtype: str
    equations: int
    symptoms: list[str] = field(default_factory=list)
    culprits: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    layer_norms: list[float] = field(default_factory=list)
    layer_site: str = ""
    remarks: list[str] = field(default_factory=list)  # limits of this diagnosis

    @property
    def ok(self) -> bool:
        return not self.symptoms and not self.culprits

    @property
    def first(self) -> Finding | None:
        """The first culprit, or None."""
        return self.culprits[0] if self.culprits else None

    def __str__(self) -> str:
        head = f"gradient doctor: {self.equations} equations walked, {self.dtype}"
        if self.ok:
            lines = [head + ": the gradient is healthy (finite, matches finite differences)"]
        else:
            lines = [head, "symptoms:", *(f"  - {s}" for s in self.symptoms)]
            if self.culprits:
                lines.append("first culprit:")
                lines.append("  " + str(self.culprits[0]).replace("\n", "\n  "))
                for c in self.culprits[1:]:
                    lines.append(f"  also: [{c.kind}] {c.primitive} at {c.site}")
        for n in self.notes:
            lines.append(f"note: [{n.kind}] {n.primitive} at {n.site}: {n.what}")
        lines += [f"note: {r}" for r in self.remarks]
        return "\n".join(lines)


# ------------------------------------------------------------------ the flattened program


@dataclass
class _Step:
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
class _Program:
    consts: dict[int, Any]
    inputs: list[int]
    outputs: list[int]
    steps: list[_Step]
    floats: dict[int, bool]  # slot -> floating point


def _flatten(closed: Any, n_outs: int) -> _Program:
    counter = itertools.count()
    prog = _Program({}, [], [], [], {})

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
                return const(np.asarray(v.val, v.aval.dtype))
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
                prog.steps.append(_Step(fn, eqn, slots, outs, _site(eqn, site), layer))
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
                fn = lambda a, i=i: [a[0][i]]  # noqa: E731
                prog.steps.append(_Step(fn, None, [s], [out], where, i))
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
            prog.steps.append(_Step(fn, None, [y[j] for y in ys], [out], where, None))
            stacked.append(out)
        return [*carry, *stacked]

    prog.inputs = [new(v.aval) for v in closed.jaxpr.invars]
    prog.outputs = walk(closed, prog.inputs, None, None)[:n_outs]
    return prog


# ------------------------------------------------------------------ one run


def _vjp(method: str | None, fun: Callable, xs: list[Any]) -> tuple[Any, Callable]:
    if method is None:
        return jax.vjp(fun, *xs)
    return get(method).vjp(fun, *xs)


def _run(
    prog: _Program,
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


def _local(cache: dict, step: _Step, pos: tuple, fl: tuple, method: str | None) -> _Local:
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


def _active_ins(step: _Step, prog: _Program, active: set[int]) -> list[int]:
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


# ------------------------------------------------------------------ the doctor


def doctor(
    f: Callable[..., Any],
    *args: Any,
    argnums: int = 0,
    method: str | None = None,
    seed: int = 0,
) -> Diagnosis:
    """Diagnose the gradient of ``f`` at ``args`` with respect to ``args[argnums]``.

    Args:
        f: a JAX function of pytrees of arrays (a scalar loss, or any output: then the
            cotangent is a fixed random one).
        args: the point (the differentiated argument in float16, bfloat16, float32 or float64).
        argnums: which argument is differentiated.
        method: whose derivative rules are diagnosed: ``None`` for JAX's (custom rules
            included), or a diffkit differentiator name such as ``"tape"``.
        seed: the random tangents' seed.

    Returns:
        a :class:`Diagnosis`: ``ok``, ``symptoms``, ``culprits`` (first culprit first), ``notes``.

    Example:
        >>> import jax.numpy as jnp
        >>> import diffkit as dk
        >>> dk.doctor(lambda w, x: jnp.sum(jnp.tanh(w * x)), jnp.ones(3), jnp.arange(3.0)).ok
        True
    """
    if not callable(f):
        raise DiffkitError(f"doctor: f must be a function, got {type(f).__name__}")
    if not args:
        raise DiffkitError("doctor: no arguments; call doctor(f, *args) with the point")
    if not isinstance(argnums, int) or not -len(args) <= argnums < len(args):
        raise DiffkitError(
            f"doctor: argnums={argnums!r} is not the index of one of the {len(args)} arguments"
        )
    args = tuple(jax.tree_util.tree_map(jnp.asarray, a) for a in args)
    leaves, tree = jax.tree_util.tree_flatten(args)
    argnums %= len(args)
    first = sum(len(jax.tree_util.tree_leaves(a)) for a in args[:argnums])
    n_wrt = len(jax.tree_util.tree_leaves(args[argnums]))
    wrt = [first <= k < first + n_wrt for k in range(len(leaves))]
    dtypes = {str(x.dtype) for x, w in zip(leaves, wrt, strict=True) if w}
    if not dtypes or any(not jnp.issubdtype(d, jnp.floating) for d in dtypes):
        raise DiffkitError(
            f"doctor: argument {argnums} has dtype(s) {sorted(dtypes) or 'none'}; the doctor "
            "differentiates real floating-point arguments (pass argnums= for another one)"
        )
    dtype = min(dtypes, key=lambda d: jnp.finfo(d).bits)
    n_outs: list[int] = []

    def flat(*xs: Any) -> list[Any]:
        out = jax.tree_util.tree_leaves(f(*jax.tree_util.tree_unflatten(tree, list(xs))))
        n_outs[:] = [len(out)]
        return out

    try:
        closed = jax.make_jaxpr(flat)(*leaves)
    except Exception as e:
        raise DiffkitError(f"doctor: cannot trace f at these arguments: {_one_line(e)}") from None
    remark = ""
    try:
        with jax.enable_x64(True):
            leaves64 = [jnp.asarray(x, jnp.float64) if is_float(x) else x for x in leaves]
            closed64 = jax.make_jaxpr(flat)(*leaves64)
    except Exception as e:  # code that is not x64-clean: the reference in its own dtype
        closed64, leaves64 = closed, leaves
        remark = f"no float64 reference: f does not trace with float64 inputs ({_one_line(e)})"
    avals = [v.aval for v in closed64.jaxpr.outvars[: n_outs[0]]]
    if not avals or any(not is_float(a) for a in avals):
        raise DiffkitError("doctor: f must return floating-point arrays (a loss, a prediction)")
    rng = np.random.default_rng(seed)
    scalar = len(avals) == 1 and avals[0].shape == ()
    seed_bar = [np.ones(()) if scalar else rng.standard_normal(a.shape) for a in avals]
    prog64 = _flatten(closed64, n_outs[0])
    key = float(seed)
    try:
        with jax.enable_x64(True) if not remark else contextlib.nullcontext():
            ref = _to_np(_reference_run(prog64, closed64, wrt, method, leaves64, seed_bar, key))
        own, prog = ref, prog64
        if dtype != "float64" and not remark:
            prog = _flatten(closed, n_outs[0])
            bars = [
                jnp.asarray(b, a.dtype) for b, a in zip(seed_bar, closed.out_avals, strict=False)
            ]
            own = _to_np(_run(prog, wrt, method, False, leaves, bars, key))
    except DiffkitError:
        raise
    except Exception as e:
        raise DiffkitError(f"doctor: cannot differentiate f: {_one_line(e)}") from None
    report = _Analysis(prog, prog64, own, ref, dtype if not remark else "float64", wrt).report()
    report.dtype = dtype
    report.remarks = [remark] if remark else []
    return report


def _reference_run(prog, closed, wrt, method, leaves, seed_bar, key) -> dict[str, Any]:
    """The float64 run with per-equation finite differences, plus the whole function's."""
    out = _run(prog, wrt, method, True, leaves, seed_bar, key)
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


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def _to_np(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _dot(a: Sequence[Any], b: Sequence[Any], absolute: bool = False) -> float:
    total = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = np.ravel(x), np.ravel(y)
        total += float(np.dot(np.abs(x), np.abs(y)) if absolute else np.dot(x, y))
    return total


def _finite(xs: Sequence[Any]) -> bool:
    return all(np.isfinite(x).all() for x in xs)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class _Analysis:
    """Turns the recorded runs into symptoms, culprits and notes (NumPy only)."""

    def __init__(self, prog, prog64, own, ref, dtype: str, wrt: list[bool]) -> None:
        self.prog, self.prog64, self.own, self.ref = prog, prog64, own, ref
        self.dtype, self.low = dtype, dtype != "float64"
        self.wrt = wrt
        self.match = self._align()
        self.symptoms: list[str] = []
        self.culprits: list[Finding] = []
        self.notes: list[Finding] = []

    def _align(self) -> dict[int, int]:
        """own step -> float64 step, by the primitive sequences (equal when the program does
        not depend on the dtype)."""
        if self.prog is self.prog64:
            return {i: i for i in range(len(self.prog.steps))}
        key = lambda s: (s.name, len(s.outs))  # noqa: E731
        a, b = [key(s) for s in self.prog.steps], [key(s) for s in self.prog64.steps]
        match = {}
        for blk in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
            match.update((blk.a + k, blk.b + k) for k in range(blk.size))
        return match

    def finding(self, kind: str, i: int, what: str, why: str, prog: Any = None) -> Finding:
        prog = prog or self.prog64
        if i < 0:
            return Finding(kind, -1, "(whole function)", "f", what, why, _FIXES[kind])
        step = prog.steps[i]
        return Finding(kind, i, _label(step), step.site, what, why, _FIXES[kind])

    # ---------------------------------------------------------------- the checks

    def report(self) -> Diagnosis:
        self.value()
        if not self.symptoms:
            self.non_finite_gradient()
        if not self.symptoms:
            self.against_fd()
        if not self.symptoms and self.low:
            self.low_precision()
        self.layers()
        self.local_notes()
        rep = Diagnosis(self.dtype, len(self.prog.steps), self.symptoms, self.culprits, self.notes)
        rep.layer_norms, rep.layer_site = self.norms, self.norm_site
        return rep

    def value(self) -> None:
        outs = self.own["outs"]
        if _finite(outs):
            return
        self.symptoms.append(f"the value f(x) is not finite in {self.dtype}")
        run, prog = self.own, self.prog
        for i, rec in enumerate(run["steps"]):
            if _finite(rec["ys"]) or not _finite(rec["xs"]):
                continue
            m = self.match.get(i)
            j, y = _first_bad(rec["ys"])
            ref_y = None if m is None else _at(self.ref["steps"][m]["ys"], j)
            root = self._forward_root(i) if self.low else None
            if root is not None:
                self.culprits.append(root)
            elif self.low and ref_y is not None and np.isfinite(ref_y):
                what = (
                    f"its output overflows to {_fmt(y)} in {self.dtype} (element {j[1]}); in "
                    f"float64 it is {_fmt(ref_y)}, beyond {self.dtype}'s largest "
                    f"{_fmt(float(jnp.finfo(self.dtype).max))}"
                )
                self.culprits.append(
                    self.finding("overflow", i, what, "the value is too large for the dtype", prog)
                )
            else:
                x = _inputs_at(rec, j)
                what = f"its output is {_fmt(y)} from finite inputs ({x})"
                why = f"the input is outside the domain of {_label(prog.steps[i])}"
                self.culprits.append(self.finding("non-finite-value", i, what, why, prog))
            return

    def non_finite_gradient(self) -> None:
        for run, prog, name in (
            (self.own, self.prog, self.dtype),
            (self.ref, self.prog64, "float64"),
        ):
            grads = [g for g in run["grads"] if g is not None]
            if _finite(grads):
                continue
            kinds = "NaN" if any(np.isnan(g).any() for g in grads) else "inf"
            self.symptoms.append(f"the gradient has {kinds} entries ({name})")
            self._birth(run, prog)
            return

    def _birth(self, run, prog) -> None:
        steps = run["steps"]
        for i in range(len(steps) - 1, -1, -1):
            rec = steps[i]
            if "y_bar" not in rec:
                continue
            if rec["sum_nan"]:
                what = "the cotangents of its output, summed over the output's uses, give NaN"
                why = "an inf and a -inf cotangent meet (inf - inf)"
                self.culprits.append(self.finding("inf-minus-inf", i, what, why, prog))
            elif _finite(rec["y_bar"]) and not _finite(rec["x_bar"]):
                self.culprits.append(self._classify_birth(run, prog, i))
            if len(self.culprits) >= 5:
                return

    def _classify_birth(self, run, prog, i: int) -> Finding:
        rec = run["steps"][i]
        k, j = _first_bad(rec["x_bar"])[0]
        bad = rec["x_bar"][k].ravel()[j]
        label = _label(prog.steps[i])
        same = len(rec["y_bar"]) == 1 and rec["y_bar"][0].size == rec["x_bar"][k].size
        y_bar = rec["y_bar"][0].ravel()[j] if same else None
        out = rec["ys"][0].ravel()[j] if same and rec["ys"] else None
        x = _inputs_at(rec, (0, j)) if same else "see the inputs"
        m = self.match.get(i) if prog is self.prog else i
        if prog is self.prog and self.low and m is not None:
            ref_bar = self.ref["steps"][m].get("x_bar")
            if ref_bar is not None and _finite(ref_bar):
                root = self._forward_root(i)
                if root is not None:
                    return root
                what = (
                    f"its input cotangent overflows to {_fmt(bad)} in {self.dtype}; in float64 "
                    f"it is {_fmt(ref_bar[k].ravel()[j] if ref_bar[k].size > j else np.nan)}"
                )
                return self.finding("overflow", i, what, "a derivative too large for the dtype")
        if y_bar is not None and y_bar == 0:
            if self._selected(prog, i):
                what = (
                    f"its output at element {j} is {_fmt(out)} (input {x}), a value a where/"
                    f"select discards: the cotangent reaching it is 0, but 0 times its derivative "
                    f"there gives {_fmt(bad)}"
                )
                why = "the masked-NaN trap: jnp.where differentiates both branches"
                return self.finding("masked-nan", i, what, why, prog)
            what = (
                f"the cotangent reaching it is 0 at element {j} but its derivative there is "
                f"infinite (input {x}): 0 x inf = {_fmt(bad)}"
            )
            return self.finding("zero-times-inf", i, what, "0 x inf in the chain rule", prog)
        if not _finite(rec["xs"]) or (out is not None and not np.isfinite(out)):
            what = (
                f"an infinite value in its inputs or output ({x}) meets the cotangent: {_fmt(bad)}"
            )
            return self.finding(
                "zero-times-inf", i, what, "inf times a finite or zero cotangent", prog
            )
        what = (
            f"its derivative is infinite at element {j} (input {x}), giving cotangent {_fmt(bad)}"
        )
        why = f"{label} is not differentiable (infinite slope) at this input"
        return self.finding("infinite-derivative", i, what, why, prog)

    def _selected(self, prog, i: int) -> bool:
        """Whether an output of step ``i`` reaches a ``select_n`` (a where) downstream."""
        seen, todo = set(), list(prog.steps[i].outs)
        consumers: dict[int, list[int]] = {}
        for k, s in enumerate(prog.steps):
            for slot in s.ins:
                consumers.setdefault(slot, []).append(k)
        while todo:
            slot = todo.pop()
            for k in consumers.get(slot, []):
                if k in seen or k - i > 50:
                    continue
                seen.add(k)
                if prog.steps[k].name in ("select_n", "clamp"):
                    return True
                todo.extend(prog.steps[k].outs)
        return False

    def _forward_root(self, i: int) -> Finding | None:
        """The earliest step feeding step ``i`` whose own-precision output underflowed to 0
        or overflowed where the float64 one did not."""
        producer = {s: k for k, st in enumerate(self.prog.steps) for s in st.outs}
        found = None
        todo, seen = [i], set()
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            m = self.match.get(k)
            if m is None:
                continue
            rec, ref = self.own["steps"][k], self.ref["steps"][m]
            kind = _lost(rec["ys"], ref["ys"], self.dtype, representable=False)
            if kind is not None and (found is None or k < found[0]):
                found = (k, kind, rec, ref)
            todo.extend(producer[s] for s in self.prog.steps[k].ins if s in producer)
        if found is None or found[0] == i:
            return None
        k, kind, rec, ref = found
        j = kind[1]
        what = (
            f"its output {'underflows to 0' if kind[0] == 'underflow' else 'overflows'} in "
            f"{self.dtype} (element {j[1]}: {_fmt(_at(rec['ys'], j))}); in float64 it is "
            f"{_fmt(_at(ref['ys'], j))}, and a derivative later divides or multiplies by it"
        )
        side = "below the smallest" if kind[0] == "underflow" else "above the largest"
        why = f"the value is {side} number {self.dtype} holds"
        return self.finding(kind[0], k, what, why, self.prog)

    def against_fd(self) -> None:
        ref = self.ref
        g = [x for x in ref["grads"] if x is not None]
        w = ref["whole"]
        u = ref["seed"]
        lhs, rhs = _dot(u, w["c4"]), _dot(g, w["v"])
        bound = RTOL * max(1.0, _dot(u, w["c4"], True)) + 10 * _dot(
            u, _diff(w["c4"], w["c2"]), True
        )
        kl, kr = _dot(u, w["fw"]), _dot(u, w["bw"])
        if _kink(kl, kr, _dot(u, _diff(w["c4"], w["c2"]), True)):
            self.symptoms.append(
                f"the function is not differentiable at this point: one-sided derivatives "
                f"along a random direction are {_fmt(kl)} and {_fmt(kr)}"
            )
            kinks = [i for i, ok in self.local(kink=True) if not ok]
            for i in reversed(kinks):
                rec = ref["steps"][i]
                what = (
                    f"one-sided derivatives of this equation disagree at its input "
                    f"({_inputs_at(rec, _first_gap(rec))})"
                )
                self.culprits.append(self.finding("kink", i, what, "a kink at the checked input"))
            if not kinks:
                why = (
                    "the function jumps or kinks within a finite-difference step of this point "
                    "(a where or comparison switching, relu or abs at 0)"
                )
                self.culprits.append(self.finding("kink", -1, self.symptoms[-1], why))
            return
        if abs(lhs - rhs) <= bound:
            return
        self.symptoms.append(
            f"the gradient disagrees with finite differences (float64): <g, v> = {rhs:.10g}, "
            f"finite differences {lhs:.10g}"
        )
        bad = [i for i, ok in self.local() if not ok]
        for i in reversed(bad):
            self.culprits.append(self._wrong(i))
        if not bad:
            self.culprits.append(self.finding("wrong-gradient", -1, self.symptoms[-1], "unknown"))

    def local(self, kink: bool = False) -> list[tuple[int, bool]]:
        """Per active step with a cotangent: whether its rule passes the dot-product test with
        that cotangent (``kink``: whether its one-sided differences agree)."""
        out = []
        for i, rec in enumerate(self.ref["steps"]):
            if "y_bar" not in rec or "c4" not in rec or self.prog64.steps[i].name in _NO_LOCAL:
                continue
            yb = rec["y_bar"]
            if not (_finite(yb) and _finite(rec["c4"]) and _finite(rec["x_bar"])):
                continue
            if kink:
                kl, kr = _dot(yb, rec["fw"]), _dot(yb, rec["bw"])
                err = _dot(yb, _diff(rec["c4"], rec["c2"]), True)
                out.append((i, not _kink(kl, kr, err)))
                continue
            lhs, rhs = _dot(yb, rec["c4"]), _dot(rec["x_bar"], rec["v"])
            bound = RTOL * max(1.0, _dot(yb, rec["c4"], True))
            bound += 10 * _dot(yb, _diff(rec["c4"], rec["c2"]), True)
            out.append((i, abs(lhs - rhs) <= bound))
        return out

    def _wrong(self, i: int) -> Finding:
        rec = self.ref["steps"][i]
        step = self.prog64.steps[i]
        lhs, rhs = _dot(rec["y_bar"], rec["c4"]), _dot(rec["x_bar"], rec["v"])
        what = (
            f"its derivative rule gives <x_bar, v> = {rhs:.8g}, but finite differences of this "
            f"equation alone give <y_bar, J v> = {lhs:.8g}"
        )
        name = step.name
        if name in ("custom_jvp_call", "custom_vjp_call"):
            fn = step.eqn.params.get("name", "")
            why = (
                f"the custom rule of {fn or 'this function'} disagrees with the derivative of "
                "its own primal"
            )
            return self.finding("custom-rule", i, what, why)
        if name == "stop_gradient":
            return self.finding(
                "stop-gradient", i, what, "stop_gradient zeroes a derivative the value needs"
            )
        return self.finding("wrong-rule", i, what, f"the rule of {name} disagrees here")

    def low_precision(self) -> None:
        g_own = [x for x in self.own["grads"] if x is not None]
        g64 = [x for x in self.ref["grads"] if x is not None]
        kind = _lost(g_own, g64, self.dtype, relative=True)
        if kind is None:
            return
        (k, j) = kind[1]
        self.symptoms.append(
            f"the {self.dtype} gradient differs from the float64 one: element {j} of "
            f"argument leaf {k} is {_fmt(g_own[k].ravel()[j])}, "
            f"float64 gives {_fmt(g64[k].ravel()[j])}"
        )
        for i in range(len(self.prog.steps) - 1, -1, -1):
            rec, m = self.own["steps"][i], self.match.get(i)
            if "y_bar" not in rec or m is None or "y_bar" not in self.ref["steps"][m]:
                continue
            ref = self.ref["steps"][m]
            if _lost(rec["y_bar"], ref["y_bar"], self.dtype, relative=True) is not None:
                continue
            lost = _lost(rec["x_bar"], ref["x_bar"], self.dtype, relative=True)
            if lost is None:
                continue
            root = self._forward_root(i)
            if root is not None:
                self.culprits.append(root)
                return
            kind2 = (
                "underflow"
                if lost[0] == "underflow"
                else "overflow"
                if lost[0] == "overflow"
                else "underflow"
            )
            jj = lost[1]
            what = (
                f"its input cotangent is {_fmt(_at(rec['x_bar'], jj))} in {self.dtype} at element "
                f"{jj[1]}, {_fmt(_at(ref['x_bar'], jj))} in float64"
            )
            self.culprits.append(
                self.finding(
                    kind2, i, what, "the derivative loses its digits in low precision", self.prog
                )
            )
            return

    def layers(self) -> None:
        self.norms, self.norm_site = [], ""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, step in enumerate(self.prog64.steps):
            if step.eqn is not None and "x_bar" in self.ref["steps"][i]:
                line = step.site.split(", in ")[0]  # the user's line, whichever library call
                groups.setdefault((line, step.name), []).append(i)
        per_site: dict[str, list[list[int]]] = {}
        for (site, name), g in groups.items():
            if name not in _MOVEMENT:
                per_site.setdefault(site, []).append(g)
        # a layer's equations of one line: those occurring once per layer (the fewest times)
        layers = {site: min(map(len, gs)) for site, gs in per_site.items()}
        site = max(layers, key=layers.get, default=None)
        best = [g for g in per_site[site] if len(g) == layers[site]][-1] if site else []
        if len(best) < 3:
            return
        norms = [
            math.sqrt(_dot(self.ref["steps"][i]["x_bar"], self.ref["steps"][i]["x_bar"]))
            for i in best
        ]
        self.norms, self.norm_site = norms, self.prog64.steps[best[0]].site
        if not all(n > 0 and math.isfinite(n) for n in norms):
            return
        spread = norms[0] / norms[-1]
        if 1 / SPREAD <= spread <= SPREAD:
            return
        kind = "vanishing" if spread < 1 else "exploding"
        rate = spread ** (1 / (len(norms) - 1))
        what = (
            f"the cotangent norm goes from {_fmt(norms[-1])} at the last of {len(norms)} "
            f"repetitions to {_fmt(norms[0])} at the first (x{rate:.3g} per repetition)"
        )
        self.symptoms.append(f"{kind} gradient across repeated structure")
        trend = "shrinks" if spread < 1 else "grows"
        why = f"the product of the repeated layers' derivatives {trend} geometrically"
        self.culprits.append(self.finding(kind, best[0], what, why))

    def local_notes(self) -> None:
        """Local findings on a healthy gradient: kinks and rule mismatches whose effects
        cancel or vanish (max_pool's ties on relu zeros), noted, not alarmed."""
        if self.culprits:
            return
        kinks = {i for i, ok in self.local(kink=True) if not ok}
        wrong = {i for i, ok in self.local() if not ok} - kinks
        texts = {
            "kink": "one-sided derivatives of this equation disagree here (a kink)",
            "wrong-rule": "its rule disagrees with its own finite differences here",
        }
        for i in sorted(kinks | wrong):
            kind = "kink" if i in kinks else "wrong-rule"
            self.notes.append(self.finding(kind, i, texts[kind], "no effect on this gradient"))


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


#: Primitives whose inputs are constrained, so finite differences along a free direction
#: leave their domain: eigh and cholesky read one triangle of a symmetric matrix (their
#: rules assume symmetric tangents), a custom_linear_solve's solve and matvec constants must
#: stay consistent (the LU factors of the matrix). No local check for them.
_NO_LOCAL = frozenset({"eigh", "cholesky", "custom_linear_solve"})

_MOVEMENT = frozenset(
    "slice dynamic_slice gather squeeze reshape broadcast_in_dim convert_element_type "
    "concatenate transpose copy".split()
)


def _label(step: _Step) -> str:
    if step.eqn is not None and step.name in ("custom_jvp_call", "custom_vjp_call"):
        name = step.eqn.params.get("name")
        return f"{step.name}[{name}]" if name else step.name
    return step.name


def _kink(left: float, right: float, err: float) -> bool:
    """One-sided derivatives ``left`` and ``right`` disagree by more than 1e-3 (relative)
    and by more than ten times the central rules' error estimate ``err`` (a smooth function
    with a large third derivative moves one-sided rules too, but central ones as much)."""
    gap = abs(left - right)
    return gap > 1e-3 * max(1.0, abs(left) + abs(right)) and gap > 10.0 * err


def _diff(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _first_bad(xs: Sequence[Any]) -> tuple[tuple[int, int], float]:
    for k, x in enumerate(xs):
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            return (k, int(bad[0])), float(x.ravel()[bad[0]])
    return (0, 0), float("nan")


def _at(xs: Sequence[Any], j: tuple[int, int]) -> float:
    k, i = j
    return float(xs[k].ravel()[i]) if k < len(xs) and i < xs[k].size else float("nan")


def _inputs_at(rec: dict[str, Any], j: tuple[int, int]) -> str:
    vals = []
    for x in rec["xs"]:
        vals.append(_fmt(float(x.ravel()[j[1]])) if x.size > j[1] else "")
    return "x = " + ", ".join(v for v in vals if v)


def _first_gap(rec: dict[str, Any]) -> tuple[int, int]:
    for k, (a, b) in enumerate(zip(rec["fw"], rec["bw"], strict=True)):
        gap = np.abs(a - b).ravel()
        if gap.size:
            return (k, int(np.argmax(gap)))
    return (0, 0)


def _lost(
    own: Sequence[Any],
    ref: Sequence[Any],
    dtype: str,
    relative: bool = False,
    representable: bool = True,
) -> tuple[str, tuple[int, int]] | None:
    """``("underflow" | "overflow" | "precision", (leaf, element))`` for the first element
    where ``own`` lost what ``ref`` holds (a zero counts where ``ref`` is representable, or
    anywhere but at exact zeros with ``representable=False``), or None."""
    info = jnp.finfo(dtype)
    small = float(info.tiny) if representable else np.finfo(np.float64).tiny
    for k, (a, b) in enumerate(zip(own, ref, strict=True)):
        a, b = a.ravel(), b.ravel()
        if a.shape != b.shape:
            continue
        under = np.flatnonzero((a == 0) & (np.abs(b) >= small) & np.isfinite(b))
        if under.size:
            return "underflow", (k, int(under[0]))
        over = np.flatnonzero(~np.isfinite(a) & np.isfinite(b))
        if over.size:
            return "overflow", (k, int(over[0]))
        if relative and b.size:
            scale = max(float(np.max(np.abs(b), initial=0.0)), float(info.tiny))
            rho = np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-3 * scale)
            worse = np.flatnonzero(rho > RTOL_LOW.get(dtype, 2e-3))
            if worse.size:
                return "precision", (k, int(worse[0]))
    return None
