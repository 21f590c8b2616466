"""Tracing functions to jaxprs, and the one loop every jaxpr interpreter runs.

The hand-written differentiators (dual numbers, tape, symbolic) are interpreters over a
jaxpr's equations. They share, all here:

* :func:`trace` turns a flat function ``fun(*primals) -> (outs, aux)`` into a closed jaxpr
  whose outputs are ``outs + aux``;
* :func:`interpret` walks the equations in order, reading and writing an environment keyed by
  variable, and asks a per-interpreter ``handle(eqn, invals) -> outvals`` for each one;
* :class:`Interpreter` is that handler, the same dispatch for every interpreter: an equation
  with no active input is evaluated; a call (``jit``, ``remat2``, ...) is inlined, keeping the
  call site for errors; control flow and library authors' custom rules (``custom_jvp_call``,
  ``custom_vjp_call``, ``custom_linear_solve``) go to the interpreter's own handlers; an
  equation with only integer or boolean outputs is evaluated; everything else is a row of the
  interpreter's rule table, or the one error of :func:`unsupported`;
* the custom rules as plain jaxprs (:func:`custom_jvp_rule`, :func:`custom_vjp_forward`,
  :func:`custom_vjp_backward`), so each interpreter applies them without JAX's internals.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jax.interpreters import ad

from diffkit._core.errors import DiffkitError, UnsupportedPrimitiveError

__all__ = [
    "CUSTOM",
    "Interpreter",
    "Traced",
    "carry_mask",
    "custom_jvp_rule",
    "custom_vjp_backward",
    "custom_vjp_forward",
    "depends",
    "evaluate",
    "inner_jaxpr",
    "interpret",
    "is_float",
    "located",
    "registered",
    "registered_jvp",
    "registered_transpose",
    "source_line",
    "split_solve",
    "symbolic_zeros",
    "trace",
    "transposable",
    "unsupported",
    "user_site",
    "where_lanes",
    "zero_tangent",
]

Handler = Callable[[Any, list[Any]], Sequence[Any]]

#: Call-like primitives and the parameter that holds the jaxpr they call: their meaning is
#: the called jaxpr's, so interpreters inline them.
CALL_PARAMS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",  # jax.checkpoint / flax's nn.remat: what to save is a cost, not a meaning
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
    "composite": "jaxpr",  # lax.composite: a named decomposition
    "custom_vmap_call": "call",  # jax.custom_batching: the rule is about batching only
}

#: Primitives that carry a library author's derivative rule: interpreters must apply the rule,
#: never differentiate the primal body (which may be numerically unsafe, or a different
#: function altogether, as in a straight-through estimator).
CUSTOM = ("custom_jvp_call", "custom_vjp_call", "custom_linear_solve")


@dataclass(frozen=True)
class Traced:
    """A traced flat function: ``closed`` computes ``outs + aux`` from the primals."""

    closed: Any  # jax.extend.core.ClosedJaxpr
    n_outs: int
    n_aux: int


def trace(
    fun: Callable[..., tuple[tuple[Any, ...], tuple[Any, ...]]], primals: Sequence[Any]
) -> Traced:
    """Trace ``fun(*primals) -> (outs, aux)`` to a closed jaxpr with outputs ``outs + aux``.

    Example:
        >>> import jax.numpy as jnp
        >>> t = trace(lambda x: ((jnp.sin(x),), ()), (jnp.ones(2),))
        >>> [e.primitive.name for e in t.closed.jaxpr.eqns], t.n_outs
        (['sin'], 1)
    """
    sizes: list[int] = []

    def flat(*xs: Any) -> list[Any]:
        outs, aux = fun(*xs)
        sizes[:] = [len(outs), len(aux)]
        return [*outs, *aux]

    try:
        closed = jax.make_jaxpr(flat)(*primals)
    except jax.errors.ConcretizationTypeError as exc:  # a Python if/bool/int on a traced value
        raise DiffkitError(_concrete_message(exc)) from None
    return Traced(closed, sizes[0], sizes[1])


def _concrete_message(exc: Exception) -> str:
    """One line for Python control flow on a traced value, naming the user's line."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [
        f for f in frames if _library(f.filename) is None and not f.filename.startswith("<frozen")
    ]
    where = (
        f"{user[-1].filename.split('/')[-1]}:{user[-1].lineno} ({user[-1].name})"
        if user
        else "your function"
    )
    return (
        f"Python control flow on a traced value at {where}: {type(exc).__name__} (diffkit traces "
        "the function once, as jax.jit does); use jnp.where or jax.lax.cond instead of if, or "
        "pass that value as a non-differentiated argument"
    )


