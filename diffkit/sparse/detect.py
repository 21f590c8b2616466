"""Sparsity detection: one more interpreter of the jaxpr, over the rule table's kinds.

The function is traced once on abstract inputs (shapes and dtypes: the pattern is global,
valid for every input value, including every value of the arguments that are not
differentiated); each equation is then evaluated on known values (constant folding), or
given its sparsity action (:mod:`diffkit.sparse.rules`). Calls (``jit``, ``checkpoint``) are
inlined, custom rules (``custom_jvp``, ``custom_vjp``) go through their primal, ``cond``
takes the branch a known index picks or the union of all branches, and loops (``scan``,
``while``) are unrolled while short and their trip known, then closed by a fixed point:
the carries' dependency sets grow until the body adds nothing.

The pattern is a ``scipy.sparse.csr_array`` of booleans, outputs x inputs (both flattened,
in ``jax.flatten_util.ravel_pytree`` order): the pattern is computed once, on the host, and
the colouring that follows walks its rows and columns (``indptr``/``indices``) in Python,
which a CSR array gives directly; a ``jax.experimental.sparse.BCOO`` is one call away
(``BCOO.from_scipy_sparse``). SciPy is already installed with JAX, which requires it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.extend import core as jex_core

from diffkit._core.errors import DiffkitError, InputTypeError
from diffkit._core.jaxpr import Interpreter, evaluate, inner_jaxpr, interpret, is_float
from diffkit._core.trees import check_callable
from diffkit.rules import RULES
from diffkit.sparse.rules import ACTIONS, KIND_ACTIONS, Dep, blank, dense, empty, rows_of

__all__ = ["Detector", "hessian_sparsity", "jacobian_sparsity"]

#: Loops of up to this many known iterations are unrolled (exact); longer ones, and loops
#: whose trip is not known, close by a fixed point over their carries.
UNROLL = 64


class Detector(Interpreter):
    """The sparsity interpreter: values are known arrays or :class:`~diffkit.sparse.rules.Dep`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(lambda x: x[1:] * x[:-1])(jnp.ones(3))
        >>> det = Detector(3)
        >>> (y,) = det.run(closed, [det.inputs([(3,)], [jnp.float32])[0]])
        >>> y.rows.toarray().astype(int).tolist()
        [[1, 1, 0], [0, 1, 1]]
    """

    who = "sparsity"
    rules = RULES
    special: Any = MappingProxyType({})  # control flow has its own table, CONTROL

    def __init__(self, n: int) -> None:
        self.n = n
        self.notes: dict[str, str] = {}

    def inputs(self, shapes: Sequence[Sequence[int]], dtypes: Sequence[Any]) -> list[Dep]:
        """One :class:`Dep` per differentiated input, each entry depending on itself."""
        out, off = [], 0
        for shape, dtype in zip(shapes, dtypes, strict=True):
            size = int(np.prod(shape, dtype=np.int64))
            eye = sp.csr_array(
                (np.ones(size, bool), (np.arange(size), off + np.arange(size))),
                shape=(size, self.n),
            )
            out.append(Dep(shape, dtype, eye))
            off += size
        return out

    def active(self, v: Any) -> bool:
        return isinstance(v, Dep)

    def run(self, closed: Any, args: Sequence[Any], site: Any = None) -> list[Any]:
        consts = [
            blank(c.aval, self.n) if isinstance(c, jax.core.Tracer) else c for c in closed.consts
        ]
        return interpret(
            jex_core.ClosedJaxpr(closed.jaxpr, consts), args, lambda e, v: self.handle(e, v)
        )

    def handle(self, eqn: Any, invals: list[Any], site: Any = None) -> list[Any]:
        if not any(isinstance(v, Dep) for v in invals):
            return evaluate(eqn, invals)  # known: fold it
        if not any(isinstance(v, Dep) and v.rows.nnz for v in invals):
            return [blank(v.aval, self.n) for v in eqn.outvars]  # unknown, but no derivative
        if not any(is_float(v.aval) for v in eqn.outvars):
            return [blank(v.aval, self.n) for v in eqn.outvars]  # comparisons, argmax, ...
        inner = inner_jaxpr(eqn)
        if inner is not None:
            return self.run(inner, invals)
        name = eqn.primitive.name
        handler = CONTROL.get(name)
        if handler is not None:
            return handler(self, eqn, invals)
        action = ACTIONS.get(name)
        if action is None and name in RULES:
            action = KIND_ACTIONS.get(RULES[name].kind)
        if action is None:
            self.notes.setdefault(
                name,
                f"primitive '{name}' has no sparsity rule: its outputs are taken to depend on "
                "all of its inputs (the pattern may hold spurious nonzeros, never miss one)",
            )
            action = dense
        return action(self, eqn, invals)


# ------------------------------------------------------------------ control flow


def _union(values: Sequence[Any], aval: Any, n: int) -> Any:
    """One value for several possibilities: the union of their dependency sets."""
    size = int(np.prod(aval.shape, dtype=np.int64))
    rows = empty(size, n)
    for v in values:
        if isinstance(v, Dep):
            rows = rows + v.rows
    if not is_float(aval):
        rows = empty(size, n)
    return Dep(aval.shape, aval.dtype, rows)


def _unknown(v: Any, aval: Any, n: int) -> Dep:
    """``v`` as an unknown value (a loop carry whose value changes), keeping its rows."""
    return v if isinstance(v, Dep) else blank(aval, n)


def _cond(det: Detector, eqn: Any, invals: list[Any]) -> list[Any]:
    index, ops = invals[0], invals[1:]
    branches = eqn.params["branches"]
    if not isinstance(index, Dep):
        k = int(np.clip(int(np.asarray(index)), 0, len(branches) - 1))
        return det.run(branches[k], ops)
    results = [det.run(b, ops) for b in branches]
    return [_union([r[i] for r in results], v.aval, det.n) for i, v in enumerate(eqn.outvars)]


def _grow(det: Detector, old: list[Any], new: list[Any], avals: list[Any]) -> tuple[list, bool]:
    """The carries' union with a pass's results, and whether it grew."""
    merged, grew = [], False
    for o, w, aval in zip(old, new, avals, strict=True):
        u = _union([o, w], aval, det.n)
        grew |= u.rows.nnz != o.rows.nnz
        merged.append(u)
    return merged, grew


def _while(det: Detector, eqn: Any, invals: list[Any]) -> list[Any]:
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = invals[:cn], invals[cn : cn + bn], list(invals[cn + bn :])
    avals = [v.aval for v in eqn.outvars]
    for _ in range(UNROLL):  # while the trip is known
        (go,) = det.run(p["cond_jaxpr"], [*cconsts, *carry])
        if isinstance(go, Dep):
            break
        if not bool(np.asarray(go)):
            return carry
        carry = det.run(p["body_jaxpr"], [*bconsts, *carry])
    carry = [_unknown(c, a, det.n) for c, a in zip(carry, avals, strict=True)]
    while True:
        new = det.run(p["body_jaxpr"], [*bconsts, *carry])
        carry, grew = _grow(det, carry, new, avals)
        if not grew:
            return carry


def _slice(det: Detector, x: Any, i: int, aval: Any) -> Any:
    """Entry ``i`` along the leading axis of a scanned input."""
    if not isinstance(x, Dep):
        return jnp.asarray(x)[i]
    per = int(np.prod(x.shape[1:], dtype=np.int64))
    return Dep(x.shape[1:], x.dtype, x.rows[i * per : (i + 1) * per])


def _stack(det: Detector, ys: list[Any], aval: Any) -> Any:
    if not any(isinstance(y, Dep) for y in ys):
        return jnp.stack([jnp.asarray(y) for y in ys])
    size = int(np.prod(aval.shape[1:], dtype=np.int64))
    rows = sp.vstack([rows_of(y, det.n, size) for y in ys], format="csr")
    return Dep(aval.shape, aval.dtype, rows if is_float(aval) else empty(rows.shape[0], det.n))


def _scan(det: Detector, eqn: Any, invals: list[Any]) -> list[Any]:
    p = eqn.params
    nc, nk, length = p["num_consts"], p["num_carry"], int(p["length"])
    consts, carry, xs = invals[:nc], list(invals[nc : nc + nk]), invals[nc + nk :]
    x_avals = [v.aval for v in eqn.invars[nc + nk :]]
    c_avals = [v.aval for v in eqn.outvars[:nk]]
    y_avals = [v.aval for v in eqn.outvars[nk:]]
    body = p["jaxpr"]
    if length <= UNROLL:  # unrolled: exact
        steps = range(length - 1, -1, -1) if p["reverse"] else range(length)
        ys: list[list[Any]] = [[None] * length for _ in y_avals]
        for i in steps:
            x_i = [_slice(det, x, i, a) for x, a in zip(xs, x_avals, strict=True)]
            out = det.run(body, [*consts, *carry, *x_i])
            carry = out[:nk]
            for k, y in enumerate(out[nk:]):
                ys[k][i] = y
        stacked = [_stack(det, y, a) for y, a in zip(ys, y_avals, strict=True)]
        return [*carry, *stacked]
    # a fixed point: every step sees the union of the scanned slices
    x_all = []
    for x, a in zip(xs, x_avals, strict=True):
        if isinstance(x, Dep):
            per = int(np.prod(x.shape[1:], dtype=np.int64))
            rows = empty(per, det.n)
            for i in range(length):
                rows = rows + x.rows[i * per : (i + 1) * per]
            x_all.append(Dep(x.shape[1:], x.dtype, rows))
        else:
            x_all.append(blank(jax.core.ShapedArray(a.shape[1:], a.dtype), det.n))
    carry = [_unknown(c, a, det.n) for c, a in zip(carry, c_avals, strict=True)]
    while True:
        out = det.run(body, [*consts, *carry, *x_all])
        carry, grew = _grow(det, carry, out[:nk], c_avals)
        if not grew:
            break
    out = det.run(body, [*consts, *carry, *x_all])
    tiled: list[Any] = []
    for y, a in zip(out[nk:], y_avals, strict=True):
        size = int(np.prod(a.shape[1:], dtype=np.int64))
        one = rows_of(y, det.n, size) if isinstance(y, Dep) else empty(size, det.n)
        tiled.append(Dep(a.shape, a.dtype, sp.vstack([one] * length, format="csr")))
    return [*carry, *tiled]


def _through_primal(det: Detector, eqn: Any, invals: list[Any]) -> list[Any]:
    """``custom_jvp``/``custom_vjp``: the derivative's structure is the primal's."""
    return det.run(eqn.params["call_jaxpr"], invals)


CONTROL: dict[str, Callable[[Detector, Any, list[Any]], list[Any]]] = {
    "cond": _cond,
    "while": _while,
    "scan": _scan,
    "custom_jvp_call": _through_primal,
    "custom_vjp_call": _through_primal,
    "custom_vjp_call_jaxpr": _through_primal,
}


# ------------------------------------------------------------------ the public functions


#: What a leaf of an argument may be: only its shape and dtype are read.
_LEAVES = (jax.ShapeDtypeStruct, jax.Array, np.ndarray, np.generic, float, int, bool, complex)


def _abstract(x: Any, where: str = "jacobian_sparsity", i: int = 0) -> Any:
    if not isinstance(x, _LEAVES):
        raise InputTypeError(
            f"{where}: argument {i} has a leaf of type {type(x).__name__}; pass arrays, Python "
            "numbers or jax.ShapeDtypeStruct (only shapes and dtypes are read), or pytrees of them"
        )
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


def _detect(
    f: Callable, args: tuple, argnums: int | Sequence[int], where: str
) -> tuple[Any, dict[str, str]]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or not all(isinstance(a, int) and -len(args) <= a < len(args) for a in nums):
        raise DiffkitError(
            f"{where}: argnums={argnums!r} must name positional arguments of the {len(args)} given"
        )
    nums = tuple(a % len(args) for a in nums)
    check_callable(where, f)
    leaves, trees = [], []
    for i, a in enumerate(args):
        ls, tree = jax.tree_util.tree_flatten(a)
        leaves.append([_abstract(x, where, i) for x in ls])
        trees.append(tree)
    diff = [x for a in nums for x in leaves[a]]
    n = sum(int(np.prod(x.shape, dtype=np.int64)) for x in diff)

    def flat(*xs: Any) -> list[Any]:
        it, full = iter(xs), []
        for ls, tree in zip(leaves, trees, strict=True):
            full.append(jax.tree_util.tree_unflatten(tree, [next(it) for _ in ls]))
        return jax.tree_util.tree_leaves(f(*full))

    all_leaves = [x for ls in leaves for x in ls]
    closed = jax.make_jaxpr(flat)(*all_leaves)
    det = Detector(n)
    made = iter(det.inputs([x.shape for x in diff], [x.dtype for x in diff]))
    vals: list[Any] = [None] * len(all_leaves)
    k = 0
    starts = {}
    for i, ls in enumerate(leaves):
        starts[i] = k
        k += len(ls)
    for a in nums:
        for j in range(len(leaves[a])):
            vals[starts[a] + j] = next(made)
    for i, x in enumerate(all_leaves):
        if vals[i] is None:  # not differentiated: any value (the pattern is global)
            vals[i] = blank(jax.core.ShapedArray(x.shape, x.dtype), n)
    with jax.ensure_compile_time_eval():  # known values stay concrete under a user's jit
        outs = det.run(closed, vals)
    rows = [rows_of(o, n) for o in outs]
    pattern = sp.vstack(rows, format="csr") if rows else empty(0, n)
    pattern = sp.csr_array(pattern, dtype=bool)
    pattern.sort_indices()
    for note in det.notes.values():
        warnings.warn(f"diffkit.sparse: {note}", stacklevel=3)
    return pattern, det.notes


def jacobian_sparsity(f: Callable, *args: Any, argnums: int | Sequence[int] = 0) -> Any:
    """The sparsity pattern of ``f``'s Jacobian: a boolean ``scipy.sparse.csr_array`` of
    shape ``(m, n)``, outputs by inputs, both flattened in ``ravel_pytree`` order (the inputs:
    the ``argnums`` arguments, in that order). Global: valid for every value of every
    argument; only the arguments' shapes and dtypes are used.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> p = dk.jacobian_sparsity(lambda x: x[1:] - x[:-1], jnp.ones(4))
        >>> p.toarray().astype(int).tolist()
        [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    return _detect(f, args, argnums, "jacobian_sparsity")[0]


def hessian_sparsity(f: Callable, *args: Any, argnums: int | Sequence[int] = 0) -> Any:
    """The sparsity pattern of a scalar ``f``'s Hessian: a symmetric boolean
    ``scipy.sparse.csr_array`` of shape ``(n, n)``. Second order through the nonlinear rows:
    the Jacobian pattern of ``jax.grad(f)``'s program, where the cotangents are known
    constants (so a linear row adds nothing, a product ``x_i x_j`` the pair ``(i, j)``).

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> p = dk.hessian_sparsity(lambda x: jnp.sum(x[1:] * x[:-1]) + x[0] ** 2, jnp.ones(3))
        >>> p.toarray().astype(int).tolist()
        [[1, 1, 0], [1, 0, 1], [0, 1, 0]]
    """
    check_callable("hessian_sparsity", f)
    for a in jax.tree_util.tree_leaves(jax.eval_shape(f, *args)):
        if a.shape != ():
            raise DiffkitError(
                f"hessian_sparsity: f must return a scalar, got shape {a.shape}; for a "
                "vector function use jacobian_sparsity"
            )
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    grad = jax.grad(f, argnums=nums)
    pattern = _detect(grad, args, argnums, "hessian_sparsity")[0]
    sym = sp.csr_array(pattern + pattern.T, dtype=bool)
    sym.sort_indices()
    return sym
