"""Array expressions printed as the matrix expressions of a textbook, and as LaTeX.

:func:`expression` builds the derivative of a function at the array level
(:mod:`diffkit.symbolic.arrays`) and prints it: vectors are columns, ``X*w`` a matrix
product, ``X.T`` a transpose, ``.*`` and ``./`` elementwise products and quotients
(``\\odot`` and ``\\oslash`` in LaTeX), broadcasting implicit, and a scalar factor is pulled
out front (``2*X.T*(X*w - y)/n``). A constant equal to the size of a dimension prints as that
dimension's name (``n``, ``d``, ``m``, ...: leading axes of matrices first). A subexpression
used more than once is printed once, as a temporary (``t1 = ...``).

Example:
    >>> import jax.numpy as jnp
    >>> f = lambda w, X, y: jnp.sum((X @ w - y) ** 2) / y.shape[0]
    >>> print(expression(f, (jnp.ones(3), jnp.ones((5, 3)), jnp.ones(5))))
    2*X.T*(X*w - y)/n
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy

from diffkit._core.errors import DiffkitError
from diffkit._core.jaxpr import trace
from diffkit.symbolic import arrays

__all__ = ["ArrayExpression", "expression"]

#: elementwise functions and how they print
_FUNCTIONS = {
    "exp": ("exp", r"\exp"),
    "log": ("log", r"\log"),
    "log1p": ("log1p", r"\operatorname{log1p}"),
    "expm1": ("expm1", r"\operatorname{expm1}"),
    "sin": ("sin", r"\sin"),
    "cos": ("cos", r"\cos"),
    "tan": ("tan", r"\tan"),
    "tanh": ("tanh", r"\tanh"),
    "sinh": ("sinh", r"\sinh"),
    "cosh": ("cosh", r"\cosh"),
    "logistic": ("sigmoid", r"\sigma"),
    "sqrt": ("sqrt", r"\sqrt"),
    "rsqrt": ("rsqrt", r"\operatorname{rsqrt}"),
    "abs": ("abs", r"\operatorname{abs}"),
    "sign": ("sign", r"\operatorname{sign}"),
    "erf": ("erf", r"\operatorname{erf}"),
}
_TRANSPARENT = {
    "convert_element_type",
    "reshape",
    "squeeze",
    "expand_dims",
    "copy",
    "copy_p",
    "broadcast_in_dim",
    "pjit",
}
_ADD, _MUL, _POW, _ATOM = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class _P:
    """A printed array expression: ``coef * body`` with a scalar SymPy coefficient (``body``
    ``None``: the expression is that scalar, broadcast)."""

    coef: Any
    body: str | None = None
    tex: str | None = None
    prec: int = _ATOM
    recip: Any = None  # ``1./den``: den's _P (a product with it prints as a quotient)


@dataclasses.dataclass(frozen=True)
class ArrayExpression:
    """A derivative as array expressions (:func:`expression`): ``gradients`` maps each
    differentiated argument's name to its printed expression, ``temporaries`` lists the
    shared subexpressions ``(name, text)`` printed once; ``latex`` is the same in LaTeX;
    ``sizes`` the expression's sizes (:class:`diffkit.symbolic.arrays.ArraySizes`)."""

    gradients: dict[str, str]
    temporaries: tuple[tuple[str, str], ...]
    latex_gradients: dict[str, str]
    latex_temporaries: tuple[tuple[str, str], ...]
    sizes: arrays.ArraySizes
    dimensions: dict[int, str]

    def __str__(self) -> str:
        lines = [f"{t} = {e}" for t, e in self.temporaries]
        if len(self.gradients) == 1 and not lines:
            return next(iter(self.gradients.values()))
        lines += [f"d/d{name} = {e}" for name, e in self.gradients.items()]
        return "\n".join(lines)

    __repr__ = __str__

    @property
    def latex(self) -> str:
        """The expressions in LaTeX (an ``aligned`` block where there are several)."""
        rows = [f"{t} &= {e}" for t, e in self.latex_temporaries]
        if len(self.latex_gradients) == 1 and not rows:
            return next(iter(self.latex_gradients.values()))
        rows += [
            rf"\frac{{\partial f}}{{\partial {_tex_name(n)}}} &= {e}"
            for n, e in self.latex_gradients.items()
        ]
        return r"\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"$${self.latex}$$"


