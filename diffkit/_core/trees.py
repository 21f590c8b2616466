"""Pytrees and arguments at the boundary: the user's function traced once to a flat record.

Everything a user passes (pytrees, ``argnums``, ``has_aux``) is turned here into the flat
calling convention of the differentiators: ``fun(*leaves) -> (outs, aux)``, tuples of arrays.
:func:`trace_fun` runs the user's Python once and keeps what the trace saw in a
:class:`TracedFun`: the closed jaxpr, the input/output/aux trees and the avals. Shape checks
and chunk sizes read the avals; the built-in differentiators read the jaxpr; calling the
record evaluates the jaxpr (no second run of the user's code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from diffkit._core.errors import DiffkitError, InputTypeError
from diffkit._core.jaxpr import trace
from diffkit._core.types import Array, PyTree

FlatFun = Callable[..., tuple[tuple[Array, ...], tuple[Array, ...]]]

__all__ = [
    "TracedFun",
    "as_arrays",
    "bytes_per_direction",
    "check_callable",
    "flatten_fun",
    "select_args",
    "trace_fun",
    "unravel_like",
]


class Store:
    """Remembers the output (and aux) tree structure seen while a flat function ran."""

    out_tree: jax.tree_util.PyTreeDef
    aux_tree: jax.tree_util.PyTreeDef | None = None


def flatten_fun(f: Callable, in_tree: jax.tree_util.PyTreeDef, has_aux: bool):
    """Wrap ``f(*pytrees)`` as ``fun(*leaves) -> (out_leaves, aux_leaves)``; the returned
    :class:`Store` holds the output trees once ``fun`` has run.

    Example:
        >>> import jax
        >>> tree = jax.tree.structure(([1.0],))
        >>> fun, store = flatten_fun(lambda p: {"y": p[0] * 2.0}, tree, False)
        >>> outs, aux = fun(3.0)
        >>> float(outs[0]), aux, store.out_tree
        (6.0, (), PyTreeDef({'y': *}))
    """
    store = Store()

    def fun(*leaves: Array):
        args = jax.tree_util.tree_unflatten(in_tree, list(leaves))
        result = f(*args)
        if has_aux:
            if not (isinstance(result, tuple | list) and len(result) == 2):
                raise DiffkitError(
                    "has_aux=True needs the function to return a pair (output, aux); "
                    f"it returned {type(result).__name__}"
                )
            result, aux = result
            aux_leaves, store.aux_tree = jax.tree_util.tree_flatten(aux)
        else:
            aux_leaves = []
        out_leaves, store.out_tree = jax.tree_util.tree_flatten(result)
        for leaf in out_leaves:
            if not hasattr(leaf, "shape") and not isinstance(leaf, float | int | complex):
                raise InputTypeError(
                    f"the function returned a {type(leaf).__name__}; "
                    "return arrays or pytrees of arrays"
                )
        outs = tuple(jnp.asarray(o) for o in out_leaves)
        return outs, tuple(jnp.asarray(a) for a in aux_leaves)

    return fun, store


@dataclass(frozen=True)
class TracedFun:
    """The user's function, flattened and traced once at the boundary.

    ``closed`` computes ``outs + aux`` from the flat primals (``n_outs`` and ``n_aux`` of
    them); ``fun`` is the plain flat function (it runs the user's Python again: for
    differentiators that ask for it, see ``Differentiator.traced``). Calling the record is
    calling the flat function, by evaluating the jaxpr.

    Example:
        >>> import jax.numpy as jnp, jax
        >>> t = trace_fun(lambda x: jnp.sin(x), jax.tree.structure((0,)), (jnp.zeros(2),), False)
        >>> [a.shape for a in t.out_avals], t.n_outs, t.n_aux
        ([(2,)], 1, 0)
        >>> t(jnp.zeros(2))[0][0].tolist()
        [0.0, 0.0]
    """

    fun: FlatFun
    closed: Any  # jax.extend.core.ClosedJaxpr
    n_outs: int
    n_aux: int
    in_tree: jax.tree_util.PyTreeDef
    out_tree: jax.tree_util.PyTreeDef
    aux_tree: jax.tree_util.PyTreeDef | None

    @property
    def in_avals(self) -> list[Any]:
        return list(self.closed.in_avals)

    @property
    def out_avals(self) -> list[Any]:
        return list(self.closed.out_avals[: self.n_outs])

    @property
    def size_in(self) -> int:
        """Number of input coordinates ``n``."""
        return sum(int(np.prod(a.shape)) for a in self.in_avals)

    @property
    def size_out(self) -> int:
        """Number of output coordinates ``m``."""
        return sum(int(np.prod(a.shape)) for a in self.out_avals)

    def __call__(self, *primals: Array) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
        values = jex_core.jaxpr_as_fun(self.closed)(*primals)
        return tuple(values[: self.n_outs]), tuple(values[self.n_outs :])

    def unflatten(self, leaves: Sequence[Any]) -> PyTree:
        """Output leaves back into the function's output pytree."""
        return jax.tree_util.tree_unflatten(self.out_tree, list(leaves))

    def unflatten_aux(self, leaves: Sequence[Any]) -> PyTree:
        """Aux leaves back into the aux pytree (``has_aux=True`` only)."""
        assert self.aux_tree is not None
        return jax.tree_util.tree_unflatten(self.aux_tree, list(leaves))


