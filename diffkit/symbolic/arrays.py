"""Symbolic differentiation at the array level: expressions over whole arrays, not scalars.

Each value of the function is an :class:`Expr`, a node of a small array-expression language
whose operations are JAX's primitives (``dot_general`` for contractions, ``reduce_sum``,
``broadcast_in_dim``, ``transpose``, elementwise functions, ``scan``/``while``/``cond`` as
calls over their bodies). A :class:`Graph` builds the nodes by *hash-consing*: a node with the
same operation, parameters and arguments as an earlier one is that node, so common
subexpressions are shared as they are made (the function's and the derivative's alike), and
every node passes a simplifier first (``x * 1``, ``x + 0``, ``--x``, a conversion to the
same dtype, an identity reshape, transpose or broadcast, ``x ** 1``; small constant
subexpressions are folded).

The derivative is formed symbolically in reverse: the adjoint of each node is an expression
over the primal nodes and the adjoint of its outputs, written by the one rule table of dual
and tape (:mod:`diffkit.rules`; control flow and custom rules by tape's handlers), spliced
into the same graph. Its size does not depend on the number of elements: the gradient of
least squares is ``2*X.T*(X*w - y)/n`` for every ``n`` (:mod:`diffkit.symbolic.printing`
prints it). The graph is lowered to a JAX program (each node one ``bind`` of its primitive)
under :func:`jax.jit`: a forward program returning the outputs and the residuals the adjoint
reads, and an adjoint program.

Why our own small language and not SymPy's ``sympy.tensor.array.expressions``: SymPy's array
expressions cover contractions, products and diagonals, but not the reductions, slices,
gathers, scatters, control flow and special functions of real programs, and building and
canonicalising them costs milliseconds per node; a jaxpr's primitives are already an
array-expression language with exact JAX semantics, so the expression evaluates exactly as
the function does.

Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: jnp.sum(jnp.sin(x) * x)
    >>> closed = jax.make_jaxpr(f)(jnp.ones(3))
    >>> form = differentiate(closed, [jnp.ones(3)], n_outs=1)
    >>> form.grads[0]  # sin(x) ybar + cos(x) (x ybar), ybar broadcast from the scalar output
    add(mul(sin(x0), broadcast_in_dim(ybar0)), mul(cos(x0), mul(x0, broadcast_in_dim(ybar0))))
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from diffkit._core.errors import DiffkitError, UnsupportedPrimitiveError
from diffkit._core.jaxpr import inner_jaxpr, is_float

__all__ = ["ArrayForm", "ArraySizes", "Expr", "Graph", "differentiate", "lower", "sizes"]

#: primitives whose value depends on hidden state or that are effects: never folded or shared
_IMPURE = {
    "random_bits",
    "random_seed",
    "random_wrap",
    "random_unwrap",
    "rng_uniform",
    "rng_bit_generator",
    "io_callback",
    "pure_callback",
    "debug_callback",
    "debug_print",
}

#: primitives through which no derivative flows (the zero rows of the rule table)
_ZERO = {"bitcast_convert_type", "ceil", "floor", "round", "sign", "stop_gradient"}

#: array-level operations that move elements without arithmetic (0 scalar operations)
STRUCTURAL = {
    "broadcast_in_dim",
    "reshape",
    "transpose",
    "squeeze",
    "expand_dims",
    "slice",
    "dynamic_slice",
    "dynamic_update_slice",
    "concatenate",
    "pad",
    "gather",
    "rev",
    "convert_element_type",
    "copy",
    "copy_p",
    "select_n",
    "iota",
}

#: reductions: one scalar operation per input element
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"}


class Expr:
    """One node: ``op`` (a primitive's name, ``"input"``, ``"const"`` or ``"out"``: output
    ``params['index']`` of a primitive with several results), its ``args``, its ``shape`` and
    ``dtype``. ``active``: depends on a differentiated input."""

    __slots__ = (
        "active",
        "args",
        "avals",
        "dtype",
        "id",
        "name",
        "op",
        "params",
        "prim",
        "shape",
        "value",
        "weak",
    )

    def __init__(
        self,
        op: str,
        prim: Any,
        params: dict[str, Any],
        args: tuple[Expr, ...],
        shape: tuple[int, ...],
        dtype: Any,
        ident: int,
        *,
        name: str = "",
        value: Any = None,
        avals: tuple[Any, ...] = (),
        weak: bool = False,
    ) -> None:
        self.op, self.prim, self.params, self.args = op, prim, params, args
        self.shape, self.dtype, self.id, self.name, self.value = shape, dtype, ident, name, value
        self.avals, self.weak = avals, weak
        self.active: bool = any(a.active for a in args)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        if self.op == "input":
            return self.name
        if self.op == "const":
            return f"const{self.shape}"
        return f"{self.op}({', '.join(map(repr, self.args))})"


def _freeze(obj: Any) -> Any:
    """A hashable key for a primitive's parameters (jaxprs and functions by identity)."""
    if isinstance(obj, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, list | tuple):
        return (type(obj).__name__, tuple(_freeze(v) for v in obj))
    if isinstance(obj, np.ndarray | jax.Array):
        a = np.asarray(obj)
        return ("array", a.shape, str(a.dtype), a.tobytes())
    try:
        hash(obj)
    except TypeError:
        _ALIVE[id(obj)] = obj  # kept alive: its id may not be reused by another object
        return ("id", id(obj))
    return obj


