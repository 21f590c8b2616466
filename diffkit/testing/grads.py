"""Gradient checks for test suites that are right in float32 and float64.

:func:`check_grads` compares a function's derivatives -- JAX's own, custom rules included, or
those of a diffkit differentiator -- with an independent reference:

* **forward** (``"fwd"``): ``J v`` along random directions ``v``, element by element, against
  central finite differences of order 4 evaluated in float64, with an error estimate from the
  order-2 rule on the same points' neighbours;
* **reverse** (``"rev"``): the dot-product test ``<u, J v> = <J^T u, v>`` for random ``u``,
  ``v``, with ``J v`` taken from the finite-difference reference (so a wrong VJP cannot hide
  behind an equally wrong JVP) and also from the forward derivative;
* **Taylor** (``reference="taylor"``, scalar functions): the remainder
  ``f(x + h v) - f(x) - h <g, v>`` must shrink like ``h^2``; no step to choose.

Tolerances are per element and never scaled by the number of outputs. A float32 function is
checked twice: its derivative rule evaluated in float64 against the float64 reference (this
catches wrong rules whatever their size), and its float32 derivative against its own float64
derivative (this catches float32-only breakage). A check at a point where the function is not
differentiable along the direction (a kink) raises :class:`NonDifferentiableError`, not a
failure report.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from diffkit.testing import check_grads
    >>> @jax.custom_jvp
    ... def cube(x):
    ...     return x**3
    >>> _ = cube.defjvp(lambda p, t: (cube(p[0]), 3 * p[0] ** 2 * t[0]))
    >>> check_grads(cube, (jnp.linspace(0.5, 2.0, 4),))  # silent on success
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import DiffkitError, GradCheckError, NonDifferentiableError
from diffkit._core.registry import get
from diffkit._core.types import PyTree
from diffkit.sharding import device_mesh
from diffkit.testing.invariance import _bind_mesh, check_invariance

__all__ = ["RTOL_FLOAT32", "RTOL_RULE", "TaylorResult", "check_grads", "taylor_test"]


#: Default tolerances on rho = |a - b| / max(1, |a| + |b|), per element.
RTOL_RULE = 1e-6  # derivative rule in float64 vs finite differences in float64
RTOL_FLOAT32 = 2e-3  # a float32 derivative vs the same derivative in float64


@dataclass(frozen=True)
class _Engine:
    """Where derivatives come from: JAX itself (custom rules included) or a differentiator."""

    method: str | None

    def jvp(self, f: Callable, primals: tuple, tangents: tuple) -> tuple[Any, Any]:
        if self.method is None:
            return jax.jvp(f, primals, tangents)
        return get(self.method).jvp(f, primals, tangents)

    def vjp(self, f: Callable, *primals: Any) -> tuple[Any, Callable]:
        if self.method is None:
            return jax.vjp(f, *primals)
        return get(self.method).vjp(f, *primals)

    @property
    def label(self) -> str:
        return self.method or "jax (custom rules included)"


def check_grads(
    f: Callable,
    args: Sequence[Any],
    *,
    modes: Sequence[str] | None = None,
    order: int = 1,
    methods: Sequence[str | None] | None = None,
    reference: str = "fd",
    rtol: float | None = None,
    atol: float | None = None,
    directions: int = 2,
    seed: int = 0,
    mesh: Any = None,
) -> None:
    """Check the derivatives of ``f`` at ``args``; silent on success.

    Args:
        f: a JAX function of ``len(args)`` positional arguments (pytrees of float arrays).
        args: the point to check at.
        modes: ``"fwd"`` (JVPs element by element) and/or ``"rev"`` (the dot-product test);
            default both, or ``"rev"`` alone where forward mode is unavailable (a
            ``custom_vjp`` function: its VJP is checked by the dot-product test against
            finite differences, and a failure message says so).
        order: 1 checks first derivatives; 2 also checks second derivatives (the JVP of the
            VJP, against finite differences of the VJP).
        methods: where the checked derivatives come from: ``None`` for JAX's own (custom
            rules included), or diffkit differentiator names such as ``"tape"``.
        reference: ``"fd"`` (finite differences in float64) or ``"taylor"`` (the Taylor
            remainder test; scalar functions, reverse mode).
        rtol, atol: per-element tolerance on rho for the rule check; default ``1e-6``.
        directions: how many random directions (and cotangents) to try.
        seed: the random seed of the directions.
        mesh: a jax Mesh or a device count: after the checks above, also check that the
            gradient (of scalar ``f``, for ``args[0]``) is the same sharded over it as on one
            device (:func:`diffkit.testing.check_invariance`, which names the leaf that differs).

    Raises:
        GradCheckError: a derivative is wrong; the message says where and by how much, and
            ends with the gradient doctor's first culprit (the equation and source line).
        NonDifferentiableError: the point is a kink along the random direction.

    Example:
        >>> import jax.numpy as jnp
        >>> from diffkit.testing import check_grads
        >>> check_grads(lambda x: jnp.sum(jnp.sin(x) * x), (jnp.arange(3.0),), order=2)
    """
    __tracebackhide__ = True  # pytest shows the test's line and the message, not this source
    _check_options(("fwd", "rev") if modes is None else modes, rtol, atol, directions, seed)
    auto = modes is None
    modes = ("fwd", "rev") if modes is None else (modes,) if isinstance(modes, str) else modes
    args = tuple(jax.tree_util.tree_map(jnp.asarray, a) for a in args)
    if not args:
        raise DiffkitError("check_grads: args is empty; pass the point as a tuple, e.g. (x,)")
    bad = [m for m in modes if m not in ("fwd", "rev")]
    if bad or not modes:
        raise DiffkitError(f"check_grads: modes must be 'fwd' and/or 'rev', got {tuple(modes)!r}")
    if order not in (1, 2):
        raise DiffkitError(f"check_grads: order must be 1 or 2, got {order!r}")
    if reference not in ("fd", "taylor"):
        raise DiffkitError(f"check_grads: reference must be 'fd' or 'taylor', got {reference!r}")
    for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise DiffkitError(
                f"check_grads: args{jax.tree_util.keystr(path)} has dtype {leaf.dtype}; "
                "check_grads differentiates real floating-point arguments only"
            )
    tol = _Tol(rtol if rtol is not None else RTOL_RULE, atol if atol is not None else 0.0)
    # with a mesh, the ordinary check runs on one device (f given a one-device mesh, if it
    # takes a mesh parameter), as check_invariance's unsharded side does
    one = f if mesh is None else _bind_mesh(f, device_mesh(1))
    for method in methods if methods is not None else (None,):
        engine = _Engine(method)
        try:
            _check_method(one, args, modes, auto, order, reference, engine, tol, directions, seed)
        except GradCheckError as error:
            raise _with_culprit(error, one, args, method) from None
    if mesh is not None:  # then sharded against unsharded, method by method
        try:
            check_invariance(f, args, mesh, methods=methods, rtol=rtol)
        except GradCheckError as error:
            raise GradCheckError(str(error)) from None


def _check_method(f, args, modes, auto, order, reference, engine: _Engine, tol, directions, seed):
    """check_grads for one source of derivatives (``auto``: drop forward mode where the
    function has none, as a ``custom_vjp`` function, and say so in a failure)."""
    note = ""
    if auto and not _has_forward_mode(f, args, engine):
        modes = ("rev",)
        note = (
            " [forward mode is unavailable for this function (a custom_vjp rule): its VJP "
            "was checked by the dot-product test against finite differences]"
        )
    key = jax.random.PRNGKey(seed)
    try:
        for k in range(directions):
            key, kv, ku = jax.random.split(key, 3)
            v = _random_like(kv, args)
            if reference == "taylor":
                _taylor_check(f, args, v, engine)
                continue
            _first_order(f, args, v, ku, modes, engine, tol, k)
            if order == 2:
                u = _random_like(ku, jax.eval_shape(f, *args))

                def g(*xs: Any, u: Any = u, engine: _Engine = engine) -> Any:
                    out, vjp_fn = engine.vjp(f, *xs)
                    return vjp_fn(jax.tree_util.tree_map(lambda a, o: a.astype(o.dtype), u, out))

                second = ("rev",) if note else ("fwd",)
                _first_order(g, args, v, ku, second, engine, tol, k, what="second derivative")
    except GradCheckError as error:
        raise GradCheckError(f"{error}{note}") from None


def _has_forward_mode(f: Callable, args: tuple, engine: _Engine) -> bool:
    """Whether the engine's JVP of ``f`` lowers (JAX refuses a ``custom_vjp`` function when
    it lowers the JVP, not when it traces it)."""
    try:
        jax.jit(lambda a: engine.jvp(f, a, a)).lower(args)
    except NotImplementedError:
        return False
    except TypeError as error:
        if "custom_vjp" in str(error):
            return False
        raise
    return True


def _with_culprit(error: GradCheckError, f: Callable, args: tuple, method: str | None):
    """``error`` with the gradient doctor's first culprit appended (and its report kept on
    ``error.report``); the error as it is when the doctor finds nothing or cannot run."""
    from diffkit.diagnosis import doctor

    try:
        report = doctor(lambda xs: f(*xs), args, method=method)  # every argument
    except Exception:  # the doctor is a help, never a second failure
        return error
    c = report.first
    if c is None:
        return error
    new = GradCheckError(
        f"{error}\ngradient doctor, first culprit: [{c.kind}] {c.primitive} at {c.site}: {c.why}"
    )
    new.report = report
    return new


def _check_options(modes: Any, rtol: Any, atol: Any, directions: Any, seed: Any) -> None:
    """One-line errors for option values of the wrong kind (from a marker or an ini file)."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0
        ):
            raise DiffkitError(
                f"check_grads: {name} must be a non-negative number, got {value!r}; "
                f"e.g. {name}=1e-5"
            )
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise DiffkitError(f"check_grads: directions must be a positive int, got {directions!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DiffkitError(f"check_grads: seed must be an int, got {seed!r}")
    if not isinstance(modes, str | tuple | list):
        raise DiffkitError(f"check_grads: modes must be 'fwd', 'rev' or both, got {modes!r}")


@dataclass(frozen=True)
class _Tol:
    rtol: float
    atol: float


def _first_order(f, args, v, key, modes, engine: _Engine, tol: _Tol, k: int, what="derivative"):
    """Check one random direction: JVPs element by element, the dot-product test; then, for a
    float32 function, its own derivatives against the same derivatives in float64.

    Every derivative of one direction is computed in one jit-compiled call (one compilation
    instead of dozens of eager ones); the comparisons run in NumPy afterwards.
    """
    low = [leaf.dtype for leaf in jax.tree_util.tree_leaves(args) if leaf.dtype != jnp.float64]
    with jax.enable_x64(True):
        d = _compiled(f, tuple(modes), engine, True)(_to64(args), _to64(v), key)
        d = _to_np(d)
    _kink_guard(d["forward"], d["backward"])
    if "fwd" in modes:
        _compare(d["ref"], d["y_dot"], d["err"], tol, f"{what} J v (forward, {engine.label})", k)
    if "rev" in modes:
        lhs, rhs = _vdot(d["u"], d["ref"]), _vdot(d["x_bar"], _to_np(v))
        bound = tol.atol + tol.rtol * max(1.0, _vdot(d["u"], d["ref"], absolute=True))
        bound += 10.0 * _vdot(d["u"], d["err"], absolute=True)
        if abs(lhs - rhs) > bound:
            raise GradCheckError(
                f"{what} check failed: reverse mode ({engine.label}), direction {k}: "
                f"dot-product test <u, J v> = {lhs:.10g} (finite differences, float64) but "
                f"<J^T u, v> = {rhs:.10g}; |difference| {abs(lhs - rhs):.3g} > "
                f"tolerance {bound:.3g}"
            )
    if not low:
        return
    # a float32 (or lower) function: its own derivatives vs the same derivatives in float64
    own = _compiled(f, tuple(modes), engine, False)(args, v, key, d.get("u"))
    own = _to_np(own)
    where = f"{what} in {low[0]} vs the same derivative in float64 ({engine.label})"
    for name in ("y_dot", "x_bar"):
        if name in own:
            _compare(d[name], own[name], None, _Tol(RTOL_FLOAT32, 0.0), where, k, "float64")


@functools.lru_cache(maxsize=16)
def _compiled(f: Callable, modes: tuple[str, ...], engine: _Engine, reference: bool) -> Callable:
    """One jit-compiled :func:`_derivatives` per function, reused for every direction."""
    return jax.jit(functools.partial(_derivatives, f, modes, engine, reference=reference))


def _derivatives(f, modes, engine: _Engine, args, v, key, u=None, reference: bool = True) -> dict:
    """The checked derivatives along ``v`` (and for a random cotangent ``u``) and, in float64,
    the finite-difference references: central order 4 (``ref``), its distance to central order
    2 (``err``, the error estimate) and the one-sided order-2 values (for the kink guard)."""
    out: dict[str, Any] = {}
    if reference:
        f = _cast_outputs_to_64(f)
        fd = {}
        for name, scheme, order in [
            ("ref", "central", 4),
            ("c2", "central", 2),
            ("forward", "forward", 2),
            ("backward", "backward", 2),
        ]:
            fd[name] = get("fd", scheme=scheme, order=order).jvp(f, args, v)[1]
        out.update(ref=fd["ref"], forward=fd["forward"], backward=fd["backward"])
        out["err"] = jax.tree_util.tree_map(lambda a, b: jnp.abs(a - b), fd["ref"], fd["c2"])
    if "fwd" in modes:
        out["y_dot"] = engine.jvp(f, args, v)[1]
    if "rev" in modes:
        y, vjp_fn = engine.vjp(f, *args)
        u = (
            _random_like(key, y)
            if u is None
            else jax.tree_util.tree_map(lambda a, o: jnp.asarray(a, o.dtype), u, y)
        )
        out["u"], out["x_bar"] = u, vjp_fn(u)
    return out


def _kink_guard(forward: PyTree, backward: PyTree) -> None:
    """Raise NonDifferentiableError when one-sided derivatives disagree at the point."""
    for a, b in zip(
        jax.tree_util.tree_leaves(forward), jax.tree_util.tree_leaves(backward), strict=True
    ):
        a, b = a.ravel(), b.ravel()
        gap = np.abs(a - b) / np.maximum(1.0, np.abs(a) + np.abs(b))
        i = int(np.argmax(gap)) if gap.size else 0
        if gap.size and gap[i] > 1e-3:
            raise NonDifferentiableError(
                "check_grads: the function is not differentiable at (or within a "
                "finite-difference step of) this point along the random direction "
                f"(output element {i}: one-sided derivatives {a[i]:.6g} and "
                f"{b[i]:.6g}); check at a point away from kinks such as relu at 0"
            )


def _compare(ref, got, err, tol: _Tol, what: str, k: int, source: str = "fd") -> None:
    ref_leaves = jax.tree_util.tree_leaves(ref)
    got_leaves = jax.tree_util.tree_leaves(got)
    err_leaves = jax.tree_util.tree_leaves(err) if err is not None else [0.0] * len(ref_leaves)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(ref)[0]]
    for path, r, g, e in zip(paths, ref_leaves, got_leaves, err_leaves, strict=True):
        r = np.asarray(r, np.float64).ravel()
        g = np.asarray(g, np.float64).ravel()
        e = np.broadcast_to(np.asarray(e, np.float64), r.shape).ravel()
        denom = np.maximum(1.0, np.abs(r) + np.abs(g))
        rho = np.abs(r - g) / denom
        allowed = tol.rtol + (tol.atol + 10.0 * e) / denom
        bad = np.flatnonzero(~(rho <= allowed))
        if bad.size:
            i = int(bad[np.argmax(rho[bad] - allowed[bad])])
            raise GradCheckError(
                f"{what} check failed, direction {k}: output{path} element {i} expected "
                f"{r[i]:.10g}, obtained {g[i]:.10g} (rho {rho[i]:.3g} > tolerance "
                f"{allowed[i]:.3g}); {bad.size} of {r.size} elements wrong; reference: "
                + (
                    "central differences of order 4 in float64 at the default step"
                    if source == "fd"
                    else "the same derivative evaluated in float64"
                )
            )