def trace_fun(
    f: Callable, in_tree: jax.tree_util.PyTreeDef, leaves: Sequence[Array], has_aux: bool
) -> TracedFun:
    """Flatten ``f`` (pytrees in ``in_tree``) and trace it once at ``leaves``.

    Example:
        >>> import jax
        >>> t = trace_fun(lambda a, b: a * b, jax.tree.structure((0, 0)), (2.0, 3.0), False)
        >>> [e.primitive.name for e in t.closed.jaxpr.eqns], float(t(2.0, 5.0)[0][0])
        (['mul'], 10.0)
    """
    fun, store = flatten_fun(f, in_tree, has_aux)
    traced = trace(fun, tuple(leaves))
    return TracedFun(
        fun, traced.closed, traced.n_outs, traced.n_aux, in_tree, store.out_tree, store.aux_tree
    )


def check_callable(where: str, f: Any) -> None:
    """A one-line error unless ``f`` is callable.

    Example:
        >>> try:
        ...     check_callable("grad", 3.0)
        ... except InputTypeError as e:
        ...     print(str(e)[:52])
        grad: expected a function to differentiate, got a fl
    """
    if not callable(f):
        raise InputTypeError(
            f"{where}: expected a function to differentiate, got a {type(f).__name__}; "
            "pass the function itself, e.g. grad(f)(x), not grad(f(x))"
        )


def as_arrays(where: str, role: str, values: Sequence[PyTree]) -> list[PyTree]:
    """Convert every leaf to a JAX array, rejecting what is not numeric (and None).

    Example:
        >>> [a.dtype.kind for a in as_arrays("grad", "argument", [1.0, 2])]
        ['f', 'i']
    """
    result = []
    for i, value in enumerate(values):
        if value is None:  # (None inside a pytree is an empty subtree, as in JAX)
            raise InputTypeError(f"{where}: {role} {i} is None; pass an array or a Python float")

        def convert(path: Any, leaf: Any, i: int = i) -> Array:
            if isinstance(leaf, jax.Array | np.ndarray | np.generic | float | int | bool | complex):
                return jnp.asarray(leaf)
            at = f" at {jax.tree_util.keystr(path)}" if path else ""
            raise InputTypeError(
                f"{where}: {role} {i}{at} is a {type(leaf).__name__}; diffkit differentiates "
                "arrays, Python floats, or pytrees (dicts, lists, tuples) of them"
            )

        result.append(jax.tree_util.tree_map_with_path(convert, value))
    return result