_ALIVE: dict[int, Any] = {}


def _uniform(e: Expr) -> Any:
    """The one value every element of ``e`` holds, if it is a constant filled with it."""
    while e.op in ("broadcast_in_dim", "convert_element_type", "reshape") and e.args:
        e = e.args[0]
    if e.op == "const":
        a = np.asarray(e.value)
        if a.size and a.dtype != object and np.all(a == a.flat[0]):
            return a.flat[0]
    return None


class Graph:
    """Hash-consed, simplified array expressions (see the module docstring).

    Example:
        >>> import jax.numpy as jnp
        >>> from jax import lax
        >>> g = Graph()
        >>> x = g.input("x", (3,), jnp.float64)
        >>> a = g.apply(lax.sin_p, {"accuracy": None}, [x])
        >>> a is g.apply(lax.sin_p, {"accuracy": None}, [x])  # shared, not built twice
        True
    """

    def __init__(self, size_check: Callable[[int], None] | None = None) -> None:
        self.nodes: list[Expr] = []
        self.table: dict[Any, Expr] = {}
        self.counter = itertools.count()
        self.size_check = size_check

    def _new(self, key: Any, *args: Any, **kwargs: Any) -> Expr:
        if key is not None and key in self.table:
            return self.table[key]
        e = Expr(*args, ident=next(self.counter), **kwargs)  # type: ignore[misc]
        self.nodes.append(e)
        if key is not None:
            self.table[key] = e
        if self.size_check is not None:
            self.size_check(len(self.nodes))
        return e

    def input(self, name: str, shape: tuple[int, ...], dtype: Any, active: bool = True) -> Expr:
        """A symbol for an array argument of ``shape`` and ``dtype``."""
        e = self._new(None, "input", None, {}, (), tuple(shape), np.dtype(dtype), name=name)
        e.active = active
        return e

    def const(self, value: Any, weak: bool = False) -> Expr:
        """A constant array (a literal, a folded value, a constant the function holds)."""
        if isinstance(value, jax.core.Tracer):
            raise DiffkitError("symbolic: a traced constant cannot be a constant node")
        if jax.dtypes.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.extended):
            key: tuple[Any, ...] = ("const-ext", id(value))
            dtype = value.dtype
            return self._new(
                key, "const", None, {}, (), tuple(value.shape), dtype, value=value, weak=weak
            )
        a = np.asarray(value)
        if a.dtype != object:
            a = a.astype(jax.dtypes.canonicalize_dtype(a.dtype), copy=False)
        key = ("const", a.shape, str(a.dtype), a.tobytes(), weak)
        return self._new(key, "const", None, {}, (), a.shape, a.dtype, value=a, weak=weak)

    def apply(self, prim: Any, params: dict[str, Any], args: Sequence[Expr]) -> Any:
        """``prim`` applied to ``args``: an :class:`Expr`, or a list of them for a primitive
        with several results (simplified and shared as the module docstring says)."""
        args = tuple(args)
        simple = None if prim.multiple_results else self._simplify(prim.name, params, args)
        if simple is not None:
            return simple
        avals = self._avals(prim, params, args)
        pure = prim.name not in _IMPURE
        key = (prim.name, id(prim), _freeze(params), tuple(a.id for a in args)) if pure else None
        if pure and not prim.multiple_results and all(a.op == "const" for a in args):
            folded = self._fold(prim, params, args, avals[0])
            if folded is not None:
                return folded
        if prim.multiple_results:
            node = self._new(key, prim.name, prim, params, args, (), None, avals=tuple(avals))
            outs = [
                self._new(
                    ("out", node.id, i),
                    "out",
                    None,
                    {"index": i},
                    (node,),
                    tuple(av.shape),
                    av.dtype,
                    weak=getattr(av, "weak_type", False),
                )
                for i, av in enumerate(avals)
            ]
            for o in outs:
                o.active = o.active and is_float(o) and prim.name not in _ZERO
            return outs
        av = avals[0]
        weak = bool(getattr(av, "weak_type", False))
        e = self._new(key, prim.name, prim, params, args, tuple(av.shape), av.dtype, weak=weak)
        if e.active and (prim.name in _ZERO or not is_float(e)):
            e.active = False  # no derivative flows through it (stop_gradient, floor, ...)
        return e

    def _avals(self, prim: Any, params: dict[str, Any], args: tuple[Expr, ...]) -> list[Any]:
        specs = [_spec(a) for a in args]
        out = jax.eval_shape(lambda *xs: prim.bind(*xs, **params), *specs)
        return list(out) if prim.multiple_results else [out]

    def _fold(self, prim: Any, params: dict, args: tuple[Expr, ...], aval: Any) -> Expr | None:
        if math.prod(aval.shape) > 64 or any(a.size > 4096 for a in args):
            return None
        if not all(isinstance(a.value, np.ndarray) for a in args):
            return None
        try:
            with jax.ensure_compile_time_eval():
                value = prim.bind(*(_literal(a) for a in args), **params)
            value = np.asarray(value)
        except Exception:  # a primitive that will not run eagerly: keep the node
            return None
        return self.const(value, weak=bool(getattr(aval, "weak_type", False)))

    def _simplify(self, name: str, params: dict, args: tuple[Expr, ...]) -> Expr | None:
        """An earlier node this one equals: identities of the algebra (no NaN changes)."""
        if name == "convert_element_type" and args[0].dtype == np.dtype(params["new_dtype"]):
            return args[0]
        if name in ("reshape",) and args[0].shape == tuple(params["new_sizes"]) and len(args) == 1:
            return args[0]
        if name == "transpose" and tuple(params["permutation"]) == tuple(range(len(args[0].shape))):
            return args[0]
        if name == "transpose" and args[0].op == "transpose":
            inner, outer = args[0].params["permutation"], params["permutation"]
            perm = tuple(inner[p] for p in outer)
            return self.apply(args[0].prim, {**params, "permutation": perm}, [args[0].args[0]])
        if (
            name == "broadcast_in_dim"
            and len(args) == 1
            and args[0].shape == tuple(params["shape"])
            and tuple(params["broadcast_dimensions"]) == tuple(range(len(args[0].shape)))
        ):
            return args[0]
        if (
            name == "broadcast_in_dim"
            and len(args) == 1
            and args[0].op == "broadcast_in_dim"
            and len(args[0].args) == 1
        ):  # two broadcasts are one
            inner = args[0]
            dims = tuple(
                params["broadcast_dimensions"][d] for d in inner.params["broadcast_dimensions"]
            )
            return self.apply(inner.prim, {**params, "broadcast_dimensions": dims}, [inner.args[0]])
        if name == "squeeze" and not params["dimensions"]:
            return args[0]
        if name == "integer_pow" and params["y"] == 1:
            return args[0]
        if name == "neg" and args[0].op == "neg":
            return args[0].args[0]
        if name in ("mul", "add", "sub") and len(args) == 2:
            a, b = args
            unit = 1 if name == "mul" else 0
            shape = jnp.broadcast_shapes(a.shape, b.shape)
            if _uniform(b) == unit and a.shape == shape and a.dtype == _dtype(b, a):
                return a
            if name != "sub" and _uniform(a) == unit and b.shape == shape and b.dtype == a.dtype:
                return b
        return None

    # ------------------------------------------------------------- jaxprs

    def run(self, closed: Any, args: Sequence[Expr]) -> list[Expr]:
        """The outputs of ``closed`` (calls inlined) as expressions in ``args``."""
        jaxpr = closed.jaxpr
        env: dict[Any, Expr] = {}

        def read(v: Any) -> Expr:
            if isinstance(v, jex_core.Literal):
                value = np.asarray(v.val, v.aval.dtype) if hasattr(v.aval, "dtype") else v.val
                return self.const(value, weak=bool(getattr(v.aval, "weak_type", False)))
            return env[v]

        for var, c in zip(jaxpr.constvars, closed.consts, strict=True):
            env[var] = c if isinstance(c, Expr) else self.const(c)
        for var, a in zip(jaxpr.invars, args, strict=True):
            env[var] = a
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            inner = inner_jaxpr(eqn)
            if inner is not None:
                outs = self.run(inner, invals)
            else:
                params = eqn.primitive.get_bind_params(eqn.params)
                found = self.apply(eqn.primitive, params, invals)
                outs = found if eqn.primitive.multiple_results else [found]
            for var, value in zip(eqn.outvars, outs, strict=True):
                env[var] = value
        return [read(v) for v in jaxpr.outvars]


