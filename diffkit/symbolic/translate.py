"""JAX primitives as SymPy (or SymEngine) expressions: the symbolic interpreter's translation table.

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

from diffkit._core.errors import DiffkitError, UnsupportedPrimitiveError
from diffkit._core.jaxpr import (
    custom_jvp_rule,
    evaluate,
    inner_jaxpr,
    interpret,
    is_float,
    unsupported,
    user_site,
)
from diffkit.rules.table import REFUSED as SHARED_REFUSED

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
        **_jax_functions(),
    )


@functools.cache
def _symengine() -> types.SimpleNamespace:  # long: one namespace entry per SymPy name used
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

    def absolute(a: Any) -> Any:  # d|a|/da = +1 at 0, like JAX
        return se.Piecewise((-a, se.Lt(a, 0)), (a, True))

    def clamp(lo: Any, a: Any, hi: Any) -> Any:  # derivative 0 at the bounds, like JAX
        return se.Piecewise((lo, se.Le(a, lo)), (hi, se.Ge(a, hi)), (a, True))

    def cse(exprs: list[Any], prefix: str):
        repl, reduced = se.cse(exprs)
        names = {s: se.Symbol(f"{prefix}{i}") for i, (s, _) in enumerate(repl)}
        rename = lambda e: e.xreplace(names) if names else e  # noqa: E731
        return [(names[s], rename(r)) for s, r in repl], [rename(e) for e in reduced]

    refused = {name: _needs_sympy for name in _jax_functions()}
    return types.SimpleNamespace(
        **{f: getattr(se, f) for f in _FUNCS},
        **{**refused, **_symengine_forms(se, max2, min2, sign, absolute, clamp)},
        name="symengine",
        Symbol=se.Symbol,
        Float=se.RealDouble,
        Max=lambda *a: functools.reduce(max2, a),
        Min=lambda *a: functools.reduce(min2, a),
        Abs=absolute,
        sign=sign,
        diff=lambda e, x, memo: e.diff(x),
        plain_diff=lambda e, x, memo: e.diff(x),
        cse=cse,
        to_sympy=sympy.sympify,
        simplify=None,
    )


def _symengine_forms(se: Any, max2: Any, min2: Any, sign: Any, absolute: Any, clamp: Any):
    """SymEngine forms of the JAX-exact functions it can express with JAX's derivatives at
    the kinks (the others refuse: ``_needs_sympy``)."""
    return dict(
        Maximum=lambda *a: functools.reduce(max2, a),
        Minimum=lambda *a: functools.reduce(min2, a),
        Absolute=absolute,
        Sign=sign,
        Clamp=clamp,
        Select=lambda c, a, b: se.Piecewise((a, c), (b, True)),
        Less=se.Lt,
        LessEqual=se.Le,
        Greater=se.Gt,
        GreaterEqual=se.Ge,
        Equal=se.Eq,
        NotEqual=se.Ne,
    )


def _needs_sympy(*args: Any) -> Any:
    raise Refusal("backend='sympy' (SymEngine has no JAX-exact form of it)")


class Refusal(Exception):
    """Raised by a rule that cannot translate an equation exactly: ``what`` it would need.
    The handler turns it into a one-line :class:`UnsupportedPrimitiveError` naming the
    primitive and the user's source line."""

    def with_eqn(self, eqn: Any, site: Any) -> UnsupportedPrimitiveError:
        """The one-line error: which primitive, where in the user's code, what it needs."""
        return UnsupportedPrimitiveError(
            f"{WHO}: primitive '{eqn.primitive.name}' (at {user_site(eqn, site)}) needs "
            f"{self.args[0]}; use jax-fwd/jax-rev for this function"
        )