def interpret(closed: Any, args: Sequence[Any], handle: Handler) -> list[Any]:
    """Evaluate a closed jaxpr, letting ``handle(eqn, invals)`` compute each equation.

    ``args`` may be any values the handler understands (arrays, dual numbers, SymPy arrays);
    constants and literals reach the handler as plain arrays, as the jaxpr holds them.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(lambda x: jnp.cos(x) * 2.0)(1.0)
        >>> run = lambda eqn, invals: eqn.primitive.bind(*invals, **eqn.params)
        >>> round(float(interpret(closed, [0.0], lambda e, v: _as_list(e, run(e, v)))[0]), 3)
        2.0
    """
    jaxpr = closed.jaxpr
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, closed.consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        outvals = handle(eqn, [read(v) for v in eqn.invars])
        for var, value in zip(eqn.outvars, outvals, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _as_list(eqn: Any, result: Any) -> list[Any]:
    """``primitive.bind`` returns a list for multiple-result primitives, else one value."""
    return list(result) if eqn.primitive.multiple_results else [result]


def evaluate(eqn: Any, invals: Sequence[Any]) -> list[Any]:
    """Evaluate one equation on ordinary values (arrays or tracers), as a list of outputs.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> eqn = jax.make_jaxpr(jnp.sin)(0.0).jaxpr.eqns[0]
        >>> [float(v) for v in evaluate(eqn, [0.0])]
        [0.0]
    """
    params = eqn.primitive.get_bind_params(eqn.params)
    return _as_list(eqn, eqn.primitive.bind(*invals, **params))


def is_float(x: Any) -> bool:
    """Whether a value (or an abstract value) is floating point: what carries derivatives."""
    dtype = getattr(x, "dtype", None)
    return jnp.issubdtype(dtype if dtype is not None else jnp.result_type(x), jnp.inexact)


def depends(jaxpr: Any, mask: Sequence[bool]) -> list[bool]:
    """Which outputs of ``jaxpr`` depend on the inputs flagged in ``mask`` (conservatively:
    an equation's outputs depend on its inputs), and are floating point.

    Example:
        >>> import jax
        >>> j = jax.make_jaxpr(lambda a, b: (a * 2.0, b + 1.0, a > 0))(1.0, 2.0).jaxpr
        >>> depends(j, [True, False])
        [True, False, False]
    """
    dep = {v for v, m in zip(jaxpr.invars, mask, strict=True) if m}
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jex_core.Literal) and v in dep for v in eqn.invars):
            dep.update(eqn.outvars)
    return [
        not isinstance(v, jex_core.Literal) and v in dep and is_float(v.aval) for v in jaxpr.outvars
    ]


def carry_mask(
    body: Any, consts: Sequence[bool], carry: Sequence[bool], xs: Sequence[bool] = ()
) -> list[bool]:
    """Which loop carries carry derivatives: a fixed point of :func:`depends` over the body
    ``(consts, carry, xs) -> (carry, ...)`` (a carry becomes active once an active value
    flows into it).

    Example:
        >>> import jax
        >>> body = jax.make_jaxpr(lambda w, a, b: (a, b * w))(1.0, 1.0, 1.0).jaxpr
        >>> carry_mask(body, [True], [False, False])
        [False, True]
    """
    mask = [bool(m) for m in carry]
    while True:
        out = depends(body, [*consts, *mask, *xs])[: len(mask)]
        new = [a or b for a, b in zip(mask, out, strict=True)]
        if new == mask:
            return mask
        mask = new


def where_lanes(running: Any, new: Any, old: Any) -> Any:
    """``new`` where ``running`` (over the leading axes), else ``old``: a batched
    ``while_loop``'s carry, its finished lanes kept (dual and Taylor mode both need it).

    Example:
        >>> where_lanes(jnp.array([True, False]), jnp.ones((2, 3)), jnp.zeros((2, 3))).sum()
        Array(3., dtype=float32)
    """
    return jnp.where(
        running.reshape(running.shape + (1,) * (jnp.ndim(new) - running.ndim)), new, old
    )