def _spec(e: Expr) -> Any:
    return jax.ShapeDtypeStruct(e.shape, e.dtype, weak_type=e.weak)


def _literal(e: Expr) -> Any:
    v = e.value
    return jnp.asarray(v, dtype=e.dtype) if isinstance(v, np.ndarray) else v


def _dtype(b: Expr, a: Expr) -> Any:
    """``b``'s dtype, or ``a``'s where ``b`` is a weakly typed literal."""
    return a.dtype if b.weak else b.dtype


# ------------------------------------------------------------- the derivative


@dataclasses.dataclass
class ArrayForm:
    """A function and its derivative as array expressions (:func:`differentiate`).

    ``inputs``: the symbols of the differentiated arguments; ``consts``: symbols for the
    floating-point arrays the function closes over (passed at run time); ``outputs``: the
    function's outputs (and aux); ``bars``: symbols for the outputs' cotangents; ``grads``:
    the inputs' cotangents (the adjoint expressions, ``None`` where none flows).
    """

    graph: Graph
    inputs: list[Expr]
    consts: list[Expr]
    const_index: tuple[int, ...]
    outputs: list[Expr]
    bars: list[Expr]
    grads: list[Expr | None]


def is_runtime(c: Any) -> bool:
    """Whether a constant the function holds is an argument of the program (a floating-point
    array of more than one element, or anything traced) rather than folded in."""
    if isinstance(c, jax.core.Tracer):
        return True
    if jax.dtypes.issubdtype(getattr(c, "dtype", np.float32), jax.dtypes.extended):
        return False
    return bool(np.issubdtype(np.asarray(c).dtype, np.inexact)) and np.size(c) > 1