# JAX-exact functions (SymPy backend). SymPy evaluates its own functions and relations on
# structure and assumptions (``Ne(y, y)`` is False, ``sign(exp(x))`` is 1, ``Heaviside(0)`` is
# 1/2), which differs from IEEE arithmetic on NaN and infinities and from JAX's derivative
# conventions at kinks. These functions are opaque to SymPy: never evaluated, printed as the JAX
# call that computes them, and differentiated by the partials JAX's own JVP rules use.
#: name -> (JAX template, partial derivatives ``(args, out, i) -> expression`` or None: 0;
#: ``"bool"`` marks predicates)
_TEMPLATES: dict[str, tuple[str, Any]] = {
    "Floor": ("jax.numpy.floor({0})", None),
    "Ceil": ("jax.numpy.ceil({0})", None),
    "Round": ("jax.lax.round({0}, {1})", None),  # {1}: the rounding method, 0 or 1
    "Sign": ("jax.numpy.sign({0})", None),
    # integer division, truncating (the pair stacked: one dtype, as lax.div requires)
    "IntDiv": ("jax.lax.div(*jax.numpy.asarray(({0}, {1})))", None),
    "Select": ("jax.numpy.where({0}, {1}, {2})", "select"),  # {1} where {0} holds, else {2}
    "Absolute": ("jax.numpy.abs({0})", "abs"),
    "Maximum": ("functools.reduce(jax.numpy.maximum, ({args},))", "extremum"),
    "Minimum": ("functools.reduce(jax.numpy.minimum, ({args},))", "extremum"),
    "Clamp": ("jax.numpy.clip({1}, {0}, {2})", "clamp"),  # lax.clamp wants equal dtypes
    "Rem": ("jax.lax.rem(*jax.numpy.asarray(({0}, {1})))", "rem"),
    "Cbrt": ("jax.lax.cbrt({0})", "cbrt"),
    "Lgamma": ("jax.lax.lgamma({0})", "lgamma"),
    "Digamma": ("jax.lax.digamma({0})", "digamma"),
    "Polygamma": ("jax.lax.polygamma(jax.numpy.full_like({1}, {0}), {1})", "polygamma"),
    "ErfInv": ("jax.lax.erf_inv({0})", "erf_inv"),
    "Less": ("jax.numpy.less({0}, {1})", "bool"),
    "LessEqual": ("jax.numpy.less_equal({0}, {1})", "bool"),
    "Greater": ("jax.numpy.greater({0}, {1})", "bool"),
    "GreaterEqual": ("jax.numpy.greater_equal({0}, {1})", "bool"),
    "Equal": ("jax.numpy.equal({0}, {1})", "bool"),
    "NotEqual": ("jax.numpy.not_equal({0}, {1})", "bool"),
    "IsFinite": ("jax.numpy.isfinite({0})", "bool"),
}


def _partials(F: types.SimpleNamespace) -> dict[str, Callable[[tuple, Any, int], Any]]:
    """JAX's JVP conventions (jax/_src/lax), as partial derivatives ``(args, out, i)``."""
    import sympy

    one = lambda c: F.Select(c, 1, 0)  # noqa: E731

    def extremum(a: tuple, out: Any, i: int) -> Any:
        if len(a) == 2:  # lax.max/min: 1 where the argument is the result, 1/2 at a tie
            return one(F.Equal(a[i], out)) / F.Select(F.Equal(a[1 - i], out), 2, 1)
        return one(F.Equal(a[i], out)) / sympy.Add(*(one(F.Equal(b, out)) for b in a))  # reduce

    def clamp(a: tuple, out: Any, i: int) -> Any:
        lo, x, hi = a
        conds = (
            sympy.And(F.Greater(lo, x), F.Less(lo, hi)),
            sympy.And(F.Greater(x, lo), F.Less(x, hi)),
            F.Less(hi, x),
        )
        return one(conds[i])

    def rem(a: tuple, out: Any, i: int) -> Any:
        q = a[0] / a[1]
        return sympy.S.One if i == 0 else -F.Sign(q) * F.Floor(F.Absolute(q))

    return {
        "abs": lambda a, out, i: F.Select(F.GreaterEqual(a[0], 0), 1, -1),
        "select": lambda a, out, i: sympy.S.Zero if i == 0 else one(a[0] if i == 1 else ~a[0]),
        "extremum": extremum,
        "clamp": clamp,
        "rem": rem,
        "cbrt": lambda a, out, i: sympy.Rational(1, 3) / out**2,
        "lgamma": lambda a, out, i: F.Digamma(a[0]),
        "digamma": lambda a, out, i: F.Polygamma(1, a[0]),
        "polygamma": lambda a, out, i: sympy.S.Zero if i == 0 else F.Polygamma(a[0] + 1, a[1]),
        "erf_inv": lambda a, out, i: sympy.sqrt(sympy.pi) / 2 * sympy.exp(out**2),
    }