@dataclass(frozen=True)
class TaylorResult:
    """Remainders ``|f(x + h v) - f(x) - h <g, v>|`` for decreasing ``h`` and their slope."""

    steps: np.ndarray
    remainders: np.ndarray
    slope: float

    @property
    def passed(self) -> bool:
        """True when the remainder shrinks like ``h^2`` (slope near 2)."""
        return bool(self.slope > 1.8)


def taylor_test(
    f: Callable, args: Sequence[Any], v: PyTree = None, *, method: str | None = None, seed: int = 0
) -> TaylorResult:
    """The Taylor remainder test of a scalar function's gradient; needs no step choice.

    Example:
        >>> import jax.numpy as jnp
        >>> from diffkit.testing import taylor_test
        >>> r = taylor_test(lambda x: jnp.sum(jnp.exp(x)), (jnp.ones(3),))
        >>> r.passed
        True
    """
    args = tuple(jax.tree_util.tree_map(jnp.asarray, a) for a in args)
    if v is None:
        v = _random_like(jax.random.PRNGKey(seed), args)
    engine = _Engine(method)
    with jax.enable_x64(True):
        args64, v64 = _to64(args), _to64(v)
        f64 = _cast_outputs_to_64(f)
        y, vjp_fn = engine.vjp(f64, *args64)
        if jnp.shape(y) != ():
            raise DiffkitError("taylor_test: the function must return a scalar")
        slope_g = _vdot(vjp_fn(jnp.ones_like(y)), v64)
        scale = max(max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(args64)), 1.0)
        steps = 0.1 * scale * 0.5 ** np.arange(12)
        y0 = float(y)
        rem = []
        for h in steps:
            moved = jax.tree_util.tree_map(lambda a, d, h=h: a + h * d, args64, v64)
            rem.append(abs(float(f64(*moved)) - y0 - h * slope_g))
    rem_arr = np.array(rem)
    floor = 1e3 * np.finfo(np.float64).eps * max(abs(y0), 1.0)
    usable = np.flatnonzero(rem_arr > floor)
    if usable.size < 2:
        return TaylorResult(steps, rem_arr, 2.0)  # remainder at rounding level: exact
    i = usable[-1]
    j = usable[-2]
    slope = float(np.log(rem_arr[j] / rem_arr[i]) / np.log(steps[j] / steps[i]))
    return TaylorResult(steps, rem_arr, slope)


def _taylor_check(f, args, v, engine: _Engine) -> None:
    result = taylor_test(f, args, v, method=engine.method)
    if not result.passed:
        raise GradCheckError(
            f"Taylor test failed ({engine.label}): the remainder f(x+hv) - f(x) - h<g,v> "
            f"shrinks like h^{result.slope:.2f}, not h^2: the gradient is wrong "
            f"(remainders {np.array2string(result.remainders[-4:], precision=3)})"
        )


# ------------------------------------------------------------------ helpers


def _random_like(key: Any, tree: PyTree) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [
        jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
        for k, leaf in zip(keys, leaves, strict=False)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def _to64(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.float64), tree)


def _cast_outputs_to_64(f: Callable) -> Callable:
    def f64(*xs: Any) -> Any:
        return jax.tree_util.tree_map(lambda y: jnp.asarray(y, dtype=jnp.float64), f(*xs))

    return f64


def _to_np(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _vdot(a: PyTree, b: PyTree, absolute: bool = False) -> float:
    """Sum of elementwise products over two pytrees, in float64 NumPy."""
    total = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        total += float(np.vdot(np.abs(x), np.abs(y)) if absolute else np.vdot(x, y))
    return total