def inner_jaxpr(eqn: Any) -> Any | None:
    """The closed sub-jaxpr a call-like equation calls, or ``None`` for other primitives
    (custom rules, :data:`CUSTOM`, are not calls: their rule is part of their meaning).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> eqn = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).jaxpr.eqns[0]
        >>> [e.primitive.name for e in inner_jaxpr(eqn).jaxpr.eqns]
        ['sin']
    """
    key = CALL_PARAMS.get(eqn.primitive.name)
    if key is None or key not in eqn.params:
        return None
    return closed_jaxpr(eqn.params[key])


def placed(eqn: Any, inner: Any) -> Any:
    """``inner``, the body of the call ``eqn``, with the call's input and output shardings
    (``jax.jit(f, in_shardings=..., out_shardings=...)``) as sharding constraints: inlining
    the body would drop them, and the derivative would not be laid out as JAX's is. The
    constraints' rows carry the layout to tangents and cotangents."""
    ins = eqn.params.get("in_shardings", ())
    outs = eqn.params.get("out_shardings", ())
    if not any(isinstance(s, jax.sharding.Sharding) for s in (*ins, *outs)):
        return inner

    def place(x: Any, sharding: Any) -> Any:
        if isinstance(sharding, jax.sharding.Sharding):
            return jax.lax.with_sharding_constraint(x, sharding)
        return x

    def body(*args: Any) -> list[Any]:
        placed = [place(a, s) for a, s in zip(args, ins, strict=True)]
        ys = jex_core.jaxpr_as_fun(inner)(*placed)
        return [place(y, s) for y, s in zip(ys, outs, strict=True)]

    shapes = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
    return jax.make_jaxpr(body)(*shapes)


def closed_jaxpr(sub: Any, consts: Sequence[Any] = ()) -> Any:
    """``sub`` as a ClosedJaxpr (a plain Jaxpr is closed over ``consts``)."""
    if isinstance(sub, jex_core.ClosedJaxpr):
        return sub
    return jex_core.ClosedJaxpr(sub, list(consts))


# ------------------------------------------------------------ custom rules


def custom_jvp_rule(eqn: Any, in_zeros: Sequence[bool] | None = None) -> tuple[Any, list[bool]]:
    """A ``custom_jvp_call``'s JVP rule as a closed jaxpr ``(*primals, *tangents) ->
    (*outs, *out_tangents)`` over the call's non-constant inputs (JAX gives its hoisted
    constants, the first ``num_consts`` inputs, no tangent), and which output tangents the rule
    gave as symbolic zeros: those are left out of ``out_tangents``, as the tangents of inputs
    flagged in ``in_zeros`` (symbolic zeros, for rules that ask for them) are left out of
    ``tangents``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> eqn = jax.make_jaxpr(jax.nn.relu)(0.0).jaxpr.eqns[0]
        >>> eqn = inner_jaxpr(eqn).jaxpr.eqns[0] if inner_jaxpr(eqn) else eqn
        >>> rule, out_zeros = custom_jvp_rule(eqn)
        >>> [float(v) for v in jax.core.eval_jaxpr(rule.jaxpr, rule.consts, 0.0, 1.0)], out_zeros
        ([0.0, 0.0], [False])
    """
    n = len(eqn.invars) - eqn.params["num_consts"]
    zeros = [False] * n if in_zeros is None else list(in_zeros)
    jaxpr, consts, out_zeros = eqn.params["jvp_jaxpr_fun"].call_wrapped(*zeros)
    return closed_jaxpr(jaxpr, consts), [bool(z) for z in out_zeros]


def symbolic_zeros(eqn: Any, active: Sequence[bool]) -> list[bool]:
    """Which of a ``custom_jvp_call``'s non-constant inputs get a symbolic-zero tangent: the
    inactive ones, where the rule asked for symbolic zeros (``symbolic_zeros=True``, as
    equinox's rules do); none otherwise (JAX instantiates them as zeros)."""
    asked = bool(eqn.params.get("symbolic_zeros", False))
    return [asked and not a for a in active[eqn.params["num_consts"] :]]