@functools.cache
def _jax_functions() -> dict[str, Any]:  # long: the class factory and its derivative rules
    """The opaque SymPy classes of ``_TEMPLATES`` (and ``Convert_<dtype>``, made on demand)."""
    import sympy
    from sympy.logic.boolalg import BooleanFunction

    F = types.SimpleNamespace()
    partials = _partials(F)

    class JaxBase(sympy.Function):
        """A function SymPy never evaluates; JAX computes it (``template``) and its partial
        derivatives follow JAX's rules (``rule``)."""

        template = ""
        rule: Any = None

        @classmethod
        def eval(cls, *args: Any) -> None:
            return None

        def fdiff(self, argindex: int = 1) -> Any:
            rule = type(self).rule
            return sympy.S.Zero if rule is None else rule(self.args, self, argindex - 1)

    class JaxPredicate(BooleanFunction):
        """A comparison or test SymPy never evaluates: JAX decides it, NaN included."""

        template = ""

        @classmethod
        def eval(cls, *args: Any) -> None:
            return None

    class Select(JaxBase):
        """``where(c, a, b)``: SymPy's Piecewise rewrites conditions that contain a
        Piecewise (and then needs them as sets); this one is left as it is. Its derivative is
        the choice of the derivatives (JAX's JVP of ``select_n``)."""

        @classmethod
        def eval(cls, c: Any, a: Any, b: Any) -> Any:
            if c == sympy.true or a == b:
                return a
            if c == sympy.false:
                return b
            return None

    for name, (template, kind) in _TEMPLATES.items():
        base = {"bool": JaxPredicate, "select": Select}.get(kind, JaxBase)
        attrs: dict[str, Any] = {"template": template}
        if base is not JaxPredicate:
            attrs["rule"] = staticmethod(partials[kind]) if kind else None
        setattr(F, name, type(name, (base,), attrs))
    F.JaxBase, F.JaxPredicate = JaxBase, JaxPredicate  # for the printer
    return {k: v for k, v in vars(F).items() if k not in ("JaxBase", "JaxPredicate")}


@functools.cache
def convert_function(dtype: str) -> Any:
    """``Convert_<dtype>``: ``lax.convert_element_type`` to an integer or float dtype (sympy
    backend); derivative 1 into floats, 0 into integers, as JAX."""
    import sympy

    base = _jax_functions()["Floor"].__mro__[1]  # JaxBase
    to_float = np.issubdtype(np.dtype(dtype), np.floating)
    rule = (lambda a, out, i: sympy.S.One) if to_float else None
    template = f"jax.lax.convert_element_type({{0}}, jax.numpy.{dtype})"
    return type(
        f"Convert_{dtype}",
        (base,),
        {"template": template, "rule": staticmethod(rule) if rule else None},
    )