def _tex_name(name: str) -> str:
    m = re.fullmatch(r"([A-Za-z]+)_?(\d+)", name)
    return f"{m.group(1)}_{{{m.group(2)}}}" if m else name.replace("_", r"\_")


def _names(f: Callable, args: Sequence[Any]) -> list[str]:
    """A name per leaf of ``args``: ``f``'s parameter names, with the pytree key after it
    for a leaf of a structure."""
    try:
        params = [
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    names = []
    for k, a in enumerate(args):
        base = params[k] if k < len(params) else f"x{k}"
        paths = jax.tree_util.tree_flatten_with_path(a)[0]
        for path, _ in paths:
            if not path:
                names.append(base)
                continue
            last = path[-1]
            key = getattr(last, "key", getattr(last, "idx", getattr(last, "name", "")))
            names.append(re.sub(r"\W", "_", str(key)) if isinstance(key, str) else f"{base}{key}")
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _dimensions(shapes: Sequence[tuple[int, ...]], taken: set[str]) -> dict[int, str]:
    """Names for the sizes of the arguments' axes: matrices' leading axes first."""
    pool = [c for c in ("n", "d", "m", "k", "p", "q", "r") if c not in taken]
    order = [s for s in shapes if len(s) >= 2] + [s for s in shapes if len(s) < 2]
    dims: dict[int, str] = {}
    for shape in order:
        for size in shape:
            if size > 1 and size not in dims and pool:
                dims[size] = pool.pop(0)
    return dims


def expression(
    f: Callable, args: Sequence[Any], argnums: int | Sequence[int] = 0
) -> ArrayExpression:
    """The derivative of ``f`` at ``args`` with respect to the arguments ``argnums``, as
    printed array expressions (see the module docstring).

    Example:
        >>> import jax.numpy as jnp
        >>> e = expression(lambda x: jnp.sum(jnp.sin(x)), (jnp.ones(4),))
        >>> str(e), e.latex
        ('cos(x)', '\\\\cos\\\\left(x\\\\right)')
    """
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or any(not isinstance(k, int) or not 0 <= k < len(args) for k in nums):
        raise DiffkitError(
            f"symbolic.expression: argnums={argnums!r} must name positional arguments "
            f"0..{len(args) - 1}"
        )
    names = _names(f, args)
    leaves_per = [len(jax.tree_util.tree_leaves(a)) for a in args]
    leaves, in_tree = jax.tree_util.tree_flatten(tuple(args))
    leaves = [jnp.asarray(x) for x in leaves]
    out_tree: list[Any] = []

    def flat(*xs: Any) -> tuple[tuple[Any, ...], tuple[()]]:
        out = f(*jax.tree_util.tree_unflatten(in_tree, list(xs)))
        outs, tree = jax.tree_util.tree_flatten(out)
        out_tree[:] = [tree]
        return tuple(outs), ()

    traced = trace(flat, leaves)
    starts = np.cumsum([0, *leaves_per])
    active = [any(starts[k] <= i < starts[k + 1] for k in nums) for i in range(len(leaves))]
    scalar = all(
        np.size(v.aval.shape) == 0 or np.prod(v.aval.shape) == 1
        for v in traced.closed.jaxpr.outvars
    )
    form = arrays.differentiate(
        traced.closed, leaves, traced.n_outs, names, ones=scalar, active=active
    )
    dims = _dimensions([tuple(np.shape(x)) for x in leaves], set(names))
    picked = [(names[i], form.grads[i]) for i in range(len(leaves)) if active[i]]
    printer = _Printer(dims)
    roots = [g for _, g in picked if g is not None]
    temps = printer.share(roots)
    texts, latexes = {}, {}
    for name, g in picked:
        if g is None:
            texts[name], latexes[name] = "0", "0"
        else:
            p = printer.node(g, top=True)
            texts[name], latexes[name] = _text(p), _latex(p)
    return ArrayExpression(
        texts,
        tuple((t, _text(p)) for t, p in temps),
        latexes,
        tuple((t, _latex(p)) for t, p in temps),
        arrays.sizes(roots),
        dims,
    )


def _wrap(s: str, prec: int, need: int) -> str:
    return f"({s})" if prec < need else s


def _twrap(s: str, prec: int, need: int) -> str:
    return rf"\left({s}\right)" if prec < need else s


def _text(p: _P, need: int = _ADD) -> str:
    """``coef*body`` as text: the numerator before the body, the denominator after it."""
    num, den = sympy.fraction(sympy.factor_terms(p.coef))
    if p.body is None:
        neg = p.coef.is_Add or p.coef.is_negative
        return _wrap(sympy.sstr(p.coef), _ADD if neg else _ATOM, need)
    negative = bool(num.is_number and num < 0)
    if negative:
        num = -num
    out, prec = p.body, p.prec
    if num != 1:
        lead = _wrap(sympy.sstr(num), _ATOM if num.is_Atom else _MUL, _MUL)
        out, prec = f"{lead}*{_wrap(out, prec, _MUL)}", _MUL
    if den != 1:
        tail = _wrap(sympy.sstr(den), _ATOM if den.is_Atom else _ADD, _POW)
        out, prec = f"{_wrap(out, prec, _MUL)}/{tail}", _MUL
    if negative:
        out, prec = "-" + _wrap(out, prec, _MUL), _ADD
    return _wrap(out, prec, need)


def _latex(p: _P, need: int = _ADD) -> str:
    coef = sympy.factor_terms(p.coef)
    if p.tex is None:
        return _twrap(sympy.latex(coef), _ADD if coef.is_Add else _ATOM, need)
    if coef == 1:
        return _twrap(p.tex, p.prec, need)
    if coef == -1:
        return _twrap("-" + _twrap(p.tex, p.prec, _MUL), _ADD, need)
    lead = sympy.latex(coef)
    lead = _twrap(lead, _ADD if coef.is_Add else _MUL, _MUL)
    return _twrap(f"{lead} {_twrap(p.tex, p.prec, _MUL)}", _MUL, need)


class _Printer:
    def __init__(self, dims: dict[int, str]) -> None:
        self.dims = {size: sympy.Symbol(name, positive=True) for size, name in dims.items()}
        self.memo: dict[int, _P] = {}
        self.temps: dict[int, str] = {}

    def share(self, roots: Sequence[arrays.Expr]) -> list[tuple[str, _P]]:
        """Temporaries for the operations used more than once (not transparent ones)."""
        uses: Counter[int] = Counter()
        for e in arrays._needed(roots):
            for a in set(e.args):
                uses[a.id] += 1
        out: list[tuple[str, _P]] = []
        for e in arrays._needed(roots):
            if (
                uses[e.id] > 1
                and e.op not in ("input", "const", "out", *_TRANSPARENT)
                and e.shape != ()
            ) or (uses[e.id] > 1 and e.op in _FUNCTIONS):
                p = self.node(e)
                if p.body is None or (p.prec == _ATOM and "(" not in (p.body or "")):
                    continue
                name = f"t{len(out) + 1}"
                out.append((name, p))
                self.temps[e.id] = name
        return out

    def const(self, value: Any, divisor: bool = False) -> Any:
        """A uniform constant as a SymPy number; a divisor (or a reciprocal) equal to a
        dimension's size, or to the product of two, as their names."""
        a = np.asarray(value)
        if a.size == 0 or a.dtype == object or not np.all(a == a.flat[0]):
            return None
        v = a.flat[0]
        if isinstance(v, np.bool_ | bool):
            return sympy.true if v else sympy.false
        if np.iscomplexobj(a):
            return sympy.sympify(complex(v))
        v = float(v)
        if not np.isfinite(v):
            return sympy.oo if v > 0 else (-sympy.oo if v < 0 else sympy.nan)
        sign = 1 if v > 0 else -1
        if v.is_integer() and abs(v) < 2**53:
            if divisor and (named := self.named(int(abs(v)))) is not None:
                return sign * named
            return sympy.Integer(int(v))
        eps = float(np.finfo(a.dtype).eps) if np.issubdtype(a.dtype, np.floating) else 1e-15
        r = sympy.nsimplify(v, rational=True, tolerance=8 * eps * abs(v))
        if r.q > 1 and (named := self.named(int(r.q))) is not None:
            return r.p / named  # 1/n, 2/n: a dimension's size as the denominator
        return r if r.q < 1000 else sympy.Float(v, 6)

    def named(self, size: int) -> Any:
        if size in self.dims:
            return self.dims[size]
        for a, s1 in self.dims.items():
            for b, s2 in self.dims.items():
                if a < b and a * b == size:
                    return s1 * s2
        return None

    def node(self, e: arrays.Expr, top: bool = False) -> _P:
        if not top and e.id in self.temps:
            return _P(sympy.Integer(1), self.temps[e.id], self.temps[e.id])
        if e.id not in self.memo or top:
            p = self._node(e)
            if top:
                return p
            self.memo[e.id] = p
        return self.memo[e.id]

    def _node(self, e: arrays.Expr) -> _P:
        one = sympy.Integer(1)
        op, args = e.op, e.args
        if op == "input":
            return _P(one, e.name, _tex_name(e.name))
        if op == "const":
            c = self.const(e.value)
            if c is not None:
                return _P(c)
            return _P(one, f"const{list(e.shape)}", rf"\mathrm{{const}}_{{{list(e.shape)}}}")
        if op in _TRANSPARENT:
            return self.node(args[0])
        ps = [self.node(a) for a in args]
        if op == "neg":
            return dataclasses.replace(ps[0], coef=-ps[0].coef)
        if op == "div" and (u := arrays._uniform(args[1])) is not None:
            c = self.const(u, divisor=True)
            if c is not None and c != 0:
                return dataclasses.replace(ps[0], coef=ps[0].coef / c)
        if op == "mul" and len(args) == 2:  # a * (1 / b): a ./ b
            for i in (0, 1):
                r = args[1 - i]
                u = arrays._uniform(r.args[0]) if r.op == "div" else None
                c = None if u is None else self.const(u)
                if c is not None and c != 0 and args[i].shape == e.shape:
                    p = self._node_div(args[i], r.args[1])
                    return dataclasses.replace(p, coef=p.coef * c)
        if op == "dot_general" and any(a.shape == () for a in args):
            op = "mul"
        if op == "mul" and len(ps) == 2 and e.shape != ():
            for px, pr in ((ps[0], ps[1]), (ps[1], ps[0])):
                if pr.recip is not None and px.body is not None and px.recip is None:
                    den = pr.recip
                    return _P(
                        px.coef * pr.coef,
                        f"{_wrap(px.body, px.prec, _MUL)}./{_wrap(den.body, den.prec, _POW)}",
                        f"{_twrap(px.tex or '', px.prec, _MUL)} \\oslash "
                        f"{_twrap(den.tex, den.prec, _POW)}",
                        _MUL,
                    )
        if op in ("mul", "div") and len(ps) == 2:
            a, b = ps
            if op == "div" and a.body is None:
                scalar = args[1].shape == ()
                body = _wrap(b.body or "", b.prec, _POW)
                tex = rf"\frac{{1}}{{{b.tex}}}"
                return _P(a.coef / b.coef, f"1{'/' if scalar else './'}{body}", tex, _MUL)
            if b.body is None and (op == "mul" or b.coef != 0):
                return dataclasses.replace(
                    a, coef=a.coef * b.coef if op == "mul" else a.coef / b.coef
                )
            if a.body is None and op == "mul":
                return dataclasses.replace(b, coef=a.coef * b.coef)
            scalar = args[0].shape == () or args[1].shape == ()
            sym, tex = ("*", r" ") if scalar else (".*", r" \odot ")
            if op == "div":
                sym, tex = ("/", r" / ") if scalar else ("./", r" \oslash ")
                return _P(
                    a.coef / b.coef if b.coef != 0 else a.coef,
                    f"{_wrap(a.body or '', a.prec, _MUL)}{sym}{_wrap(b.body or '', b.prec, _POW)}",
                    rf"\frac{{{a.tex}}}{{{b.tex}}}" if scalar else
                    f"{_twrap(a.tex or '', a.prec, _MUL)}{tex}{_twrap(b.tex or '', b.prec, _POW)}",
                    _MUL,
                )  # fmt: skip
            return _P(
                a.coef * b.coef,
                f"{_wrap(a.body or '', a.prec, _MUL)}{sym}{_wrap(b.body or '', b.prec, _POW)}",
                f"{_twrap(a.tex or '', a.prec, _MUL)}{tex}{_twrap(b.tex or '', b.prec, _POW)}",
                _MUL,
            )
        if op in ("add", "sub", "add_any") and len(ps) == 2:
            a, b = ps
            if op == "sub":
                b = dataclasses.replace(b, coef=-b.coef)
            if a.body is None and b.body is None:
                return _P(a.coef + b.coef)
            if a.body is not None and b.body is not None and a.coef == b.coef:
                return _P(
                    a.coef,
                    *self._sum(dataclasses.replace(a, coef=one), dataclasses.replace(b, coef=one)),
                    _ADD,
                )
            if a.body is not None and b.body is not None and a.coef == -b.coef:
                return _P(
                    a.coef,
                    *self._sum(dataclasses.replace(a, coef=one), dataclasses.replace(b, coef=-one)),
                    _ADD,
                )
            return _P(one, *self._sum(a, b), _ADD)
        if op == "integer_pow":
            a, y = ps[0], e.params["y"]
            sym = "**" if args[0].shape == () else ".^"
            body = f"{_text(dataclasses.replace(a, coef=one), _ATOM)}{sym}{y}"
            tex = f"{_latex(dataclasses.replace(a, coef=one), _ATOM)}^{{{y}}}"
            if args[0].shape != ():
                tex = f"{_latex(dataclasses.replace(a, coef=one), _ATOM)}^{{\\circ {y}}}"
            return _P(
                a.coef**y,
                body if a.body else None,
                tex if a.body else None,
                _POW,
            )
        if op in _FUNCTIONS:
            name, tex = _FUNCTIONS[op]
            return _P(one, f"{name}({_text(ps[0])})", rf"{tex}\left({_latex(ps[0])}\right)")
        if op == "transpose" and args[0].op == "dot_general" and args[0].id not in self.temps:
            factors = self._factors(args[0])
            if factors is not None and len(args[0].shape) == 2:  # (A B).T = B.T A.T
                return self._product([(p, not t) for p, t in reversed(factors)])
        if op == "transpose":
            a = ps[0]
            if len(args[0].shape) == 2 and a.body is not None:
                return _P(
                    a.coef,
                    f"{_wrap(a.body, a.prec, _ATOM)}.T",
                    f"{_twrap(a.tex or '', a.prec, _ATOM)}^{{\\top}}",
                )
        if op == "reduce_sum" and ps[0].body is not None:
            a, axes = ps[0], tuple(e.params["axes"])
            if all(args[0].shape[i] == 1 for i in axes):
                return a
            whole = len(axes) == len(args[0].shape)
            at = "" if whole else f", {axes[0] if len(axes) == 1 else axes}"
            sub = "" if whole else f"_{{{','.join(map(str, axes))}}}"
            tex = rf"\textstyle\sum{sub} {_twrap(a.tex or '', a.prec, _MUL)}"
            return _P(a.coef, f"sum({a.body}{at})", tex, _MUL)
        if op == "dot_general":
            found = self._dot(e, ps)
            if found is not None:
                return found
        text = ", ".join(_text(p) for p in ps)
        tex = ", ".join(_latex(p) for p in ps)
        return _P(one, f"{op}({text})", rf"\operatorname{{{op}}}\left({tex}\right)")

    def _node_div(self, x: arrays.Expr, y: arrays.Expr) -> _P:
        a, b = self.node(x), self.node(y)
        if b.body is None:
            return dataclasses.replace(a, coef=a.coef / b.coef)
        if a.body is None:
            scalar = y.shape == ()
            return _P(
                a.coef / b.coef,
                f"1{'/' if scalar else './'}{_wrap(b.body, b.prec, _POW)}",
                rf"\frac{{1}}{{{b.tex}}}",
                _MUL,
                dataclasses.replace(b, coef=sympy.Integer(1)),
            )
        scalar = x.shape == () or y.shape == ()
        num = a.body if a.body is not None else sympy.sstr(a.coef)
        ntex = a.tex if a.tex is not None else sympy.latex(a.coef)
        coef = (a.coef if a.body is not None else 1) / b.coef
        return _P(
            coef,
            f"{_wrap(num, a.prec, _MUL)}{'/' if scalar else './'}{_wrap(b.body, b.prec, _POW)}",
            rf"\frac{{{ntex}}}{{{b.tex}}}"
            if scalar
            else rf"{_twrap(ntex, a.prec, _MUL)} \oslash {_twrap(b.tex or '', b.prec, _POW)}",
            _MUL,
        )

    def _sum(self, a: _P, b: _P) -> tuple[str, str]:
        ta, tb = _text(a), _text(b)
        la, lb = _latex(a), _latex(b)
        if tb.startswith("-"):
            return f"{ta} - {tb[1:]}", f"{la} - {lb[1:]}"
        return f"{ta} + {tb}", f"{la} + {lb}"

    def _factors(self, e: arrays.Expr) -> list[tuple[_P, bool]] | None:
        """A contraction of matrices and vectors as a product of factors, each transposed
        or not (vectors are columns); ``None`` for other contractions."""
        (lc, rc), (lb, rb) = e.params["dimension_numbers"]
        ra, rb_ = len(e.args[0].shape), len(e.args[1].shape)
        if lb or rb or len(lc) != 1 or ra > 2 or rb_ > 2:
            return None
        a, b = self.node(e.args[0]), self.node(e.args[1])
        if a.body is None or b.body is None:
            return None
        if ra == 1 and rb_ == 2:  # v . M = M.T v, as a column
            return [(b, rc[0] == 0), (a, False)]
        return [(a, (ra == 2 and lc[0] == 0) or ra == 1), (b, rb_ == 2 and rc[0] == 1)]

    def _product(self, factors: list[tuple[_P, bool]]) -> _P:
        coef, texts, texes = sympy.Integer(1), [], []
        for p, t in factors:
            coef *= p.coef
            if t:
                texts.append(f"{_wrap(p.body or '', p.prec, _ATOM)}.T")
                texes.append(f"{_twrap(p.tex or '', p.prec, _ATOM)}^{{\\top}}")
            else:
                texts.append(
                    _wrap(
                        p.body or "",
                        p.prec,
                        _MUL if p.prec == _MUL and "." not in (p.body or "") else _POW,
                    )
                )
                texes.append(_twrap(p.tex or "", p.prec, _POW))
        return _P(coef, "*".join(texts), " ".join(texes), _MUL)

    def _dot(self, e: arrays.Expr, ps: list[_P]) -> _P | None:
        factors = self._factors(e)
        return None if factors is None else self._product(factors)