def differentiate(
    closed: Any,
    primals: Sequence[Any],
    n_outs: int,
    names: Sequence[str] | None = None,
    size_check: Callable[[int], None] | None = None,
    ones: bool = False,
    active: Sequence[bool] | None = None,
) -> ArrayForm:
    """The array expressions of ``closed`` (outputs ``outs + aux``) at the shapes of
    ``primals``, and the adjoint expressions of the inputs for cotangents of the first
    ``n_outs`` outputs (symbols ``ybar0``, ...; ``ones``: the constant 1 instead, which
    gives the gradient of a scalar output in its simplest form, for printing). ``active``
    flags the inputs to differentiate (default: all floating-point ones).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(lambda x: jnp.sum(x * x))(jnp.ones(2))
        >>> form = differentiate(closed, [jnp.ones(2)], n_outs=1)
        >>> len(form.graph.nodes) < 12, form.grads[0].shape
        (True, (2,))
    """
    g = Graph(size_check)
    names = list(names) if names else [f"x{k}" for k in range(len(primals))]
    inputs = [
        g.input(n, np.shape(p), jnp.result_type(p)) for n, p in zip(names, primals, strict=True)
    ]
    for k, x in enumerate(inputs):
        x.active = is_float(x) and (active is None or bool(active[k]))
    const_index = tuple(i for i, c in enumerate(closed.consts) if is_runtime(c))
    consts: list[Any] = list(closed.consts)
    symbols = []
    for j, i in enumerate(const_index):
        c = closed.consts[i]
        s = g.input(f"c{j}", tuple(np.shape(c)), c.dtype, active=False)
        consts[i] = s
        symbols.append(s)
    outputs = g.run(jex_core.ClosedJaxpr(closed.jaxpr, consts), inputs)
    bars = [
        g.const(np.ones(o.shape, o.dtype))
        if ones
        else g.input(f"ybar{j}", o.shape, o.dtype, active=False)
        for j, o in enumerate(outputs[:n_outs])
    ]
    grads = _reverse(g, outputs[:n_outs], bars, inputs)
    return ArrayForm(g, inputs, symbols, const_index, outputs, bars, grads)