def custom_vjp_forward(eqn: Any, xs: Sequence[Any], needs: Sequence[bool]) -> tuple[list, list]:
    """Run a ``custom_vjp_call``'s ``fwd`` on the primal values ``xs``: ``(outs, residuals)``.
    ``needs`` flags the inputs whose cotangents will be asked for; as in JAX, a rule cannot
    give the cotangent of a value the function closes over."""
    p = eqn.params
    nc = p["num_consts"]
    if any(needs[:nc]):
        raise UnsupportedPrimitiveError(
            f"custom_vjp function at {user_site(eqn)} closes over a value being differentiated; "
            "its rule gives cotangents for its explicit arguments only: pass that value as an "
            "argument (as JAX requires)"
        )
    fwd, consts = p["fwd_jaxpr_thunk"].call_wrapped(*needs[nc:])
    found = jex_core.jaxpr_as_fun(closed_jaxpr(fwd, consts))(*xs[nc:])
    _, res_tree, forwarded = p["out_trees"]()
    n_res = res_tree.num_leaves - sum(f is not None for f in forwarded)
    made = iter(found[:n_res])
    res = [next(made) if f is None else jnp.asarray(xs[f]) for f in forwarded]  # no NumPy
    return list(found[n_res:]), res


def zero_tangent(x: Any) -> Any:
    """The zero tangent (or cotangent) of ``x``: zeros, or ``float0`` for integer values."""
    if is_float(x):
        return jnp.zeros_like(x)
    return np.zeros(jnp.shape(x), jax.dtypes.float0)


def split_solve(xs: Sequence[Any], eqn: Any) -> tuple[list[list[Any]], list[Any]]:
    """A ``custom_linear_solve``'s inputs: the constants of (matvec, vecmat, solve,
    transpose_solve), then the right-hand side ``b``."""
    groups, start = [], 0
    for n in eqn.params["const_lengths"]:
        groups.append(list(xs[start : start + n]))
        start += n
    return groups, list(xs[start:])


def custom_vjp_backward(eqn: Any, res: Sequence[Any], y_bars: Sequence[Any]) -> list:
    """Apply a ``custom_vjp_call``'s ``bwd`` rule: the cotangents of every input (``None``
    for the constants and where the rule gives none) from the outputs' (zeros instantiated)."""
    cts = eqn.params["bwd"].call_wrapped(*res, *y_bars)
    nc = eqn.params["num_consts"]
    cts = [None if type(ct).__name__ in ("Zero", "SymbolicZero") else ct for ct in cts]
    return [None] * nc + cts[len(cts) - (len(eqn.invars) - nc) :]


# ------------------------------------------------------------ rules registered with JAX


def registered(eqn: Any) -> bool:
    """Whether ``eqn``'s primitive has a JVP rule in JAX's own table: JAX's primitives, and
    those libraries register (lineax's ``linear_solve``, equinox's ``nondifferentiable``, ...)."""
    return eqn.primitive in ad.primitive_jvps


def transposable(eqn: Any) -> bool:
    """Whether ``eqn``'s primitive has a transpose rule in JAX's table (it is linear)."""
    return eqn.primitive in ad.primitive_transposes


def _absent(x: Any) -> bool:
    return type(x).__name__ in ("Zero", "SymbolicZero")


def registered_jvp(eqn: Any, xs: Sequence[Any], x_dots: Sequence[Any]) -> tuple[list, list]:
    """Push tangents through the JVP rule registered with JAX for ``eqn``'s primitive:
    ``(outputs, output tangents)``, ``None`` for an absent tangent, in and out (a symbolic
    zero to the rule, as JAX passes it).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> eqn = jax.make_jaxpr(jnp.sin)(0.0).jaxpr.eqns[0]
        >>> ys, y_dots = registered_jvp(eqn, [0.0], [2.0])
        >>> float(ys[0]), float(y_dots[0])
        (0.0, 2.0)
    """
    tangents = tuple(  # tuples, as JAX passes them (rules may vmap over their structure)
        ad.Zero(v.aval.to_tangent_aval()) if t is None else t
        for v, t in zip(eqn.invars, x_dots, strict=True)
    )
    primals = tuple(_arrays(eqn, xs))
    with _foreign(eqn, "JVP"):
        ys, y_dots = ad.primitive_jvps[eqn.primitive](primals, tangents, **eqn.params)
    if not eqn.primitive.multiple_results:
        ys, y_dots = [ys], [y_dots]
    return list(ys), [None if _absent(t) else t for t in y_dots]