def print_jax(printer: Any, e: Any) -> str:
    """How the program printer writes a JAX-exact function: its template, arguments printed."""
    args = [printer._print(a) for a in e.args]
    return e.template.format(*args, args=", ".join(args))


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

    select = _jax_functions()["Select"]

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
        if isinstance(e, select):  # the choice of the derivatives, as JAX's JVP
            return select(args[0], d[1], d[2])
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
    (fresh symbols standing for values that must not be differentiated), a hook called after
    every equation (budgets), and ``point``: the numeric values of expressions at the input
    (``None`` where the inputs are not concrete), for choices only the input point decides
    (sort, argmax); ``decided`` records that one was made, so the result is valid only there."""

    S: Any
    after: Callable[[list[Any]], None] = lambda outs: None
    stops: list[tuple[Any, Any]] = field(default_factory=list)
    point: Callable[[np.ndarray, Any], np.ndarray] | None = None
    decided: bool = False
    rules_open: set[Any] = field(default_factory=set)  # custom_jvp rules being read


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


def handler(ctx: Context) -> Callable[..., list[Any]]:
    """``handle(eqn, invals)`` for :func:`diffkit._core.jaxpr.interpret`."""

    def handle(eqn: Any, invals: list[Any], site: Any = None) -> list[Any]:
        inner = functools.partial(handle, site=site or eqn)
        name = eqn.primitive.name
        symbolic = any(is_symbolic(v) for v in invals)
        if symbolic and name == "custom_vjp_call":
            raise Refusal(
                "a custom_vjp rule, which has no symbolic form (differentiating its body "
                "would ignore the rule)"
            ).with_eqn(eqn, site)
        if symbolic and name == "custom_jvp_call":
            if _rule_key(eqn) in ctx.rules_open:  # the function inside its own rule: its body
                return interpret(eqn.params["call_jaxpr"], invals, inner)
            try:
                outs = _custom_jvp(ctx, eqn, invals, inner)
            except Refusal as r:
                raise r.with_eqn(eqn, site) from None
            ctx.after(outs)
            return outs
        sub = inner_jaxpr(eqn)
        if sub is not None:
            return interpret(sub, invals, inner)
        if not symbolic:
            return _evaluate(eqn, invals)
        try:
            if name == "scan":
                outs = _scan(ctx, eqn, invals, inner)
            elif name == "cond":
                outs = _cond(ctx, eqn, invals, inner)
            elif name in TRANSLATIONS:
                outs = TRANSLATIONS[name](ctx, eqn, invals)
            else:
                raise unsupported(WHO, eqn, {**SHARED_REFUSED, **REFUSED}, site)
        except Refusal as r:
            raise r.with_eqn(eqn, site) from None
        ctx.after(outs)
        return outs

    return handle


def _evaluate(eqn: Any, invals: list[Any]) -> list[Any]:
    """Constant folding: run the primitive on numbers."""
    outs = evaluate(eqn, invals)
    return [
        o if jax.dtypes.issubdtype(o.dtype, jax.dtypes.extended) else np.asarray(o) for o in outs
    ]


def _not_symbolic(eqn: Any, what: str) -> Refusal:
    return Refusal(f"{what} that do not depend on the differentiated inputs")


# ------------------------------------------------------------ elementwise rows

ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "neg": lambda S, p, a: -a,
    "add": lambda S, p, a, b: a + b,
    "add_any": lambda S, p, a, b: a + b,
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
    "abs": lambda S, p, a: S.Absolute(a),
    "sign": lambda S, p, a: S.Sign(a),
    "max": lambda S, p, a, b: S.Maximum(a, b),
    "min": lambda S, p, a, b: S.Minimum(a, b),
    "clamp": lambda S, p, lo, a, hi: S.Clamp(lo, a, hi),
    "floor": lambda S, p, a: S.Floor(a),
    "ceil": lambda S, p, a: S.Ceil(a),
    "round": lambda S, p, a: S.Round(a, int(p["rounding_method"])),
    "rem": lambda S, p, a, b: S.Rem(a, b),
    "cbrt": lambda S, p, a: S.Cbrt(a),
    "lgamma": lambda S, p, a: S.Lgamma(a),
    "digamma": lambda S, p, a: S.Digamma(a),
    "polygamma": lambda S, p, m, a: S.Polygamma(m, a),
    "erf_inv": lambda S, p, a: S.ErfInv(a),
    "lt": lambda S, p, a, b: S.Less(a, b),
    "le": lambda S, p, a, b: S.LessEqual(a, b),
    "gt": lambda S, p, a, b: S.Greater(a, b),
    "ge": lambda S, p, a, b: S.GreaterEqual(a, b),
    "eq": lambda S, p, a, b: S.Equal(a, b),
    "ne": lambda S, p, a, b: S.NotEqual(a, b),
    "and": lambda S, p, a, b: S.And(a, b),
    "or": lambda S, p, a, b: S.Or(a, b),
    "not": lambda S, p, a: S.Not(a),
    "is_finite": lambda S, p, a: S.IsFinite(a),
    "copy": lambda S, p, a: a,
    "copy_p": lambda S, p, a: a,
    "reduce_precision": lambda S, p, a: a,
}

#: Logical primitives are bitwise on integers: only booleans have a symbolic meaning.
_BOOLEAN_ONLY = {"and", "or", "not"}


def _elementwise(fn: Callable[..., Any], ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    S, name, dtype = ctx.S, eqn.primitive.name, eqn.outvars[0].aval.dtype
    if name in _BOOLEAN_ONLY and dtype != np.bool_:
        raise _not_symbolic(eqn, "integer operands")
    if name == "div" and np.issubdtype(dtype, np.integer):  # truncating, not a / b
        fn = lambda S, p, a, b: S.IntDiv(a, b)  # noqa: E731
    args = np.broadcast_arrays(*(as_expressions(S, v) for v in invals))
    shape = args[0].shape
    return [
        _objects(
            shape, (fn(S, eqn.params, *xs) for xs in zip(*(a.flat for a in args), strict=False))
        )
    ]


def _indicator(S: Any, c: Any) -> Any:
    return S.Select(c, 1, 0)


def _convert(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    """Casts between float types are exact symbolically; booleans become 0/1 and tests
    against 0; integer conversions are ``lax.convert_element_type`` itself (JAX-exact)."""
    S, (a,) = ctx.S, invals
    old, new = np.dtype(eqn.invars[0].aval.dtype), np.dtype(eqn.params["new_dtype"])
    real = (np.floating, np.integer, np.bool_)
    if not all(any(np.issubdtype(d, k) for k in real) for d in (old, new)):
        raise _not_symbolic(eqn, f"a conversion to {new.name} of values")
    if new == old or (np.issubdtype(new, np.floating) and np.issubdtype(old, np.floating)):
        return [a]
    if old == np.bool_:
        return [_objects(a.shape, (_indicator(S, c) for c in a.flat))]
    if new == np.bool_:
        return [_objects(a.shape, (S.NotEqual(e, 0) for e in a.flat))]
    if S.name != "sympy":
        _needs_sympy()
    cast = convert_function(new.name)
    return [_objects(a.shape, (cast(e) for e in a.flat))]


def _choose(S: Any, index: Any, cases: Sequence[Any], boolean: bool = False) -> Any:
    """``cases[index]`` as nested ``Select``: a boolean picks cases[1] where true; an integer
    index is clamped into range (as ``cond`` does; ``select_n`` requires it in range)."""
    if len(cases) == 1:
        return cases[0]
    if getattr(index, "is_Number", False):
        return cases[min(max(int(index), 0), len(cases) - 1)]
    if boolean:
        return S.Select(index, cases[1], cases[0])
    out = cases[-1]  # the index clamped: cases[0] at or below 0, the last one at or above
    for k in range(len(cases) - 2, 0, -1):
        out = S.Select(S.Equal(index, k), cases[k], out)
    return S.Select(S.LessEqual(index, 0), cases[0], out)


def _select_n(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    pred, *cases = invals
    if not is_symbolic(pred):
        return _structural(range(1, len(invals)), ctx, eqn, invals)
    S, boolean = ctx.S, eqn.invars[0].aval.dtype == np.bool_
    arrays = np.broadcast_arrays(pred, *(as_expressions(S, v) for v in cases))
    return [
        _objects(
            arrays[0].shape,
            (_choose(S, p, cs, boolean) for p, *cs in zip(*(a.flat for a in arrays), strict=True)),
        )
    ]


def _cond(ctx: Context, eqn: Any, invals: list[Any], handle: Callable) -> list[Any]:
    """``cond`` / ``switch``: a known index runs its branch; a symbolic one runs every
    branch and picks each output element by ``Select`` on the index."""
    index, *ops = invals
    branches = eqn.params["branches"]
    if not is_symbolic(index):
        k = min(max(int(np.asarray(index)), 0), len(branches) - 1)
        return interpret(branches[k], ops, handle)
    S = ctx.S
    results = [interpret(b, ops, handle) for b in branches]
    outs = []
    for j, v in enumerate(eqn.outvars):
        values = [as_expressions(S, r[j]) for r in results]
        idx = np.broadcast_to(index, v.aval.shape) if np.ndim(index) == 0 else index
        picks = zip(idx.flat, *(np.broadcast_to(x, v.aval.shape).flat for x in values), strict=True)
        outs.append(_objects(tuple(v.aval.shape), (_choose(S, i, cs) for i, *cs in picks)))
    return outs


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
    "scatter": (0, 2),  # x.at[i].set(v): JAX's own scatter of positions picks the winner
    "dynamic_slice": (0,),
    "dynamic_update_slice": (0, 1),
    "split": (0,),
    "stack": None,
    "unstack": (0,),
    "tile": (0,),
    # placement and scheduling: the identity on values
    "device_put": None,
    "sharding_constraint": (0,),
    "layout_constraint": (0,),
    "optimization_barrier": None,
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


def _one_or(op: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *xs: xs[0] if len(xs) == 1 else op(*xs)


REDUCTIONS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "reduce_sum": lambda S: S.Add,
    "reduce_prod": lambda S: S.Mul,
    "reduce_max": lambda S: _one_or(S.Maximum),  # n-ary: ties share 1/k, as JAX's rule
    "reduce_min": lambda S: _one_or(S.Minimum),
    "reduce_and": lambda S: S.And,
    "reduce_or": lambda S: S.Or,
}


def _reduce(name: str, ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    if name in ("reduce_and", "reduce_or") and eqn.outvars[0].aval.dtype != np.bool_:
        raise _not_symbolic(eqn, "integer operands")
    rows, shape = _rows(as_expressions(ctx.S, invals[0]), eqn.params["axes"])
    op = REDUCTIONS[name](ctx.S)
    return [_objects(shape, (op(*row) for row in rows))]


CUMULATIVE: dict[str, Callable[[Any], Callable[[Any, Any], Any]]] = {
    "cumsum": lambda S: lambda a, b: a + b,
    "cumprod": lambda S: lambda a, b: a * b,
    "cummax": lambda S: S.Maximum,  # binary, nested: lax.max's rule at each step
    "cummin": lambda S: S.Minimum,
}


def _cumulative(name: str, ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    a = as_expressions(ctx.S, invals[0])
    axis, reverse = eqn.params["axis"], eqn.params["reverse"]
    op = np.frompyfunc(CUMULATIVE[name](ctx.S), 2, 1)
    if reverse:
        return [np.flip(op.accumulate(np.flip(a, axis), axis=axis), axis)]
    return [op.accumulate(a, axis=axis)]


# ------------------------------------------------- choices decided at the point


def _at_point(ctx: Context, values: np.ndarray, dtype: Any) -> np.ndarray:
    """The numeric values of ``values`` at the input point; marks the result as valid only
    there (:class:`Context`)."""
    if ctx.point is None:
        raise Refusal(
            "an order decided by the input values, which are not concrete here (under "
            "jax.jit, vmap or another transformation); call the derivative on concrete arrays"
        )
    ctx.decided = True
    return ctx.point(values, dtype)


def _decided(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    """argmax / argmin: an integer result, evaluated at the point (valid only there)."""
    values = [
        _at_point(ctx, v, var.aval.dtype) if is_symbolic(v) else v
        for v, var in zip(invals, eqn.invars, strict=True)
    ]
    return _evaluate(eqn, values)


def _sort(ctx: Context, eqn: Any, invals: list[Any]) -> list[Any]:
    """The permutation ``sort`` applies at the point (JAX's own sort of the numeric keys,
    stable, NaNs last), applied to the expressions: valid only at that point."""
    nk, dim = eqn.params["num_keys"], eqn.params["dimension"]
    keys = [
        _at_point(ctx, v, var.aval.dtype) if is_symbolic(v) else np.asarray(v)
        for v, var in zip(invals[:nk], eqn.invars, strict=False)
    ]
    shape = np.shape(invals[0])
    iota = np.broadcast_to(
        np.arange(shape[dim], dtype=np.int32).reshape(
            [-1 if d == dim else 1 for d in range(len(shape))]
        ),
        shape,
    )
    params = {**eqn.params, "num_keys": nk}
    order = np.asarray(eqn.primitive.bind(*keys, iota, **params)[-1])
    return [
        np.take_along_axis(v if is_symbolic(v) else np.asarray(v), order, axis=dim) for v in invals
    ]


# ------------------------------------------------------------- custom rules

#: The classes made for custom_jvp rules, by name (the program printer defines a
#: ``jax.custom_jvp`` function for each one it prints).
CUSTOM: dict[str, Any] = {}
_CUSTOM_KEYS: dict[Any, Any] = {}


def _rule_key(eqn: Any) -> str:
    """Which custom function an equation calls (its rule re-traces it: a new jaxpr object)."""
    return str(eqn.params["call_jaxpr"])


def _custom_jvp(  # long: body, rule and stop_gradient bookkeeping are one pass over the call
    ctx: Context, eqn: Any, invals: list[Any], handle: Callable
) -> list[Any]:
    """A ``custom_jvp`` function with its rule: each output element becomes a SymPy function
    of the input elements it uses, whose value is the body's and whose partial derivatives are
    the coefficients of the rule's tangent output (so SymPy's chain rule, and a second
    derivative, differentiate what the rule computes, as JAX does)."""
    import sympy

    S = ctx.S
    if S.name != "sympy":
        _needs_sympy()
    nc = eqn.params["num_consts"]
    if any(is_symbolic(v) for v in invals[:nc]):
        raise Refusal("a custom_jvp function closing over values that depend on the inputs")
    n = len(invals) - nc
    rule, out_zeros = custom_jvp_rule(eqn)
    if any(isinstance(c, jax.core.Tracer) for c in rule.consts):
        raise Refusal("a custom_jvp rule closing over traced values")
    holders: dict[Any, Any] = {}  # placeholder -> the input element it stands for
    t_of: dict[Any, Any] = {}  # tangent symbol -> placeholder

    def fresh(v: Any, prefix: str, table: dict[Any, Any]) -> np.ndarray:
        out = np.empty(v.shape, dtype=object)
        for i, e in enumerate(v.flat):
            out.flat[i] = sympy.Dummy(prefix)
            table[out.flat[i]] = e
        return out

    primals = [fresh(v, "p", holders) if is_symbolic(v) else v for v in invals]
    tangents = [
        fresh(v, "t", t_of)
        if is_symbolic(v) and is_float(var.aval)
        else np.zeros(var.aval.shape, var.aval.dtype)
        for v, var in zip(primals[nc:], rule.jaxpr.invars[n:], strict=True)
    ]
    n_stops = len(ctx.stops)
    values = interpret(eqn.params["call_jaxpr"], primals, handle)
    # the rule usually calls the function itself for its primal output: that call, inside
    # its own rule, is read as its body
    ctx.rules_open.add(_rule_key(eqn))
    try:
        res = interpret(rule, [*primals[nc:], *tangents], handle)
    finally:
        ctx.rules_open.discard(_rule_key(eqn))
    # stop_gradient inside the function or its rule: symbols of the outer program, which the
    # custom function printed on its own cannot see. In its value they are replaced by what
    # they stand for (the rule alone gives its derivative); in its partials they would change
    # the second derivative, so there they are refused.
    inner_stops = dict(ctx.stops[n_stops:])
    ctx.stops[n_stops:] = [(s, e.xreplace(holders)) for s, e in ctx.stops[n_stops:]]
    outs = []
    given = iter(res[len(values) :])  # the rule's tangents, but for its symbolic zeros
    zeros = [
        np.zeros(np.shape(v)) if z else next(given) for v, z in zip(values, out_zeros, strict=True)
    ]
    for value, tangent in zip(values, zeros, strict=True):
        if not is_symbolic(value) and not is_symbolic(tangent):
            outs.append(value)
            continue
        pairs = zip(
            *(
                np.broadcast_to(as_expressions(S, x), np.shape(value)).flat
                for x in (value, tangent)
            ),
            strict=True,
        )
        elements = (_custom_element(v, t, t_of, holders, inner_stops) for v, t in pairs)
        outs.append(_objects(np.shape(value), elements))
    return outs


def _custom_element(value: Any, tangent: Any, t_of: dict, holders: dict, stops: dict) -> Any:
    """One output element: ``Custom<k>(inputs used)`` (one class per distinct rule)."""
    import sympy

    if stops and tangent.free_symbols & set(stops):
        raise Refusal("a custom_jvp rule whose tangent uses stop_gradient")
    while stops and value.free_symbols & set(stops):
        value = value.xreplace(stops)
    used = sorted(
        {t_of[t] for t in tangent.free_symbols if t in t_of}
        | {p for p in value.free_symbols if p in holders},
        key=lambda p: p.dummy_index,
    )
    if not used:
        return value
    qs = [sympy.Symbol(f"_q{i}", real=True) for i in range(len(used))]
    canon = dict(zip(used, qs, strict=True))
    tangent_of = {p: t for t, p in t_of.items()}
    partials = tuple(
        sympy.diff(tangent, tangent_of[p]).xreplace(canon) if p in tangent_of else sympy.S.Zero
        for p in used
    )
    key = (value.xreplace(canon), partials)
    cls = _CUSTOM_KEYS.get(key)
    if cls is None:
        base = _jax_functions()["Floor"].__mro__[1]  # JaxBase
        name = f"Custom{len(CUSTOM)}"
        cls = type(
            name,
            (base,),
            {
                "template": f'_custom["{name}"]({{args}})',
                "rule": staticmethod(
                    lambda a, out, i, ps=partials, qs=qs: ps[i].xreplace(
                        dict(zip(qs, a, strict=True))
                    )
                ),
                "holders": tuple(qs),
                "value": key[0],
                "partials": partials,
            },
        )
        _CUSTOM_KEYS[key] = CUSTOM[name] = cls
    return cls(*(holders[p] for p in used))


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


TRANSLATIONS: dict[str, Callable[[Context, Any, list[Any]], list[Any]]] = {
    **{name: functools.partial(_elementwise, fn) for name, fn in ELEMENTWISE.items()},
    **{name: functools.partial(_structural, data) for name, data in STRUCTURAL.items()},
    **{name: functools.partial(_reduce, name) for name in REDUCTIONS},
    **{name: functools.partial(_cumulative, name) for name in CUMULATIVE},
    "convert_element_type": _convert,
    "select_n": _select_n,
    "stop_gradient": _stop_gradient,
    "dot_general": _dot_general,
    "argmax": _decided,
    "argmin": _decided,
    "sort": _sort,
}

SUPPORTED = frozenset(TRANSLATIONS) | {"scan", "cond", "jit", "pjit", "custom_jvp_call"}

_LINALG = "a matrix decomposition or solve: its entries have no closed form worth building"
_WINDOWS = "convolutions and windows: write them as dot_general / slices for symbolic"
_COMPLEX = "complex numbers: symbolic differentiates real functions of real inputs"
_MISSING = "a special function SymPy cannot evaluate with JAX's semantics"
_ORDER = "a value-dependent order or loop: no fixed expression"
#: Primitives dual and tape differentiate that symbolic refuses (beyond
#: diffkit.rules.table.REFUSED), with the reason; tests/test_census.py checks the inventory.
REFUSED: dict[str, str] = {
    **dict.fromkeys(
        ["cholesky", "eig", "eigh", "lu", "qr", "svd", "triangular_solve", "tridiagonal_solve"],
        _LINALG,
    ),
    "custom_linear_solve": _LINALG,
    **dict.fromkeys(
        [
            "conv_general_dilated",
            "reduce_window",
            "reduce_window_max",
            "reduce_window_min",
            "reduce_window_sum",
            "select_and_gather_add",
            "select_and_scatter_add",
            "reduce",
        ],
        _WINDOWS,
    ),
    **dict.fromkeys(["complex", "conj", "fft", "imag", "real"], _COMPLEX),
    **dict.fromkeys(["bessel_i0e", "bessel_i1e", "igamma", "igammac", "random_gamma"], _MISSING),
    "regularized_incomplete_beta": _MISSING,
    "ragged_dot_general": "a grouped matmul of ragged groups: not yet translated",
    "bitcast_convert_type": "a reinterpretation of bits, not a function of the value",
    **dict.fromkeys(["top_k", "approx_top_k", "while"], _ORDER),
    "cumlogsumexp": "not yet translated (cumsum, cumprod, cummax, cummin are)",
    **dict.fromkeys(
        ["scatter-add", "scatter-max", "scatter-min", "scatter-mul", "scatter-sub"],
        "not yet translated (x.at[i].set is)",
    ),
    **dict.fromkeys(
        [
            *("all_gather", "all_gather_invariant", "all_to_all", "ppermute"),
            *("psum", "psum_invariant", "pvary", "reduce_scatter"),
        ],
        "a collective over a named mesh axis: symbolic builds one program, not one per device",
    ),
}