def _reverse(
    g: Graph, outs: Sequence[Expr], bars: Sequence[Expr], inputs: Sequence[Expr]
) -> list[Expr | None]:
    """Reverse accumulation over the graph: each active node's adjoint expressions, from
    its outputs' adjoints and its local rule (:func:`_local`), summed where a node is used
    more than once."""
    adj: dict[int, Expr] = {}

    def accumulate(e: Expr, bar: Expr) -> None:
        if bar.dtype != e.dtype and is_float(e):
            bar = g.apply(jax.lax.convert_element_type_p, _convert(e.dtype), [bar])
        adj[e.id] = g.apply(jax.lax.add_p, {}, [adj[e.id], bar]) if e.id in adj else bar

    for o, b in zip(outs, bars, strict=True):
        if o.active and is_float(o):
            accumulate(o, b)
    forward = [e for e in g.nodes if e.active and e.op not in ("input", "const", "out")]
    for node in reversed(forward):
        if node.prim is not None and node.prim.multiple_results:
            outs_of = [g.table.get(("out", node.id, i)) for i in range(len(node.avals))]
            y_bars = [None if o is None else adj.pop(o.id, None) for o in outs_of]
        else:
            y_bars = [adj.pop(node.id, None)]
        if all(b is None for b in y_bars):
            continue
        unique = list(dict.fromkeys(node.args))
        needs = tuple(a.active and is_float(a) for a in unique)
        local, gives = _local(node, unique, needs, tuple(b is not None for b in y_bars))
        x_bars = g.run(local, [*unique, *(b for b in y_bars if b is not None)])
        it = iter(x_bars)
        for a, give in zip(unique, gives, strict=True):
            if give:
                accumulate(a, next(it))
    return [adj.get(x.id) for x in inputs]


def _convert(dtype: Any) -> dict[str, Any]:
    return {"new_dtype": np.dtype(dtype), "weak_type": False, "sharding": None}


_LOCAL: dict[Any, tuple[Any, tuple[bool, ...]]] = {}


def _local(
    node: Expr, unique: Sequence[Expr], needs: tuple[bool, ...], present: tuple[bool, ...]
) -> tuple[Any, tuple[bool, ...]]:
    """The node's local adjoint as a closed jaxpr ``(*args, *present output adjoints) ->
    (adjoints of the args that get one)``, and which args get one: the rule of the shared
    table (control flow, custom rules and library primitives by tape's handlers), traced
    once per (primitive, parameters, shapes) and cached."""
    # the tape is a layer above (it registers symbolic): reached by name, as the registry
    # reaches the built-ins (docs/ARCHITECTURE.md, Layers)
    Tape = importlib.import_module("diffkit.differentiators.tape").Tape

    key = (
        node.prim.name,
        id(node.prim),
        _freeze(node.params),
        tuple((a.shape, str(a.dtype), a.weak) for a in unique),
        tuple(unique.index(a) for a in node.args),
        needs,
        present,
    )
    if key in _LOCAL:
        return _LOCAL[key]
    prim, params = node.prim, node.params
    positions = [unique.index(a) for a in node.args]
    specs = [_spec(a) for a in unique]
    one = jax.make_jaxpr(lambda *u: prim.bind(*(u[p] for p in positions), **params))(*specs)
    gives: list[bool] = []

    def local(*ins: Any) -> list[Any]:
        xs, given = ins[: len(unique)], iter(ins[len(unique) :])
        tape = Tape.record(one, list(xs), list(needs))
        y_bars = [next(given) if p else None for p in present]
        x_bars = tape.sweep(y_bars, instantiate=False)
        gives[:] = [b is not None for b in x_bars]
        return [b for b in x_bars if b is not None]

    bar_specs = [
        jax.ShapeDtypeStruct(av.shape, av.dtype)
        for av, p in zip(node.avals or (_spec(node),), present, strict=True)
        if p
    ]
    try:
        closed = jax.make_jaxpr(local)(*specs, *bar_specs)
    except UnsupportedPrimitiveError as error:
        raise UnsupportedPrimitiveError(str(error).replace("tape:", "symbolic:", 1)) from None
    _LOCAL[key] = (closed, tuple(gives))
    if len(_LOCAL) > 4096:
        _LOCAL.pop(next(iter(_LOCAL)))
    return closed, tuple(gives)


# ------------------------------------------------------------------- lowering