def registered_transpose(
    eqn: Any, xs: Sequence[Any], linear: Sequence[bool], y_bars: Sequence[Any]
) -> list[Any]:
    """Pull cotangents back through the transpose rule registered with JAX for ``eqn``'s
    (linear) primitive: the cotangents of the ``linear`` inputs, ``None`` elsewhere and where
    the rule gives none. ``y_bars`` holds ``None`` for an absent output cotangent."""
    args = [
        ad.UndefinedPrimal(v.aval) if lin else x
        for v, x, lin in zip(eqn.invars, _arrays(eqn, xs), linear, strict=True)
    ]
    cts = [
        ad.Zero(v.aval.to_ct_aval()) if b is None else b
        for v, b in zip(eqn.outvars, y_bars, strict=True)
    ]
    with _foreign(eqn, "transpose"):
        out = ad.primitive_transposes[eqn.primitive](
            cts if eqn.primitive.multiple_results else cts[0], *args, **eqn.params
        )
    if not isinstance(out, list | tuple):  # a bare Zero (equinox's rules return the class)
        out = [None] * len(args)
    return [
        None if b is None or _absent(b) or not lin else b
        for b, lin in zip(out, linear, strict=True)
    ]


#: DIFFKIT_DEBUG=1 lets a library rule's own error through, traceback and all
_DEBUG = os.environ.get("DIFFKIT_DEBUG", "") not in ("", "0")


def _arrays(eqn: Any, xs: Sequence[Any]) -> list[Any]:
    """``xs`` as arrays: a literal (a Python or NumPy scalar in the jaxpr) becomes one of its
    aval's dtype, as a library's rule sees it under JAX (equinox tells arrays from static
    fields by type, and takes a float literal for a static one)."""
    return [
        x if isinstance(x, jax.Array | np.ndarray) else jnp.asarray(x, v.aval.dtype)
        for v, x in zip(eqn.invars, xs, strict=True)
    ]


@contextlib.contextmanager
def _foreign(eqn: Any, which: str) -> Iterator[None]:
    """A rule someone else registered failed: one line naming the primitive, the rule and the
    reason (the rule's own last line), never the raw error from inside it."""
    try:
        yield
    except UnsupportedPrimitiveError:
        raise
    except Exception as error:  # a library's rule: anything may come out of it
        if _DEBUG:
            raise
        lines = [line for line in str(error).strip().splitlines() if line.strip(" ()[]{}")]
        reason = lines[-1].strip() if lines else type(error).__name__
        raise UnsupportedPrimitiveError(
            f"the {which} rule JAX holds for primitive '{eqn.primitive.name}' failed: "
            f"{type(error).__name__}: {reason}"
        ) from None


# ------------------------------------------------------------ the dispatch


