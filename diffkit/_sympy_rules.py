"""JAX primitives as SymPy (or SymEngine) expressions: the symbolic interpreter's rule table.

Values are NumPy arrays. A value that depends on the inputs is an ``object`` array of
expressions, one per element; anything else stays a plain numeric array, and an equation whose
inputs are all numeric is simply evaluated (constant folding), so integer index arithmetic,
``iota`` and random keys need no rules.

Three kinds of rule, each a row of a table:

* elementwise (``ELEMENTWISE``): ``f(S, params, *scalars) -> expression``, applied per element;
* data movement (``STRUCTURAL``): reshapes, slices, gathers, ... are run by JAX itself on arrays
  of *positions*, and the positions pick the expressions -- one mechanism for every primitive
  that only moves elements;
* sums (``REDUCTIONS``, ``CUMULATIVE``, ``dot_general``): n-ary ``Add`` / ``Max`` / ``Mul``.

``S`` is a backend namespace (:func:`backend`): the same rows build SymPy or SymEngine
expressions. The backend also differentiates (SymPy: a chain rule memoised over the shared
expression graph, with SymPy's own per-function derivatives) and eliminates common
subexpressions.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from diffkit._errors import DiffkitError, UnsupportedPrimitiveError
from diffkit._jaxpr import inner_jaxpr, interpret, unsupported

__all__ = ["ELEMENTWISE", "STRUCTURAL", "Context", "backend", "dag_nodes", "handler", "tree_ops"]

WHO = "symbolic"

# ------------------------------------------------------------------ backends


def backend(name: str) -> types.SimpleNamespace:
    """The expression namespace ``S`` for ``"sympy"`` or ``"symengine"``.

    Example:
        >>> S = backend("sympy")
        >>> x = S.Symbol("x")
        >>> S.diff(S.sin(x) * x, x, {})
        x*cos(x) + sin(x)
    """
    if name == "sympy":
        return _sympy()
    if name == "symengine":
        return _symengine()
    raise DiffkitError(f"{WHO}: unknown backend {name!r}; use 'sympy' or 'symengine'")


_FUNCS = (
    "exp log sin cos tan tanh sinh cosh asin acos atan asinh acosh atanh atan2 erf sqrt "
    "Add Mul Piecewise Lt Le Gt Ge Eq Ne And Or Not true false nan oo Integer"
).split()


@functools.cache
def _sympy() -> types.SimpleNamespace:
    import sympy

    def cse(exprs: list[Any], prefix: str):
        return sympy.cse(exprs, symbols=sympy.numbered_symbols(prefix), order="none")

    return types.SimpleNamespace(
        **{f: getattr(sympy, f) for f in _FUNCS},
        name="sympy",
        Symbol=lambda name: sympy.Symbol(name, real=True),
        Float=sympy.Float,
        Max=sympy.Max,
        Min=sympy.Min,
        Abs=sympy.Abs,
        sign=sympy.sign,
        diff=_sympy_chain_rule,
        plain_diff=lambda e, x, memo: sympy.diff(e, x),
        cse=cse,
        to_sympy=lambda e: e,
        simplify=sympy.simplify,
    )


@functools.cache
def _symengine() -> types.SimpleNamespace:
    try:
        import symengine as se
    except ImportError:
        raise DiffkitError(
            f"{WHO}: backend='symengine' needs the symengine package (pip install symengine, "
            "or pip install 'diffkit[symengine]'); or use backend='sympy'"
        ) from None
    import sympy

    # SymEngine cannot differentiate max/min/abs/sign: write them as Piecewise, whose
    # derivative it knows (ties take the mean, like JAX).
    def max2(a: Any, b: Any) -> Any:
        return se.Piecewise((a, se.Gt(a, b)), (b, se.Lt(a, b)), ((a + b) / 2, True))

    def min2(a: Any, b: Any) -> Any:
        return se.Piecewise((a, se.Lt(a, b)), (b, se.Gt(a, b)), ((a + b) / 2, True))

    def sign(a: Any) -> Any:
        return se.Piecewise((1, se.Gt(a, 0)), (-1, se.Lt(a, 0)), (0, True))

    def cse(exprs: list[Any], prefix: str):
        repl, reduced = se.cse(exprs)
        names = {s: se.Symbol(f"{prefix}{i}") for i, (s, _) in enumerate(repl)}
        rename = lambda e: e.xreplace(names) if names else e  # noqa: E731
        return [(names[s], rename(r)) for s, r in repl], [rename(e) for e in reduced]

    return types.SimpleNamespace(
        **{f: getattr(se, f) for f in _FUNCS},
        name="symengine",
        Symbol=se.Symbol,
        Float=se.RealDouble,
        Max=lambda *a: functools.reduce(max2, a),
        Min=lambda *a: functools.reduce(min2, a),
        Abs=lambda a: a * sign(a),
        sign=sign,
        diff=lambda e, x, memo: e.diff(x),
        plain_diff=lambda e, x, memo: e.diff(x),
        cse=cse,
        to_sympy=sympy.sympify,
        simplify=None,
    )


def number(S: Any, v: Any) -> Any:
    """A numeric scalar as an exact backend number (integral floats become integers)."""
    if isinstance(v, bool | np.bool_):
        return S.true if v else S.false
    if isinstance(v, int | np.integer):
        return S.Integer(int(v))
    f = float(v)
    if math.isnan(f):
        return S.nan
    if math.isinf(f):
        return S.oo if f > 0 else -S.oo
    if f.is_integer() and abs(f) < 2**53:
        return S.Integer(int(f))
    return S.Float(f)


def _sympy_chain_rule(expr: Any, x: Any, memo: dict[Any, Any]) -> Any:
    """``d expr / d x``: SymPy's rules for each node, the chain rule applied once per distinct
    subexpression (``memo`` is shared across calls with the same ``x``). ``sympy.diff`` walks
    the expression as a tree, which is exponential on the shared graphs programs produce."""
    import sympy

    def children(e: Any) -> tuple[Any, ...]:
        if isinstance(e, sympy.Piecewise):
            return tuple(a.expr for a in e.args)
        return e.args if isinstance(e, sympy.Expr) and e != x else ()

    def derivative(e: Any, args: tuple[Any, ...], d: list[Any]) -> Any:
        if e == x:
            return sympy.S.One
        if not any(d) or isinstance(e, sympy.Heaviside | sympy.sign):  # piecewise constant
            return sympy.S.Zero
        if isinstance(e, sympy.Add):
            return sympy.Add(*d)
        if isinstance(e, sympy.Mul):
            return sympy.Add(*(sympy.Mul(*args[:i], di, *args[i + 1 :]) for i, di in _nz(d)))
        if isinstance(e, sympy.Pow):
            (b, p), (db, dp) = args, d
            return p * b ** (p - 1) * db + (e * sympy.log(b) * dp if dp else 0)
        if isinstance(e, sympy.Piecewise):
            return sympy.Piecewise(*((di, a.cond) for di, a in zip(d, e.args, strict=True)))
        if hasattr(e, "fdiff"):  # functions, Max, Min, Abs, ...
            return sympy.Add(*(e.fdiff(i + 1) * di for i, di in _nz(d)))
        return sympy.diff(e, x)

    _bottom_up([expr], memo, children, derivative)
    return memo[expr]


def _bottom_up(
    roots: Iterable[Any],
    memo: dict[Any, Any],
    children: Callable[[Any], tuple[Any, ...]],
    combine: Callable[[Any, tuple[Any, ...], list[Any]], Any],
) -> None:
    """``memo[e] = combine(e, children(e), [memo[c] for c in children(e)])`` for every node
    reachable from ``roots`` and not yet in ``memo``, children first, each distinct node once.
    Iterative: the graphs of programs are too deep for recursion."""
    for root in roots:
        stack = [root]
        while stack:
            e = stack[-1]
            if e in memo:
                stack.pop()
                continue
            kids = children(e)
            pending = [a for a in kids if a not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            memo[e] = combine(e, kids, [memo[a] for a in kids])


def _nz(ds: Sequence[Any]) -> Iterable[tuple[int, Any]]:
    return ((i, d) for i, d in enumerate(ds) if d != 0)


# ---------------------------------------------------------- expression sizes


def _ops(e: Any) -> int:
    """Operations one node stands for: an n-ary node with k arguments is k - 1 binary
    operations, a unary one is 1, a symbol or number 0."""
    k = len(e.args)
    return max(k - 1, 1) if k else 0


def tree_ops(exprs: Iterable[Any]) -> int:
    """Operations in the expressions written out as trees (shared parts counted each time
    they occur), counted by visiting each distinct subexpression once.

    Example:
        >>> S = backend("sympy")
        >>> x, y = S.Symbol("x"), S.Symbol("y")
        >>> tree_ops([S.sin(x * y) + x])  # add, sin, mul
        3
    """
    memo: dict[Any, int] = {}
    roots = list(exprs)
    _bottom_up(roots, memo, lambda e: e.args, lambda e, args, ops: _ops(e) + sum(ops))
    return sum(memo[r] for r in roots)


def dag_nodes(exprs: Iterable[Any], seen: set[Any] | None = None) -> int:
    """Distinct subexpressions (symbols and numbers included) reachable from ``exprs``; with
    ``seen``, only those not seen before are counted (and added to it).

    Example:
        >>> S = backend("sympy")
        >>> x, y = S.Symbol("x"), S.Symbol("y")
        >>> dag_nodes([S.sin(x * y) + x])  # add, sin, mul, x, y
        5
    """
    seen = set() if seen is None else seen
    before = len(seen)
    stack = [e for e in exprs if e not in seen]
    while stack:
        e = stack.pop()
        if e not in seen:
            seen.add(e)
            stack.extend(a for a in e.args if a not in seen)
    return len(seen) - before


# ------------------------------------------------------------ the interpreter


@dataclass
class Context:
    """What one symbolic evaluation carries: the backend, stopped-gradient definitions
    (fresh symbols standing for values that must not be differentiated), and a hook
    called after every equation (budgets)."""

    S: Any
    after: Callable[[list[Any]], None] = lambda outs: None
    stops: list[tuple[Any, Any]] = field(default_factory=list)


def is_symbolic(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == object


def as_expressions(S: Any, v: Any) -> np.ndarray:
    """Any value as an object array of backend expressions."""
    if is_symbolic(v):
        return v
    a = np.asarray(v)
    out = np.empty(a.shape, dtype=object)
    for i, x in enumerate(a.flat):
        out.flat[i] = number(S, x)
    return out


def _objects(shape: tuple[int, ...], values: Iterable[Any]) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out.flat[:] = list(values)
    return out


def handler(ctx: Context) -> Callable[[Any, list[Any]], list[Any]]:
    """``handle(eqn, invals)`` for :func:`diffkit._jaxpr.interpret`."""

    def handle(eqn: Any, invals: list[Any]) -> list[Any]:
        sub = inner_jaxpr(eqn)
        if sub is not None:
            return interpret(sub, invals, handle)
        if not any(is_symbolic(v) for v in invals):
            return _evaluate(eqn, invals)
        name = eqn.primitive.name
        if name == "scan":
            outs = _scan(ctx, eqn, invals, handle)
        elif name in RULES:
            outs = RULES[name](ctx, eqn, invals)
        else:
            raise unsupported(WHO, eqn, SUPPORTED)
        ctx.after(outs)
        return outs

    return handle


def _evaluate(eqn: Any, invals: list[Any]) -> list[Any]:
    """Constant folding: run the primitive on numbers."""
    out = eqn.primitive.bind(*invals, **eqn.params)
    outs = list(out) if eqn.primitive.multiple_results else [out]
    return [
        o if jax.dtypes.issubdtype(o.dtype, jax.dtypes.extended) else np.asarray(o) for o in outs
    ]


def _not_symbolic(eqn: Any, what: str) -> UnsupportedPrimitiveError:
    return UnsupportedPrimitiveError(
        f"{WHO}: primitive '{eqn.primitive.name}' needs {what} that do not depend on the "
        "differentiated inputs; use jax-fwd/jax-rev for this function"
    )


# ------------------------------------------------------------ elementwise rows

ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "neg": lambda S, p, a: -a,
    "add": lambda S, p, a, b: a + b,
    "sub": lambda S, p, a, b: a - b,
    "mul": lambda S, p, a, b: a * b,
    "div": lambda S, p, a, b: a / b,
    "pow": lambda S, p, a, b: a**b,
    "integer_pow": lambda S, p, a: a ** p["y"],
    "square": lambda S, p, a: a**2,
    "sqrt": lambda S, p, a: S.sqrt(a),
    "rsqrt": lambda S, p, a: 1 / S.sqrt(a),
    "exp": lambda S, p, a: S.exp(a),
    "exp2": lambda S, p, a: 2**a,
    "log": lambda S, p, a: S.log(a),
    "log1p": lambda S, p, a: S.log(1 + a),
    "expm1": lambda S, p, a: S.exp(a) - 1,
    "sin": lambda S, p, a: S.sin(a),
    "cos": lambda S, p, a: S.cos(a),
    "tan": lambda S, p, a: S.tan(a),
    "asin": lambda S, p, a: S.asin(a),
    "acos": lambda S, p, a: S.acos(a),
    "atan": lambda S, p, a: S.atan(a),
    "atan2": lambda S, p, a, b: S.atan2(a, b),
    "sinh": lambda S, p, a: S.sinh(a),
    "cosh": lambda S, p, a: S.cosh(a),
    "tanh": lambda S, p, a: S.tanh(a),
    "asinh": lambda S, p, a: S.asinh(a),
    "acosh": lambda S, p, a: S.acosh(a),
    "atanh": lambda S, p, a: S.atanh(a),
    "logistic": lambda S, p, a: 1 / (1 + S.exp(-a)),
    "erf": lambda S, p, a: S.erf(a),
    "erfc": lambda S, p, a: 1 - S.erf(a),
    "abs": lambda S, p, a: S.Abs(a),
    "sign": lambda S, p, a: S.sign(a),
    "max": lambda S, p, a, b: S.Max(a, b),
    "min": lambda S, p, a, b: S.Min(a, b),
    "clamp": lambda S, p, lo, a, hi: S.Min(S.Max(a, lo), hi),
    "lt": lambda S, p, a, b: S.Lt(a, b),
    "le": lambda S, p, a, b: S.Le(a, b),
    "gt": lambda S, p, a, b: S.Gt(a, b),
    "ge": lambda S, p, a, b: S.Ge(a, b),
    "eq": lambda S, p, a, b: S.Eq(a, b),
    "ne": lambda S, p, a, b: S.Ne(a, b),
    "and": lambda S, p, a, b: S.And(a, b),
    "or": lambda S, p, a, b: S.Or(a, b),
    "not": lambda S, p, a: S.Not(a),
    "is_finite": lambda S, p, a: S.true,  # expressions are taken to be finite
    "copy": lambda S, p, a: a,
    "copy_p": lambda S, p, a: a,
    "reduce_precision": lambda S, p, a: a,
}

#: Logical primitives are bitwise on integers: only booleans have a symbolic meaning.
_BOOLEAN_ONLY = {"and", "or", "not"}


def _elementwise(fn: Callable[..., Any], ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    S = ctx.S
    if eqn.primitive.name in _BOOLEAN_ONLY and eqn.outvars[0].aval.dtype != np.bool_:
        raise _not_symbolic(eqn, "integer operands")
    args = np.broadcast_arrays(*(as_expressions(S, v) for v in invals))
    shape = args[0].shape
    return [
        _objects(
            shape, (fn(S, eqn.params, *xs) for xs in zip(*(a.flat for a in args), strict=False))
        )
    ]


def _convert(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    """Casts between float types are exact symbolically; booleans become 0/1."""
    S, (a,) = ctx.S, invals
    old, new = eqn.invars[0].aval.dtype, eqn.params["new_dtype"]
    if not np.issubdtype(new, np.floating):
        raise _not_symbolic(eqn, f"a conversion to {np.dtype(new).name} of values")
    if old == np.bool_:
        return [_objects(a.shape, (S.Piecewise((1, c), (0, True)) for c in a.flat))]
    return [a]


def _select_n(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    pred, *cases = invals
    if not is_symbolic(pred):
        return _structural(range(1, len(invals)), ctx, eqn, invals)
    if len(cases) != 2:
        raise _not_symbolic(eqn, "an integer case index")
    S = ctx.S
    a, b, c = np.broadcast_arrays(pred, *(as_expressions(S, v) for v in cases))
    return [
        _objects(
            a.shape,
            (
                S.Piecewise((y, p), (x, True))
                for p, x, y in zip(a.flat, b.flat, c.flat, strict=False)
            ),
        )
    ]


def _stop_gradient(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    """Each element becomes a fresh symbol defined by its value: a constant to ``diff``."""

    def stop(e: Any) -> Any:
        if not e.free_symbols:
            return e
        s = ctx.S.Symbol(f"s{len(ctx.stops)}")
        ctx.stops.append((s, e))
        return s

    return [_objects(invals[0].shape, (stop(e) for e in invals[0].flat))]


# ------------------------------------------------------------- data movement

#: primitive -> positions of the operands that carry data (the others are indices or
#: predicates and must be numbers); ``None``: every operand.
STRUCTURAL: dict[str, Sequence[int] | None] = {
    "reshape": (0,),
    "broadcast_in_dim": (0,),
    "squeeze": (0,),
    "expand_dims": (0,),
    "transpose": (0,),
    "slice": (0,),
    "rev": (0,),
    "concatenate": None,
    "pad": None,
    "gather": (0,),
    "dynamic_slice": (0,),
    "dynamic_update_slice": (0, 1),
    "split": (0,),
    "stack": None,
    "unstack": (0,),
}


def _structural(data: Iterable[int] | None, ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    """Run the primitive on arrays of positions; the resulting positions pick expressions."""
    data = range(len(invals)) if data is None else data
    pool: list[Any] = []
    args = list(invals)
    for i in data:
        a = as_expressions(ctx.S, invals[i])
        args[i] = np.arange(len(pool), len(pool) + a.size, dtype=np.int32).reshape(a.shape)
        pool.extend(a.flat)
    if any(is_symbolic(a) for a in args):
        raise _not_symbolic(eqn, "indices or predicates")
    positions = _evaluate(eqn, args)
    table = np.empty(len(pool), dtype=object)
    table[:] = pool
    for p in positions:
        if p.size and (p.min() < 0 or p.max() >= len(pool)):
            raise _not_symbolic(eqn, "in-bounds indices (out-of-bounds fills)")
    return [table[p.ravel()].reshape(p.shape) for p in positions]


# ------------------------------------------------------------------- sums


def _rows(a: np.ndarray, axes: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Move ``axes`` last and flatten them: (rows, shape of the result)."""
    keep = [d for d in range(a.ndim) if d not in axes]
    moved = np.transpose(a, keep + list(axes))
    shape = tuple(a.shape[d] for d in keep)
    return moved.reshape((int(np.prod(shape)), -1)), shape


