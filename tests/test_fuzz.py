"""Differential fuzzing (issue 17): random JAX programs, every differentiator against JAX.

Programs are small expression trees over one input ``x`` of shape ``(3,)``, drawn by
hypothesis from the primitive inventory: elementwise chains (with guards that keep arguments
in their domains, or not: ``raw``), broadcasting, reductions, slices, gathers and scatters
with repeated indices, ``jnp.where`` and NaN guards, ``lax.scan``, ``lax.cond``, custom_jvp
functions and dtype casts. A recipe is a nested tuple, printed on failure;
``build(recipe)`` turns it back into the function, so every failure reproduces from its
printed recipe and point (see ``REGRESSIONS`` below).

The references are JAX's own, in the method's mode: ``jax.jacfwd`` for the forward methods
(``dual``, ``jax-fwd``), ``jax.grad`` for the reverse ones (``tape``, ``jax-rev``); ``symbolic``
and ``fd`` may match either. Where the reference is finite a method must agree (rho, or
``fd`` within its own error estimate) or refuse with a one-line ``UnsupportedPrimitiveError``;
where it is not, what the method gives is recorded, not judged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

import diffkit as dk
from diffkit.accuracy import rho

N = 3  # every vector in a program has this length
IDX = (0, 2, 0)  # gather/scatter indices, with a repeat


# ------------------------------------------------------------------ the op inventory


@jax.custom_jvp
def ste_round(x):
    """Rounding with a straight-through derivative (a custom_jvp rule that is not the
    true derivative: every method must follow the rule, as JAX does)."""
    return jnp.round(x)


ste_round.defjvp(lambda primals, tangents: (ste_round(primals[0]), tangents[0]))

# name -> (function, domain, smooth). Domains: all, pos (> 0), unit (|x| < 1), gt1 (> 1).
UNARY: dict[str, tuple[Callable, str, bool]] = {
    "neg": (jnp.negative, "all", True),
    "sin": (jnp.sin, "all", True),
    "cos": (jnp.cos, "all", True),
    "tanh": (jnp.tanh, "all", True),
    "exp": (jnp.exp, "all", True),
    "expm1": (jnp.expm1, "all", True),
    "sinh": (jnp.sinh, "all", True),
    "atan": (jnp.arctan, "all", True),
    "asinh": (jnp.arcsinh, "all", True),
    "erf": (jss.erf, "all", True),
    "square": (jnp.square, "all", True),
    "cube": (lambda x: x**3, "all", True),
    "sigmoid": (jax.nn.sigmoid, "all", True),
    "softplus": (jax.nn.softplus, "all", True),
    "silu": (jax.nn.silu, "all", True),
    "log_sigmoid": (jax.nn.log_sigmoid, "all", True),
    "sinc": (jnp.sinc, "all", True),
    "log": (jnp.log, "pos", True),
    "log1p": (jnp.log1p, "pos", True),
    "sqrt": (jnp.sqrt, "pos", True),
    "rsqrt": (lax.rsqrt, "pos", True),
    "recip": (jnp.reciprocal, "pos", True),
    "pow1.5": (lambda x: x**1.5, "pos", True),
    "lgamma": (jss.gammaln, "pos", True),
    "digamma": (jss.digamma, "pos", True),
    "xlogx": (lambda x: jss.xlogy(x, x), "pos", True),
    "arcsin": (jnp.arcsin, "unit", True),
    "arccos": (jnp.arccos, "unit", True),
    "arctanh": (jnp.arctanh, "unit", True),
    "acosh": (jnp.arccosh, "gt1", True),
    "abs": (jnp.abs, "all", False),
    "relu": (jax.nn.relu, "all", False),
    "floor": (jnp.floor, "all", False),
    "round": (jnp.round, "all", False),
    "sign_mul": (lambda x: jnp.sign(x) * x, "all", False),
    "clip": (lambda x: jnp.clip(x, -1.0, 1.0), "all", False),
    "cbrt": (jnp.cbrt, "all", False),
    "ste_round": (ste_round, "all", False),
    "leaky_relu": (jax.nn.leaky_relu, "all", False),
}

BINARY: dict[str, tuple[Callable, str, bool]] = {  # domain applies to the second argument
    "add": (jnp.add, "all", True),
    "sub": (jnp.subtract, "all", True),
    "mul": (jnp.multiply, "all", True),
    "div": (jnp.divide, "pos", True),
    "atan2": (jnp.arctan2, "pos", True),
    "hypot": (jnp.hypot, "pos", True),
    "logaddexp": (jnp.logaddexp, "all", True),
    "xlogy": (jss.xlogy, "pos", True),
    "rpow": (lambda a, b: jnp.power(b, a), "pos", True),  # b ** a, b > 0
    "max": (jnp.maximum, "all", False),
    "min": (jnp.minimum, "all", False),
    "where_gt": (lambda a, b: jnp.where(a > b, a, b), "all", False),
}

REDUCE: dict[str, tuple[Callable, bool]] = {
    "sum": (jnp.sum, True),
    "mean": (jnp.mean, True),
    "prod": (jnp.prod, True),
    "logsumexp": (jax.nn.logsumexp, True),
    "var": (jnp.var, True),
    "max": (jnp.max, False),
    "min": (jnp.min, False),
    "norm": (jnp.linalg.norm, False),  # sqrt at 0
}

VECTOR: dict[str, tuple[Callable, bool]] = {  # vector -> vector: data movement, running ops
    "rev": (lambda c: c[::-1], True),
    "roll": (lambda c: jnp.concatenate([c[1:], c[:1]]), True),
    "gather": (lambda c: c[jnp.array(IDX)], True),
    "cumsum": (jnp.cumsum, True),
    "cumprod": (jnp.cumprod, True),
    "cummax": (lax.cummax, False),
    "sort": (jnp.sort, False),
}

GUARDS: dict[str, Callable] = {  # smooth maps into each domain
    "pos": lambda x: x * x + 0.25,
    "unit": lambda x: 0.9 * jnp.tanh(x),
    "gt1": lambda x: x * x + 1.25,
}

NAN_GUARDS: dict[str, Callable] = {  # op applied under a guard, with a raw-domain op f
    "nan_to_num": lambda f, x: jnp.nan_to_num(f(x)),
    "isnan": lambda f, x: jnp.where(jnp.isnan(f(x)), 0.0, f(x)),
    "double_where": lambda f, x: jnp.where(x > 0, f(jnp.where(x > 0, x, 1.0)), 0.0),
    "single_where": lambda f, x: jnp.where(x > 0, f(x), 0.0),  # jax.grad NaN at x <= 0
}


# ------------------------------------------------------------------ recipes -> functions


def build(recipe: tuple) -> Callable[[jax.Array], jax.Array]:
    """The function ``x -> scalar`` a recipe describes: the tree's value, summed with
    weights ``1, 2, 3`` when it is a vector.

    Example:
        >>> f = build(("un", "sin", ("x",)))
        >>> float(f(jnp.zeros(3)))
        0.0
    """

    def f(x):
        y = _eval(recipe, x)
        if jnp.ndim(y):
            y = jnp.sum(y * jnp.arange(1.0, N + 1.0, dtype=y.dtype))
        return y

    return f


def _eval(r: tuple, x: jax.Array) -> jax.Array:
    kind, *a = r
    if kind == "x":
        return x
    if kind == "const":
        return jnp.asarray(a[0], x.dtype)
    if kind == "guard":
        return GUARDS[a[0]](_eval(a[1], x))
    if kind == "un":
        return UNARY[a[0]][0](_eval(a[1], x))
    if kind == "bin":
        return BINARY[a[0]][0](_eval(a[1], x), _eval(a[2], x))
    if kind == "reduce":
        return REDUCE[a[0]][0](_eval(a[1], x))
    if kind == "outer":  # broadcasting: a[:, None] op b[None, :], reduced over one axis
        op, red, axis, u, v = a
        m = BINARY[op][0](_eval(u, x)[:, None], _eval(v, x)[None, :])
        return REDUCE[red][0](m, axis=axis)
    if kind == "index":
        c = _eval(a[1], x)
        return VECTOR[a[0]][0](c) if a[0] in VECTOR else c[int(a[0])]  # or one entry
    if kind == "scatter":  # c.at[IDX].set/add(d), repeated index
        c, d = _eval(a[1], x), _eval(a[2], x)
        d = jnp.broadcast_to(d, (len(IDX),))
        at = c.at[jnp.array(IDX)]
        return at.set(d) if a[0] == "set" else at.add(d)
    if kind == "where":  # where(c > 0, a, b)
        c, p, q = (_eval(t, x) for t in a)
        return jnp.where(c > 0, p, q)
    if kind == "nanguard":
        return NAN_GUARDS[a[0]](UNARY[a[1]][0], _eval(a[2], x))
    if kind == "scan":  # h_k = op(h_{k-1} + c_k) * 0.9, ys_k = h_{k-1} * c_k
        h, ys = lax.scan(_scan_body(a[0]), jnp.broadcast_to(_eval(a[1], x), ()), _eval(a[2], x))
        return ys + h
    if kind == "cond":  # cond(sum(c) > 0, op1, op2, c)
        op1, op2, c = a[0], a[1], _eval(a[2], x)
        return lax.cond(jnp.sum(c) > 0, UNARY[op1][0], UNARY[op2][0], c)
    if kind == "cast":  # through another dtype and back
        c = _eval(a[1], x)
        return c.astype(a[0]).astype(c.dtype)
    raise ValueError(f"unknown recipe node {kind!r}")


@functools.cache
def _scan_body(op: str) -> Callable:
    """One body per op (JAX caches the traced scan by the function, so it compiles once)."""
    fn = UNARY[op][0]

    def body(h, ck):
        return fn(h + ck) * 0.9, h * ck

    return body


def shape(r: tuple) -> str:
    """'v' for a vector node, 's' for a scalar one."""
    kind, *a = r
    if kind == "const" or kind == "reduce":
        return "s"
    if kind == "index" and a[0] not in VECTOR:
        return "s"
    if kind in ("x", "outer", "scan", "scatter"):
        return "v"
    kids = [t for t in a if isinstance(t, tuple)]
    return "v" if any(shape(t) == "v" for t in kids) else "s"


def smooth(r: tuple) -> bool:
    """Whether the program is smooth (no kinks, jumps, branches or casts) where defined."""
    kind, *a = r
    if kind in ("where", "nanguard", "cond", "cast", "scatter"):
        return False
    if kind == "un" and not UNARY[a[0]][2]:
        return False
    if kind in ("bin", "outer") and not BINARY[a[0]][2]:
        return False
    if kind == "outer" and not REDUCE[a[1]][1]:
        return False
    if kind == "reduce" and not REDUCE[a[0]][1]:
        return False
    if kind == "index" and a[0] in VECTOR and not VECTOR[a[0]][1]:
        return False
    if kind == "scan" and not UNARY[a[0]][2]:
        return False
    return all(smooth(t) for t in a if isinstance(t, tuple))


def lowest_eps(r: tuple, dtype: str) -> float:
    """Machine epsilon of the narrowest float the program computes in."""
    eps = float(jnp.finfo(dtype).eps)
    stack = [r]
    while stack:
        kind, *a = stack.pop()
        if kind == "cast" and a[0].startswith("float"):
            eps = max(eps, float(jnp.finfo(a[0]).eps))
        stack.extend(t for t in a if isinstance(t, tuple))
    return eps


def size(r: tuple) -> int:
    """Number of nodes."""
    return 1 + sum(size(t) for t in r[1:] if isinstance(t, tuple))


# ------------------------------------------------------------------ hypothesis strategies

ALL_UNARY = sorted(UNARY)
SMOOTH_ALL = sorted(k for k, v in UNARY.items() if v[1] == "all" and v[2])
RAW_DOMAIN = sorted(k for k, v in UNARY.items() if v[1] != "all")


def _guarded(draw, domain: str, child: tuple) -> tuple:
    if domain == "all" or draw(st.integers(0, 5)) == 0:  # sometimes raw: outside the domain
        return child
    return ("guard", domain, child)


@st.composite
def recipes(draw, depth: int = 3) -> tuple:
    """A random program (a recipe tuple) of at most ``depth`` levels."""
    if depth <= 0 or draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from([("x",), ("x",), ("x",), ("const", 1.5), ("const", -0.5)]))
    sub = recipes(depth - 1)
    kind = draw(
        st.sampled_from(
            ["un"] * 6
            + ["bin"] * 4
            + ["reduce", "outer", "index", "scatter", "where", "nanguard", "scan", "cond", "cast"]
        )
    )
    if kind == "un":
        op = draw(st.sampled_from(ALL_UNARY))
        return ("un", op, _guarded(draw, UNARY[op][1], draw(sub)))
    if kind == "bin":
        op = draw(st.sampled_from(sorted(BINARY)))
        return ("bin", op, draw(sub), _guarded(draw, BINARY[op][1], draw(sub)))
    if kind == "reduce":
        return ("reduce", draw(st.sampled_from(sorted(REDUCE))), draw(_vector(sub)))
    if kind == "outer":
        op = draw(st.sampled_from(sorted(BINARY)))
        red = draw(st.sampled_from(sorted(REDUCE)))
        u = draw(_vector(sub))
        v = _guarded(draw, BINARY[op][1], draw(_vector(sub)))
        return ("outer", op, red, draw(st.integers(0, 1)), u, v)
    if kind == "index":
        where = draw(st.sampled_from([*VECTOR, "0", "2"]))
        return ("index", where, draw(_vector(sub)))
    if kind == "scatter":
        return ("scatter", draw(st.sampled_from(["set", "add"])), draw(_vector(sub)), draw(sub))
    if kind == "where":
        return ("where", draw(sub), draw(sub), draw(sub))
    if kind == "nanguard":
        guard = draw(st.sampled_from(sorted(NAN_GUARDS)))
        return ("nanguard", guard, draw(st.sampled_from(RAW_DOMAIN)), draw(sub))
    if kind == "scan":
        op = draw(st.sampled_from([*SMOOTH_ALL, "relu", "abs"]))
        h0 = draw(st.sampled_from([("const", 0.5), ("reduce", "mean", ("x",))]))
        return ("scan", op, h0, draw(_vector(sub)))
    if kind == "cond":
        ops = st.sampled_from(SMOOTH_ALL)
        return ("cond", draw(ops), draw(ops), draw(_vector(sub)))
    return ("cast", draw(st.sampled_from(["float32", "bfloat16", "int32"])), draw(sub))


@st.composite
def _vector(draw, sub) -> tuple:
    r = draw(sub)
    return r if shape(r) == "v" else ("bin", "mul", ("x",), r)


SPECIAL64 = [0.0, -0.0, -1.0, 1.0, math.nan, math.inf, -math.inf, 1e300, -1e300, 1e-300, 5e-324]
SPECIAL32 = [0.0, -0.0, -1.0, 1.0, math.nan, math.inf, -math.inf, 3e38, -3e38, 1e-38, 1e-45]


@st.composite
def points(draw, dtype: str, special: bool = True) -> tuple[float, ...]:
    """An input point: ordinary floats in [-2.5, 2.5], and (if ``special``) some special
    values (zeros, infinities, NaN, huge, tiny)."""
    width = 32 if dtype == "float32" else 64
    ordinary = st.floats(-2.5, 2.5, width=width)
    coord = (
        st.one_of(ordinary, ordinary, st.sampled_from(SPECIAL32 if width == 32 else SPECIAL64))
        if special
        else ordinary
    )
    return tuple(draw(coord) for _ in range(N))


# ------------------------------------------------------------------ the comparison

METHODS = ("jax-fwd", "jax-rev", "dual", "tape", "fd", "symbolic")
FORWARD = {"dual", "jax-fwd"}  # judged against jax.jacfwd
REVERSE = {"tape", "jax-rev"}  # judged against jax.grad; symbolic and fd: either
TOL = {"float64": 1e-12, "float32": 1e-5}
SYMBOLIC_TOL = 1e-10


@dataclasses.dataclass
class Outcome:
    """What one method gave on one program at one point. ``status``: ok, refused,
    unjudged (JAX's reference is not finite: recorded only), DISAGREE or ERROR (findings)."""

    method: str
    status: str
    detail: str = ""


def references(f: Callable, x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """JAX's forward-mode and reverse-mode gradients at ``x``."""
    return np.asarray(jax.jacfwd(f)(x)), np.asarray(jax.grad(f)(x))


def extreme(x: Any) -> bool:
    """Whether the point has a huge, tiny or non-finite coordinate."""
    a = np.abs(np.asarray(x, np.float64))
    return bool(np.any(~np.isfinite(a) | (a > 1e10) | ((a > 0) & (a < 1e-10))))


def _relerr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`diffkit.accuracy.rho` entry by entry."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.array([rho(u, v) for u, v in zip(a.ravel(), b.ravel(), strict=True)]).reshape(
            a.shape
        )


def _refusal(method: str, e: BaseException) -> bool:
    """A refusal: UnsupportedPrimitiveError (symbolic also its budget and spot-check
    errors) with a one-line message."""
    from diffkit.symbolic.differentiator import SpotCheckError

    kinds = (dk.UnsupportedPrimitiveError,)
    if method == "symbolic":
        kinds += (dk.BudgetExceeded, SpotCheckError)
    return isinstance(e, kinds) and "\n" not in str(e).strip()


def judge(
    method: str,
    got: np.ndarray,
    fwd: np.ndarray,
    rev: np.ndarray,
    tol: float,
    error: np.ndarray | None = None,
    noisy: bool = False,
    noise: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Per entry, whether ``got`` fails JAX: where a reference of the method's mode is
    finite, ``got`` must be finite and close to it (``fd``: within ``error``). ``symbolic``
    and ``fd`` may follow either mode, its NaN/inf included. Rounding: the tolerance is at
    least 4x the distance between JAX's own two modes and 4x the ``noise`` (see
    :func:`rounding_noise`); where only one of them is finite at a ``noisy`` (extreme) point,
    only finiteness is judged."""
    fin_f, fin_r = np.isfinite(fwd), np.isfinite(rev)
    spread = np.where(fin_f & fin_r, _relerr(fwd, rev), 0.0)
    tol_i = np.maximum(tol, 4.0 * np.maximum(spread, noise))
    refs = [fwd] if method in FORWARD else [rev] if method in REVERSE else [fwd, rev]
    has_ref = np.zeros(got.shape, bool)
    close = np.zeros(got.shape, bool)
    for ref in refs:
        fin = np.isfinite(ref)
        with np.errstate(invalid="ignore", over="ignore"):
            near = np.abs(got - ref) <= error if error is not None else _relerr(got, ref) <= tol_i
        has_ref |= fin
        close |= fin & near & np.isfinite(got)
        if len(refs) > 1:  # following one mode includes its NaN/inf
            close |= ~fin & ~np.isfinite(got)
    if noisy:
        close |= (fin_f != fin_r) & np.isfinite(got)
    return has_ref & ~close


def rounding_noise(f: Callable, x: jax.Array, fwd: np.ndarray, rev: np.ndarray) -> np.ndarray:
    """How much JAX's own gradients move (rho per entry) when ``x`` moves by 4 ulps
    (``x * (1 +- 4 eps)``: signs, zeros and ties between coordinates stay): the rounding
    noise of this program at this point, large where the derivative cancels (``sinc`` near
    0: two terms ~1/x cancel to ~x). Computed only when a method seems to disagree."""
    eps = float(jnp.finfo(x.dtype).eps)
    noise = np.zeros(fwd.shape)
    for s in (1 + 4 * eps, 1 - 4 * eps):
        f_s, r_s = references(f, x * jnp.asarray(s, x.dtype))
        for a, b in ((f_s, fwd), (r_s, rev)):
            noise = np.maximum(noise, np.nan_to_num(_relerr(a, b), nan=0.0, posinf=0.0))
    return noise


def compare(method: str, recipe: tuple, x: jax.Array, fwd: np.ndarray, rev: np.ndarray) -> Outcome:
    """Run ``method``'s gradient of the program at ``x`` and judge it against JAX's."""
    f = build(recipe)
    dtype = str(x.dtype)
    tol = SYMBOLIC_TOL if method == "symbolic" else TOL[dtype]
    eps = lowest_eps(recipe, dtype)
    if eps > float(jnp.finfo(dtype).eps):  # the program rounds to a narrower float
        tol = max(tol, 64 * eps)
    error = None
    try:
        if method == "fd":
            res = dk.get("fd").gradient(f)(x)
            got, error = np.asarray(res.grad), np.asarray(res.error)
        else:
            got = np.asarray(dk.get(method).grad(f)(x))
    except Exception as e:  # a refusal is an outcome; anything else is a finding
        if _refusal(method, e):
            return Outcome(method, "refused", str(e))
        return Outcome(method, "ERROR", f"{type(e).__name__}: {str(e)[:300]}")
    bad = judge(method, got, fwd, rev, tol, error, noisy=extreme(x))
    if bad.any() and error is None:  # rounding or a finding? gauge the rounding noise
        noise = rounding_noise(f, x, fwd, rev)
        bad = judge(method, got, fwd, rev, tol, error, noisy=extreme(x), noise=noise)
    if bad.any():
        err = "" if error is None else f", fd error estimate {error.tolist()}"
        return Outcome(
            method,
            "DISAGREE",
            f"entries {np.flatnonzero(bad).tolist()}: got {got.tolist()}, jax.jacfwd "
            f"{fwd.tolist()}, jax.grad {rev.tolist()}{err}",
        )
    if not (np.isfinite(fwd).all() and np.isfinite(rev).all()):
        return Outcome(method, "unjudged", f"got {got.tolist()}")
    return Outcome(method, "ok")


def fd_applies(recipe: tuple, x: Any) -> bool:
    """fd is judged on smooth programs at ordinary points only (finite, |x_i| in
    [0.05, 10], every guarded domain kept: no raw domain op)."""
    a = np.abs(np.asarray(x, np.float64))
    return smooth(recipe) and not raw(recipe) and bool(np.all((a >= 0.05) & (a <= 10)))


def raw(r: tuple) -> bool:
    """Whether a domain-restricted op is applied without its guard."""
    kind, *a = r
    if kind == "un" and UNARY[a[0]][1] != "all" and a[1][0] != "guard":
        return True
    if kind == "bin" and BINARY[a[0]][1] != "all" and a[2][0] != "guard":
        return True
    if kind == "outer" and BINARY[a[0]][1] != "all" and a[4][0] != "guard":
        return True
    return any(raw(t) for t in a if isinstance(t, tuple))


def check(recipe: tuple, point: Any, dtype: str, methods: tuple[str, ...]) -> list[Outcome]:
    """Every method in ``methods`` on one program at one point (fd only where it applies)."""
    with jax.enable_x64(dtype == "float64"):
        x = jnp.asarray(point, dtype)
        fwd, rev = references(build(recipe), x)
        return [
            compare(m, recipe, x, fwd, rev)
            for m in methods
            if m != "fd" or fd_applies(recipe, point)
        ]


def findings(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes that are disagreements or errors."""
    return [o for o in outcomes if o.status in ("DISAGREE", "ERROR")]


# ------------------------------------------------------------------ the tests

FAST = ("jax-fwd", "jax-rev", "dual", "tape", "fd")


def _report(recipe: tuple, point: Any, dtype: str, bad: list[Outcome]) -> str:
    lines = [f"check({recipe!r}, {tuple(point)!r}, {dtype!r}, ...):"]
    lines += [f"  {o.method} {o.status}: {o.detail}" for o in bad]
    return "\n".join(lines)


def _points(data: st.DataObject, dtype: str) -> list[tuple[float, ...]]:
    """Three points per program (evaluating a program again is cheap: JAX's per-primitive
    executables are cached): one ordinary, two with special values."""
    return [data.draw(points(dtype, special=k > 0), label=f"point{k}") for k in range(3)]


def _check_all(recipe: tuple, dtype: str, pts: list, methods: tuple[str, ...]) -> None:
    reports = [
        _report(recipe, p, dtype, bad)
        for p in pts
        if (bad := findings(check(recipe, p, dtype, methods)))
    ]
    assert not reports, "\n".join(reports)


@pytest.mark.slow  # 25 programs at 3 points: ~25 s on 2 cores
@settings(
    derandomize=True,
    max_examples=25,  # programs, each at 3 points: 75 checks of 4-5 methods (~40 s CPU)
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_fuzz_autodiff(data: st.DataObject) -> None:
    """dual, tape, jax-fwd, jax-rev (and fd on smooth programs at ordinary points) agree
    with JAX on random programs at random points, float32 and float64."""
    dtype = data.draw(st.sampled_from(["float64", "float32"]), label="dtype")
    recipe = data.draw(recipes(3), label="recipe")
    _check_all(recipe, dtype, _points(data, dtype), FAST)


@pytest.mark.slow  # 10 programs built and compiled by symbolic: ~3 s
@settings(
    derandomize=True,
    max_examples=10,  # symbolic builds and compiles each program: few, small ones
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_fuzz_symbolic(data: st.DataObject) -> None:
    """symbolic follows JAX or refuses, on small programs in float64."""
    recipe = data.draw(recipes(2), label="recipe")
    _check_all(recipe, "float64", _points(data, "float64"), ("symbolic",))


# Disagreements the fuzzer found, reduced to their smallest program: (recipe, point, dtype,
# methods). A bug not fixed yet is marked xfail(strict=True) with its one-line reason.
REGRESSIONS: list[Any] = [
    pytest.param(
        ("reduce", "prod", ("x",)),
        (0.0, 1e200, 1e200),
        "float64",
        ("dual",),  # was NaN: sum_i t_i prod_(j!=i) x_j with inf * 0 where the others overflow
        id="prod-overflow-dual",
    ),
    # Found, then judged rounding: sinc'(x) near 0 is two terms ~1/x cancelling to ~x; each
    # method's rounding differs by ~1e-9 (JAX's two modes by 1.6e-10). rounding_noise sees it.
    pytest.param(
        ("un", "sinc", ("bin", "xlogy", ("x",), ("guard", "pos", ("const", -0.5)))),
        (1.192092896e-07, 1.0, 1.0),
        "float64",
        ("symbolic", "tape", "dual"),
        id="sinc-cancellation-rounding",
    ),
    # Found, then judged JAX's convention: at this extreme point jax.jacfwd is NaN where
    # jax.grad is 0 (silu at -1.5e300); symbolic follows jax.jacfwd.
    pytest.param(
        ("cond", "silu", "expm1", ("bin", "mul", ("x",), ("const", 1.5))),
        (math.inf, 5e-324, -1e300),
        "float64",
        ("symbolic", "dual", "tape"),
        id="cond-silu-extreme-symbolic",
    ),
]


@pytest.mark.parametrize(("recipe", "point", "dtype", "methods"), REGRESSIONS)
def test_fuzz_regression(recipe: tuple, point: tuple, dtype: str, methods: tuple) -> None:
    """Each reduced disagreement, kept as an explicit example."""
    bad = findings(check(recipe, point, dtype, methods))
    assert not bad, _report(recipe, point, dtype, bad)


def test_judge_catches_a_wrong_gradient() -> None:
    """The judge itself fails a wrong number, a NaN where JAX is finite, and an fd value
    outside its error estimate, and accepts JAX's own answer."""
    ref = np.array([1.0, 2.0, np.nan])
    assert not judge("tape", ref.copy(), ref, ref, 1e-12).any()
    assert judge("tape", np.array([1.0, 2.0 + 1e-9, 0.0]), ref, ref, 1e-12).tolist() == [
        False,
        True,
        False,
    ]
    assert judge("dual", np.array([np.nan, 2.0, 0.0]), ref, ref, 1e-12)[0]
    err = np.array([1e-6, 1e-6, 1e-6])
    assert judge("fd", np.array([1.0, 2.0 + 2e-6, 0.0]), ref, ref, 0.0, err)[1]
    # symbolic may follow either mode: jax.jvp's 0 or jax.grad's value
    assert not judge("symbolic", np.array([0.0]), np.array([0.0]), np.array([np.nan]), 1e-10)[0]