class Interpreter:
    """The per-equation dispatch every hand-written interpreter shares; a subclass is its
    value type plus :meth:`apply` (one rule row), and names its own handlers for control
    flow and custom rules in ``special``.

    Example (an interpreter that counts how often each rule row is applied):
        >>> import jax, jax.numpy as jnp
        >>> class Count(Interpreter):
        ...     who, rules, special = "count", {"sin": "a row", "mul": "a row"}, {}
        ...     def __init__(self): self.seen = []
        ...     def active(self, v): return True
        ...     def primal(self, v): return v
        ...     def apply(self, eqn, invals, xs, rule):
        ...         self.seen.append(eqn.primitive.name)
        ...         return evaluate(eqn, xs)
        >>> c = Count()
        >>> out = c.run(jax.make_jaxpr(lambda x: jnp.sin(x) * x)(1.0), [1.0])
        >>> c.seen
        ['sin', 'mul']
    """

    who: str
    rules: Any  # Mapping[str, row]: the rule table this interpreter reads
    #: ``name -> handler(interpreter, eqn, invals, site) -> outvals``: control flow, custom rules
    special: Any
    #: ``name -> reason`` for the primitives this interpreter refuses (shown in the error)
    refused: Mapping[str, str] = {}

    def active(self, v: Any) -> bool:
        """Whether ``v`` carries a derivative (a dual number, a tracked value, ...)."""
        raise NotImplementedError

    def primal(self, v: Any) -> Any:
        """The plain value of ``v``."""
        raise NotImplementedError

    def apply(self, eqn: Any, invals: list[Any], xs: list[Any], rule: Any) -> list[Any]:
        """Evaluate ``eqn`` by its rule row (``xs``: the primal values of ``invals``)."""
        raise NotImplementedError

    def foreign(self, eqn: Any, invals: list[Any], xs: list[Any], site: Any) -> list[Any]:
        """Evaluate ``eqn``, a primitive with no row, by the rules registered for it with JAX
        (:func:`registered_jvp`, :func:`registered_transpose`)."""
        raise NotImplementedError

    def run(self, closed: Any, args: Sequence[Any], site: Any = None) -> list[Any]:
        """Interpret ``closed`` on ``args`` (``site``: the call equation it was inlined from)."""
        return interpret(closed, args, lambda eqn, invals: self.handle(eqn, invals, site))

    def handle(self, eqn: Any, invals: list[Any], site: Any = None) -> list[Any]:
        """One equation: evaluated, inlined, handled specially, or by its rule row."""
        if not any(self.active(v) for v in invals):
            return evaluate(eqn, invals)
        inner = inner_jaxpr(eqn)
        if inner is not None:
            return self.run(placed(eqn, inner), invals, site or eqn)
        name = eqn.primitive.name
        if name in self.special:
            return self.special[name](self, eqn, invals, site)
        xs = [self.primal(v) for v in invals]
        if not any(is_float(v.aval) for v in eqn.outvars):
            return evaluate(eqn, xs)  # comparisons, argmax, ...: nothing to differentiate
        rule = self.rules.get(name)
        if rule is None and name not in self.refused and registered(eqn):
            with located(self.who, eqn, site):  # a library's primitive, by its JAX rules
                return self.foreign(eqn, invals, xs, site)
        if rule is None:
            raise unsupported(self.who, eqn, self.refused, site)
        if getattr(rule, "expand", None) is not None:  # differentiate the program it stands for
            program = jax.make_jaxpr(lambda *a: rule.expand(*a, **eqn.params))(*xs)
            return self.run(program, invals, site or eqn)
        with located(self.who, eqn, site):
            return self.apply(eqn, invals, xs, rule)


@contextlib.contextmanager
def located(who: str, eqn: Any, site: Any = None) -> Iterator[None]:
    """Re-raise a rule's refusal (an :class:`UnsupportedPrimitiveError` it raised itself)
    with the differentiator's name and the user's line, which the rule cannot know."""
    try:
        yield
    except UnsupportedPrimitiveError as error:
        if " (at " in str(error):
            raise
        raise UnsupportedPrimitiveError(f"{who}: {error} (at {user_site(eqn, site)})") from None


def _frames(eqn: Any) -> list[Any]:
    """The Python frames that traced ``eqn``, innermost first (empty if JAX kept none)."""
    tb = getattr(getattr(eqn, "source_info", None), "traceback", None)
    return list(getattr(tb, "frames", None) or [])


def _library(path: str) -> str | None:
    """``jax/numpy/linalg.py`` for an installed library's file; ``None`` for the user's."""
    parts = path.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return "/".join(p for p in rest if p != "_src")
    if "diffkit" in parts[:-1]:
        return "/".join(parts[parts.index("diffkit") :])
    return None