def lower(params_in: Sequence[Expr], outputs: Sequence[Expr]) -> Callable[..., list[jax.Array]]:
    """A function of arrays for ``params_in`` computing ``outputs``: each needed node one
    ``bind`` of its primitive, in the order they were made (a topological order).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax import lax
        >>> g = Graph()
        >>> x = g.input("x", (), jnp.float32)
        >>> f = lower([x], [g.apply(lax.sin_p, {"accuracy": None}, [x])])
        >>> float(f(jnp.float32(0.0))[0])
        0.0
    """
    positions = {e.id: i for i, e in enumerate(params_in)}
    order = _needed(outputs, set(positions))
    missing = [e for e in order if e.op == "input" and e.id not in positions]
    if any(e.op == "out" and e.args[0].id in positions for e in order):
        raise DiffkitError("symbolic: internal: a multiple-result node given as an input")
    if missing:
        raise DiffkitError(f"symbolic: internal: {missing[0].name} is not an input")

    def program(*arrays: Any) -> list[jax.Array]:
        env: dict[int, Any] = {}
        for e in order:
            if e.id in positions:
                env[e.id] = arrays[positions[e.id]]
            elif e.op == "const":
                env[e.id] = _literal(e)
            elif e.op == "out":
                env[e.id] = env[e.args[0].id][e.params["index"]]
            else:
                env[e.id] = e.prim.bind(*(env[a.id] for a in e.args), **e.params)
        return [env[o.id] for o in outputs]

    return program


def _needed(outputs: Sequence[Expr], stop: set[int] | None = None) -> list[Expr]:
    """The nodes ``outputs`` are computed from, in the order they were made (not past the
    ids in ``stop``: nodes given as inputs)."""
    seen: dict[int, Expr] = {}
    stack = list(outputs)
    while stack:
        e = stack.pop()
        if e.id in seen:
            continue
        seen[e.id] = e
        if not (stop and e.id in stop):
            stack.extend(e.args)
    return sorted(seen.values(), key=lambda e: e.id)


def depends_on(outputs: Sequence[Expr], symbols: Sequence[Expr]) -> set[int]:
    """Ids of the nodes (needed by ``outputs``) that depend on any of ``symbols``."""
    marked = {s.id for s in symbols}
    for e in _needed(outputs):
        if any(a.id in marked for a in e.args):
            marked.add(e.id)
    return marked


# ------------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class ArraySizes:
    """Sizes of array expressions, at the array level and scalarised.

    ``array_nodes``: operations of the shared (CSE) array expression; ``array_tree``: its
    operations written out as a tree; ``scalar_ops``: the scalar operations the shared array
    expression stands for (an elementwise node on n elements is n, a contraction n*k
    multiply-adds, moving elements 0); ``scalar_tree``: the scalar operations written out as
    a tree of scalar expressions, as the scalar level builds them (no sharing at all).
    """

    array_nodes: int
    array_tree: int
    scalar_ops: int
    scalar_tree: int


def sizes(outputs: Sequence[Expr]) -> ArraySizes:
    """Sizes of the expressions ``outputs`` (see :class:`ArraySizes`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax import lax
        >>> g = Graph()
        >>> x = g.input("x", (1000,), jnp.float64)
        >>> s = sizes([g.apply(lax.sin_p, {"accuracy": None}, [x])])
        >>> s.array_nodes, s.scalar_ops
        (1, 1000)
    """
    order = [e for e in _needed([o for o in outputs if o is not None])]
    tree: dict[int, int] = {}
    per: dict[int, int] = {}  # scalar tree operations per element
    nodes = ops = 0
    for e in order:
        if e.op in ("input", "const"):
            tree[e.id] = per[e.id] = 0
            continue
        if e.op == "out":
            tree[e.id], per[e.id] = tree[e.args[0].id], per[e.args[0].id]
            continue
        nodes += 1
        tree[e.id] = 1 + sum(tree[a.id] for a in e.args)
        inner = sum(per[a.id] for a in e.args)
        if e.op in STRUCTURAL:
            per[e.id] = max((per[a.id] for a in e.args), default=0)
        elif e.op == "dot_general":
            (contract, _), _ = e.params["dimension_numbers"]
            k = math.prod(e.args[0].shape[d] for d in contract)
            ops += e.size * (2 * k - 1)
            per[e.id] = k * inner + 2 * k - 1
        elif e.op in _REDUCTIONS:
            k = max(1, e.args[0].size // max(1, e.size))
            ops += e.args[0].size
            per[e.id] = k * inner + k - 1
        else:
            ops += max(e.size, 1)
            per[e.id] = 1 + inner
    scalar_tree = sum(per[o.id] * max(o.size, 1) for o in outputs if o is not None)
    array_tree = sum(tree[o.id] for o in outputs if o is not None)
    return ArraySizes(nodes, array_tree, ops, scalar_tree)