REDUCTIONS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "reduce_sum": lambda S: S.Add,
    "reduce_prod": lambda S: S.Mul,
    "reduce_max": lambda S: S.Max,
    "reduce_min": lambda S: S.Min,
}


def _reduce(name: str, ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    rows, shape = _rows(as_expressions(ctx.S, invals[0]), eqn.params["axes"])
    op = REDUCTIONS[name](ctx.S)
    return [_objects(shape, (op(*row) for row in rows))]


CUMULATIVE: dict[str, Callable[[Any], Callable[[Any, Any], Any]]] = {
    "cumsum": lambda S: lambda a, b: a + b,
    "cumprod": lambda S: lambda a, b: a * b,
    "cummax": lambda S: S.Max,
    "cummin": lambda S: S.Min,
}


def _cumulative(name: str, ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    a = as_expressions(ctx.S, invals[0])
    axis, reverse = eqn.params["axis"], eqn.params["reverse"]
    op = np.frompyfunc(CUMULATIVE[name](ctx.S), 2, 1)
    if reverse:
        return [np.flip(op.accumulate(np.flip(a, axis), axis=axis), axis)]
    return [op.accumulate(a, axis=axis)]


def _dot_general(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    """Each output element is one n-ary sum of products, in ``dot_general``'s output order
    (batch dimensions, then the free ones of the left operand, then of the right)."""
    S = ctx.S
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = (as_expressions(S, v) for v in invals)
    lf = [d for d in range(lhs.ndim) if d not in (*lc, *lb)]
    rf = [d for d in range(rhs.ndim) if d not in (*rc, *rb)]
    nb, k = int(np.prod([lhs.shape[d] for d in lb])), int(np.prod([lhs.shape[d] for d in lc]))
    L = np.transpose(lhs, [*lb, *lf, *lc]).reshape(nb, -1, k)
    R = np.transpose(rhs, [*rb, *rf, *rc]).reshape(nb, -1, k)
    shape = (*(lhs.shape[d] for d in lb), *(lhs.shape[d] for d in lf), *(rhs.shape[d] for d in rf))
    out = (
        S.Add(*(L[b, i] * R[b, j]))
        for b in range(nb)
        for i in range(L.shape[1])
        for j in range(R.shape[1])
    )
    return [_objects(shape, out)]


def _scan(ctx: Context, eqn: Any, invals: list[Any], handle: Callable) -> list[Any]:
    """A scan of static length, unrolled."""
    p = eqn.params
    nc, nk = p["num_consts"], p["num_carry"]
    consts, carry, xs = invals[:nc], invals[nc : nc + nk], invals[nc + nk :]
    steps = range(p["length"])
    ys = []
    for i in reversed(steps) if p["reverse"] else steps:
        out = interpret(p["jaxpr"], [*consts, *carry, *(x[i, ...] for x in xs)], handle)
        carry, y = out[:nk], out[nk:]
        ys.append(y)
    if p["reverse"]:
        ys.reverse()
    stacked = [
        _stack(ctx, [step[j] for step in ys], v.aval) for j, v in enumerate(eqn.outvars[nk:])
    ]
    return [*carry, *stacked]


def _stack(ctx: Context, values: list[Any], aval: Any) -> Any:
    if not any(is_symbolic(v) for v in values):
        return np.stack(values) if values else np.zeros(aval.shape, aval.dtype)
    out = np.empty(aval.shape, dtype=object)
    for i, v in enumerate(values):
        out[i, ...] = as_expressions(ctx.S, v)
    return out


RULES: dict[str, Callable[[Context, Any, list[Any]], list[Any]]] = {
    **{name: functools.partial(_elementwise, fn) for name, fn in ELEMENTWISE.items()},
    **{name: functools.partial(_structural, data) for name, data in STRUCTURAL.items()},
    **{name: functools.partial(_reduce, name) for name in REDUCTIONS},
    **{name: functools.partial(_cumulative, name) for name in CUMULATIVE},
    "convert_element_type": _convert,
    "select_n": _select_n,
    "stop_gradient": _stop_gradient,
    "dot_general": _dot_general,
}

SUPPORTED = frozenset(RULES) | {"scan", "jit", "pjit", "custom_jvp_call", "custom_vjp_call"}