def user_site(eqn: Any, site: Any = None) -> str:
    """Where the user's code made ``eqn``: the innermost frame outside installed libraries
    and diffkit, then the library function it called, e.g. ``model.py:12 (loss), in
    jax/numpy/linalg.py:solve``. Falls back to the call ``site`` an inlined body came from.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> def loss(x):
        ...     return jnp.sum(x * x)
        >>> eqn = jax.make_jaxpr(loss)(jnp.ones(2)).jaxpr.eqns[1]
        >>> eqn.primitive.name, user_site(eqn)  # doctest: +ELLIPSIS
        ('reduce_sum', '<doctest ...>:2 (loss), in jax/numpy/reductions.py:sum')
    """
    frames = _frames(eqn)
    for i, f in enumerate(frames):
        if _library(f.file_name) is None and not f.file_name.startswith("<frozen"):
            here = f"{f.file_name.split('/')[-1]}:{f.line_num} ({f.function_name})"
            inner = [g for g in frames[:i] if _library(g.file_name) not in (None, "")]
            called = [g for g in inner if not (_library(g.file_name) or "").startswith(_NOT_CALLED)]
            via = called[-1] if called else None
            if via is not None:
                name = via.function_name.split(".")[-1]
                return f"{here}, in {_library(via.file_name)}:{name}"
            return here
    called = [g for g in frames if not (_library(g.file_name) or "").startswith(_NOT_CALLED)]
    function = (
        f"{_library(called[-1].file_name)}:{called[-1].function_name.split('.')[-1]}"
        if called
        else None
    )
    if site is not None and site is not eqn:  # inlined from a jitted call: the user's line
        outer = user_site(site)  # is the call's, the library function the body's own
        return outer if function is None else f"{outer.split(', in ')[0]}, in {function}"
    if function is not None:  # JAX kept no frame of the user's (a jitted library function)
        return function
    return source_line(eqn) or "<unknown location>"


# JAX's own machinery (tracing, dispatch) and diffkit: never the function a user called
_NOT_CALLED = (
    "diffkit/",
    "jax/interpreters",
    "jax/core.py",
    "jax/pjit.py",
    "jax/api.py",
    "jax/traceback_util.py",
    "jax/source_info_util.py",
    "jax/linear_util.py",
    "jax/custom_derivatives.py",
    "jax/numpy/util.py",
    "jax/numpy/array_methods.py",
    "jax/numpy/ufunc_api.py",
    "contextlib.py",
    # wrappers around the function a user called (equinox's filter_jit, filter_custom_vjp,
    # its primitives' bind, jaxtyping's checks): the function inside them is named instead
    "equinox/_jit.py",
    "equinox/_ad.py",
    "equinox/_module",
    "equinox/_vmap_pmap.py",
    "equinox/internal/_primitive.py",
    "jaxtyping/",
)


def source_line(eqn: Any) -> str:
    """The source location JAX records for ``eqn``, e.g. ``model.py:12:8 (loss)``."""
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # source info is best-effort
        return "<unknown location>"


def _rule_scope(eqn: Any) -> str | None:
    """The primitive whose derivative rule emitted ``eqn`` (rules run under
    ``jax.named_scope("d/<primitive>")``), for higher-order derivatives."""
    stack = str(getattr(eqn.source_info, "name_stack", ""))
    found = [part[2:] for part in stack.split("/") if part.startswith("d_")]
    return found[-1] if found else None


def unsupported(
    who: str, eqn: Any, reasons: Mapping[str, str] | None = None, site: Any = None
) -> UnsupportedPrimitiveError:
    """The one short error for a primitive without a rule (returned, for the caller to raise):
    which differentiator, which primitive, why (its reason in ``reasons``, the interpreter's
    refusal table, or the derivative that needed it), the user's own line, and what to do.
    ``site`` is the user's call equation an inlined body came from.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> eqn = jax.make_jaxpr(jnp.sin)(1.0).jaxpr.eqns[0]
        >>> str(unsupported("dual", eqn)).split(" (at ")[0]
        "dual: no rule for primitive 'sin'"
    """

    name = eqn.primitive.name
    needed_by = _rule_scope(eqn)
    reasons = reasons or {}
    why = f"; {reasons[name]}" if name in reasons else ""
    what = f"no rule for primitive '{name}'"
    if needed_by is not None:
        what += f", which the derivative of '{needed_by}' needs (a higher-order derivative)"
    if not why and not registered(eqn):
        why = "; JAX has no derivative rule for it either"
        advice = "; wrap it in jax.custom_jvp, or add a rule (diffkit.extend)"
    elif "custom_jvp" in why:
        advice = ""
    else:
        advice = "; use jax-fwd or jax-rev, or add a rule (diffkit.extend)"
    return UnsupportedPrimitiveError(f"{who}: {what} (at {user_site(eqn, site)}){why}{advice}")