def check_differentiable(
    where: str, args: Sequence[PyTree], argnums: Sequence[int], complex_ok: bool = False
) -> None:
    """Inputs must be real floats; complex too with ``complex_ok`` (AD modes, as jax.grad).

    Example:
        >>> check_differentiable("grad", [jnp.zeros(2)], [0])  # float32: fine
    """
    ok = jnp.inexact if complex_ok else jnp.floating
    for i, arg in zip(argnums, args, strict=True):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(dtype, ok):
                at = f" at {jax.tree_util.keystr(path)}" if path else ""
                kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else str(dtype)
                raise InputTypeError(
                    f"{where}: argument {i}{at} has dtype {kind}; diffkit differentiates real "
                    "floating-point inputs only: pass it as floats (e.g. jnp.asarray(x, "
                    "dtype=jnp.float32)) or leave it out of argnums"
                )


def select_args(
    where: str,
    f: Callable,
    args: tuple,
    kwargs: dict,
    argnums: int | Sequence[int],
    complex_ok: bool = False,
):
    """Split ``args`` into the differentiated ones and a closure ``g`` over the rest; returns
    ``(g, diff_args, unpack)`` where ``unpack`` shapes gradients as ``argnums`` asks.

    Example:
        >>> g, diff, unpack = select_args("grad", lambda a, b: a - b, (1.0, 5.0), {}, 1)
        >>> float(g(2.0)), float(diff[0]), unpack((7,))
        (-1.0, 5.0, 7)
    """
    single = isinstance(argnums, int)
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or not all(isinstance(a, int) for a in nums):
        raise DiffkitError(
            f"{where}: argnums must be an int or a non-empty tuple of ints, got {argnums!r}"
        )
    if len(set(nums)) != len(nums):
        raise DiffkitError(f"{where}: argnums {argnums!r} repeats an argument")
    for a in nums:
        if not -len(args) <= a < len(args):
            raise DiffkitError(
                f"{where}: argnums={argnums!r} is out of range for a function called with "
                f"{len(args)} positional argument{'s' if len(args) != 1 else ''}"
            )
    nums = tuple(a % len(args) for a in nums)
    diff_args = tuple(as_arrays(where, "argument", [args[a] for a in nums]))
    check_differentiable(where, diff_args, nums, complex_ok)

    def g(*diff: PyTree) -> Any:
        full = list(args)
        for a, d in zip(nums, diff, strict=True):
            full[a] = d
        return f(*full, **kwargs)

    def unpack(grads: tuple) -> PyTree:
        return grads[0] if single else grads

    return g, diff_args, unpack


def unravel_like(leaves: Sequence[Array], flat: Array) -> tuple[Array, ...]:
    """Split a flat vector into arrays shaped (and typed) like ``leaves``.

    Example:
        >>> [a.shape for a in unravel_like([jnp.zeros((2, 2)), jnp.zeros(1)], jnp.arange(5.0))]
        [(2, 2), (1,)]
    """
    out, start = [], 0
    for leaf in leaves:
        size = int(np.prod(leaf.shape))
        out.append(flat[start : start + size].reshape(leaf.shape).astype(leaf.dtype))
        start += size
    return tuple(out)


def bytes_per_direction(fun: FlatFun | TracedFun, primals: tuple[Array, ...]) -> float:
    """Bytes one tangent direction needs: inputs, outputs and every intermediate, as traced
    (read from the record when ``fun`` is a :class:`TracedFun`, else traced here).

    Example:
        >>> t = trace_fun(lambda x: x * x, jax.tree.structure((0,)), (jnp.zeros(4),), False)
        >>> bytes_per_direction(t, (jnp.zeros(4),))  # x and x*x: 2 * 16 bytes, plus 1
        33.0
    """
    closed = fun.closed if isinstance(fun, TracedFun) else jax.make_jaxpr(fun)(*primals)
    sizes = [v.aval.size * v.aval.dtype.itemsize for v in closed.jaxpr.invars]
    for eqn in closed.jaxpr.eqns:
        sizes += [
            v.aval.size * v.aval.dtype.itemsize for v in eqn.outvars if hasattr(v.aval, "size")
        ]
    return float(sum(sizes)) + 1.0
