"""The contract every differentiator keeps, and the registry that names them.

A differentiator implements one or both of two primitives on *flat* functions:

* ``_jvp(fun, primals, tangents) -> (outs, out_dots, aux)``
* ``_vjp(fun, primals) -> (outs, vjp_fn, aux)`` with ``vjp_fn(out_bars) -> primal_bars``

where ``fun(*primals)`` takes a tuple of arrays and returns a pair ``(outs, aux)`` of tuples of
arrays (``aux`` is carried along undifferentiated). Everything a user calls -- pytrees,
``argnums``, ``has_aux``, ``grad``, ``value_and_grad``, ``jacobian``, ``hessian``, input checks
-- is derived here, once. A primitive a differentiator does not implement natively is derived
from the other through the full Jacobian, and :meth:`Differentiator.passes` declares that cost.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from diffkit._errors import DiffkitError, InputTypeError, UnknownDifferentiatorError

Mode = Literal["numerical", "symbolic", "forward", "reverse"]
Strategy = Literal["fwd", "rev"]
Array = jax.Array
FlatFun = Callable[..., tuple[tuple[Array, ...], tuple[Array, ...]]]
PyTree = Any

__all__ = ["Differentiator", "get", "names", "register"]


class Differentiator:
    """Base class: subclasses set ``name``, ``mode`` and ``native`` and implement the
    primitives listed in ``native`` (``"jvp"``, ``"vjp"`` or both).

    Options common to every differentiator:

    * ``chunk_size`` -- how many basis directions one vectorised pass evaluates when a
      Jacobian or a forward-mode gradient is assembled (``None``: chosen from the budget);
    * ``memory_budget`` -- bytes those chunks may take (default 1 GiB).

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> d = dk.get("jax-rev")
        >>> float(d.grad(lambda x: jnp.sum(x**2))(jnp.array([1.0, 2.0]))[1])
        4.0
    """

    name: ClassVar[str] = "?"
    mode: ClassVar[Mode]
    native: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""

    def __init__(self, *, chunk_size: int | None = None, memory_budget: float = 2**30) -> None:
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise DiffkitError(
                f"{self.name}: chunk_size must be a positive int, got {chunk_size!r}"
            )
        if not memory_budget > 0:
            raise DiffkitError(
                f"{self.name}: memory_budget must be positive bytes, got {memory_budget!r}"
            )
        self.chunk_size = chunk_size
        self.memory_budget = float(memory_budget)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and cls.native and not cls.native <= {"jvp", "vjp"}:
            raise TypeError(f"{cls.__name__}.native must be a subset of {{'jvp', 'vjp'}}")

    def __repr__(self) -> str:
        return f"<diffkit differentiator {self.name!r} ({self.mode})>"

    # ------------------------------------------------------------------ costs
    def passes(self, op: str, n: int, m: int = 1) -> int:
        """Native primitive calls that ``op`` costs for ``n`` inputs and ``m`` outputs.

        ``op`` is one of ``"jvp"``, ``"vjp"``, ``"grad"`` (m = 1) and ``"jacobian"``. One pass
        is one call of a primitive this differentiator implements natively (see ``native``);
        :meth:`evaluations` converts passes into evaluations of the function where that is the
        natural unit (finite differences).

        Example:
            >>> import diffkit as dk
            >>> dk.get("jax-fwd").passes("grad", n=1000), dk.get("jax-rev").passes("grad", n=1000)
            (1000, 1)
        """
        if op == "grad":
            op, m = "jacobian", 1
        if op == "jacobian":
            return n if self._strategy(n, m) == "fwd" else m
        if op in self.native:
            return 1
        if op == "jvp":
            return m  # through the Jacobian, by VJPs
        if op == "vjp":
            return n  # through the Jacobian, by JVPs
        raise DiffkitError(f"{self.name}.passes: unknown op {op!r}; use jvp, vjp, grad or jacobian")

    def _strategy(self, n: int, m: int) -> Strategy:
        """How a Jacobian is assembled: columns by JVPs or rows by VJPs."""
        if self.native == {"jvp"}:
            return "fwd"
        if self.native == {"vjp"}:
            return "rev"
        if n != m:
            return "fwd" if n < m else "rev"
        return "rev" if self.mode == "reverse" else "fwd"

    @property
    def _ad(self) -> bool:
        """Forward and reverse modes take complex inputs (grad of a real output, as JAX)."""
        return self.mode in ("forward", "reverse")

    # ------------------------------------------------------- the two primitives
    def _jvp(self, fun: FlatFun, primals: tuple[Array, ...], tangents: tuple[Array, ...]):
        """Default: ``J @ x_dot`` from the Jacobian assembled by VJPs (``m`` passes)."""
        outs, vjp_fn, aux = self._vjp(fun, primals)
        x_dot, _ = ravel_pytree(tangents)
        rows = self._rows(fun, primals, vjp_fn, outs)  # (m, n); (2m, n) for complex outputs
        y_dot = _paired(rows @ x_dot.astype(rows.dtype), ravel_pytree(outs)[0])
        return outs, _unravel_like(outs, y_dot), aux

    def _vjp(self, fun: FlatFun, primals: tuple[Array, ...]):
        """Default: ``y_bar @ J`` from the Jacobian assembled by JVPs (``n`` passes)."""
        outs, aux = fun(*primals)
        split = {"split": True} if jnp.iscomplexobj(ravel_pytree(primals)[0]) else {}
        cols = self._cols(fun, primals, outs, **split)  # (n, m); (2n, m) for complex x

        def vjp_fn(out_bars: tuple[Array, ...]) -> tuple[Array, ...]:
            y_bar, _ = ravel_pytree(out_bars)
            x_bar = _paired(cols @ y_bar.astype(cols.dtype), ravel_pytree(primals)[0])
            return _unravel_like(primals, x_bar)

        return outs, vjp_fn, aux

    # ------------------------------------------ Jacobians from basis directions
    def _chunk(self, n_dirs: int, bytes_per_dir: float) -> int:
        if self.chunk_size is not None:
            return min(self.chunk_size, max(n_dirs, 1))
        return int(max(1, min(n_dirs, self.memory_budget // max(bytes_per_dir, 1.0))))

    def _map_basis(self, fn: Callable[[Array], Array], n_dirs: int, bytes_per_dir: float) -> Array:
        """Stack ``fn(i)`` for ``i < n_dirs``: vmapped in chunks that fit the memory budget."""
        chunk = self._chunk(n_dirs, bytes_per_dir)
        idx = jnp.arange(n_dirs)
        if chunk >= n_dirs:
            return jax.vmap(fn)(idx)
        return lax.map(fn, idx, batch_size=chunk)

    def _cols(
        self, fun: FlatFun, primals: tuple[Array, ...], outs: tuple[Array, ...], split=False
    ) -> Array:
        """``J^T`` as an (n, m) array: one JVP per input direction. Complex inputs take two
        directions each, ``e`` and ``i e``, combined as ``d/dRe - i d/dIm`` (JAX's convention for
        the gradient of a real output: the transpose under the pairing ``Re(u v)``), or stacked
        (2n, m) with ``split``."""
        x, unravel = ravel_pytree(primals)
        n_dirs = 2 * x.size if jnp.iscomplexobj(x) else x.size

        def col(i: Array) -> Array:
            e = jax.nn.one_hot(i % x.size, x.size, dtype=x.dtype)
            e = jnp.where(i < x.size, e, 1j * e) if n_dirs > x.size else e
            _, y_dot, _ = self._jvp(fun, primals, unravel(e))
            return ravel_pytree(y_dot)[0]

        cols = self._map_basis(col, n_dirs, _bytes_per_direction(fun, primals))
        return cols if split or n_dirs == x.size else cols[: x.size] - 1j * cols[x.size :]

    def _rows(
        self, fun: FlatFun, primals: tuple[Array, ...], vjp_fn: Callable, outs: tuple
    ) -> Array:
        """``J`` as an (m, n) array: one VJP per output direction (complex outputs: then one
        per ``i e``, stacked below, for :func:`_paired`)."""
        y, unravel = ravel_pytree(outs)

        def row(j: Array) -> Array:
            e = jax.nn.one_hot(j % y.size, y.size, dtype=y.dtype)
            e = jnp.where(j < y.size, e, 1j * e) if n_dirs > y.size else e
            return ravel_pytree(vjp_fn(unravel(e)))[0]

        n_dirs = 2 * y.size if jnp.iscomplexobj(y) else y.size
        return self._map_basis(row, n_dirs, _bytes_per_direction(fun, primals))

    # --------------------------------------------------------- the public API
    def jvp(
        self,
        f: Callable,
        primals: Sequence[PyTree],
        tangents: Sequence[PyTree],
        has_aux: bool = False,
    ):
        """Forward-mode product: ``(f(*primals), J @ tangents)``, like :func:`jax.jvp`.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> y, y_dot = dk.get("jax-fwd").jvp(jnp.sin, (0.0,), (2.0,))
            >>> float(y), float(y_dot)
            (0.0, 2.0)
        """
        where = f"{self.name}.jvp"
        _check_callable(where, f)
        if not isinstance(primals, tuple | list) or not isinstance(tangents, tuple | list):
            raise InputTypeError(
                f"{where}: primals and tangents must be tuples, like jax.jvp(f, (x,), (v,))"
            )
        primals = tuple(_as_arrays(where, "primal", primals))
        tangents = tuple(_as_arrays(where, "tangent", tangents))
        _check_same(where, "tangents", primals, tangents)
        x_leaves, in_tree = jax.tree_util.tree_flatten(primals)
        t_leaves = jax.tree_util.tree_leaves(tangents)
        fun, store = _flatten_fun(f, in_tree, has_aux)
        outs, out_dots, aux = self._jvp(fun, tuple(x_leaves), tuple(t_leaves))
        out, out_dot = store.unflatten(outs), store.unflatten(out_dots)
        return (out, out_dot, store.unflatten_aux(aux)) if has_aux else (out, out_dot)

    def vjp(self, f: Callable, *primals: PyTree, has_aux: bool = False):
        """Reverse-mode product: ``(f(*primals), vjp_fn)`` with ``vjp_fn(y_bar) -> x_bars``.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> y, vjp_fn = dk.get("jax-rev").vjp(lambda x: 3.0 * x, jnp.ones(2))
            >>> vjp_fn(jnp.array([1.0, 2.0]))[0].tolist()
            [3.0, 6.0]
        """
        where = f"{self.name}.vjp"
        _check_callable(where, f)
        primals = tuple(_as_arrays(where, "primal", primals))
        x_leaves, in_tree = jax.tree_util.tree_flatten(primals)
        fun, store = _flatten_fun(f, in_tree, has_aux)
        outs, flat_vjp, aux = self._vjp(fun, tuple(x_leaves))
        out = store.unflatten(outs)

        def vjp_fn(y_bar: PyTree) -> tuple[PyTree, ...]:
            (y_bar,) = _as_arrays(f"{where} cotangent", "cotangent", (y_bar,))
            _check_same(f"{where} cotangent", "cotangent", (out,), (y_bar,))
            bars = flat_vjp(tuple(jax.tree_util.tree_leaves(y_bar)))
            return jax.tree_util.tree_unflatten(in_tree, list(bars))

        return (out, vjp_fn, store.unflatten_aux(aux)) if has_aux else (out, vjp_fn)

    def value_and_grad(
        self, f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False
    ) -> Callable:
        """Like :func:`jax.value_and_grad`: ``f`` must return a real scalar.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> v, g = dk.get("jax-rev").value_and_grad(lambda w: jnp.sum(w**3))(jnp.array([2.0]))
            >>> float(v), g.tolist()
            (8.0, [12.0])
        """
        where = f"{self.name}.grad"
        _check_callable(where, f)

        @functools.wraps(f)
        def value_and_grad_f(*args: PyTree, **kwargs: Any):
            g, diff_args, unpack = _select_args(where, f, args, kwargs, argnums, self._ad)
            x_leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
            fun, store = _flatten_fun(g, in_tree, has_aux)
            outs, grads, aux = self._scalar_grad(where, fun, tuple(x_leaves), store)
            value = store.unflatten(outs)
            grad = unpack(jax.tree_util.tree_unflatten(in_tree, list(grads)))
            return ((value, store.unflatten_aux(aux)), grad) if has_aux else (value, grad)

        return value_and_grad_f

    def grad(
        self, f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False
    ) -> Callable:
        """Like :func:`jax.grad`: the gradient has the pytree structure of the argument(s).

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> g = dk.get("jax-fwd").grad(lambda p: p["a"] * p["b"])({"a": 2.0, "b": 5.0})
            >>> float(g["a"]), float(g["b"])
            (5.0, 2.0)
        """
        vg = self.value_and_grad(f, argnums, has_aux)

        @functools.wraps(f)
        def grad_f(*args: PyTree, **kwargs: Any):
            (value, g) = vg(*args, **kwargs)
            return (g, value[1]) if has_aux else g

        return grad_f

    def jacobian(
        self,
        f: Callable,
        argnums: int | Sequence[int] = 0,
        has_aux: bool = False,
        strategy: Strategy | None = None,
    ) -> Callable:
        """Full Jacobian, shaped like :func:`jax.jacfwd`'s (output shape + input shape).

        Columns come from JVPs or rows from VJPs (``strategy="fwd"``/``"rev"``); by default the
        cheaper of the two for this differentiator and these shapes.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> dk.get("jax-rev").jacobian(lambda x: x * x)(jnp.array([1.0, 3.0])).tolist()
            [[2.0, 0.0], [0.0, 6.0]]
        """
        where = f"{self.name}.jacobian"
        _check_callable(where, f)
        if strategy not in (None, "fwd", "rev"):
            raise DiffkitError(f"{where}: strategy must be 'fwd', 'rev' or None, got {strategy!r}")

        @functools.wraps(f)
        def jacobian_f(*args: PyTree, **kwargs: Any):
            g, diff_args, unpack = _select_args(where, f, args, kwargs, argnums, self._ad)
            x_leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
            fun, store = _flatten_fun(g, in_tree, has_aux)
            x_leaves = tuple(x_leaves)
            outs, aux = jax.eval_shape(fun, *x_leaves)
            _check_float_outputs(where, outs)
            n = sum(int(np.prod(x.shape)) for x in x_leaves)
            m = sum(int(np.prod(o.shape)) for o in outs)
            how = strategy or self._strategy(n, m)
            if how == "fwd":
                outs, aux = fun(*x_leaves)
                jac = self._cols(fun, x_leaves, outs).T
            else:
                outs, vjp_fn, aux = self._vjp(fun, x_leaves)
                jac = self._rows(fun, x_leaves, vjp_fn, outs)
            blocks = _split_jacobian(jac, outs, x_leaves)
            per_out = [unpack(jax.tree_util.tree_unflatten(in_tree, list(row))) for row in blocks]
            out_jac = store.unflatten(tuple(per_out))
            return (out_jac, store.unflatten_aux(aux)) if has_aux else out_jac

        return jacobian_f

    def hessian(self, f: Callable, argnums: int | Sequence[int] = 0) -> Callable:
        """Second derivatives: the Jacobian of this differentiator's own gradient.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> dk.get("jax-rev").hessian(lambda x: jnp.sum(x**3))(jnp.array([1.0, 2.0])).tolist()
            [[6.0, 0.0], [0.0, 12.0]]
        """
        return self.jacobian(self.grad(f, argnums), argnums)

    # ------------------------------------------------------------- internals
    def _scalar_grad(self, where: str, fun: FlatFun, x_leaves: tuple[Array, ...], store: _Store):
        outs, _ = jax.eval_shape(fun, *x_leaves)
        if store.out_tree.num_leaves != 1 or outs[0].shape != ():
            shapes = [tuple(o.shape) for o in outs]
            raise DiffkitError(
                f"{where}: the function must return a scalar, got {_describe_shapes(shapes)}; "
                "use .jacobian (or .vjp) for non-scalar outputs"
            )
        _check_float_outputs(where, outs)
        n = sum(int(np.prod(x.shape)) for x in x_leaves)
        if self._strategy(n, 1) == "rev":
            outs, vjp_fn, aux = self._vjp(fun, x_leaves)
            grads = vjp_fn((jnp.ones_like(outs[0]),))
        else:
            outs, aux = fun(*x_leaves)
            cols = self._cols(fun, x_leaves, outs)[:, 0]
            grads = _unravel_like(x_leaves, cols)
        return outs, tuple(grads), aux


# ---------------------------------------------------------------- helpers


class _Store:
    """Remembers the output tree structure seen while ``fun`` was traced."""

    out_tree: jax.tree_util.PyTreeDef
    aux_tree: jax.tree_util.PyTreeDef | None = None

    def unflatten(self, leaves: Sequence[Any]) -> PyTree:
        return jax.tree_util.tree_unflatten(self.out_tree, list(leaves))

    def unflatten_aux(self, leaves: Sequence[Any]) -> PyTree:
        assert self.aux_tree is not None
        return jax.tree_util.tree_unflatten(self.aux_tree, list(leaves))


def _flatten_fun(f: Callable, in_tree: jax.tree_util.PyTreeDef, has_aux: bool):
    """Wrap ``f(*pytrees)`` as ``fun(*leaves) -> (out_leaves, aux_leaves)``."""
    store = _Store()

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


def _check_callable(where: str, f: Any) -> None:
    if not callable(f):
        raise InputTypeError(
            f"{where}: expected a function to differentiate, got a {type(f).__name__}; "
            "pass the function itself, e.g. grad(f)(x), not grad(f(x))"
        )


def _as_arrays(where: str, role: str, values: Sequence[PyTree]) -> list[PyTree]:
    """Convert every leaf to a JAX array, rejecting what is not numeric (and None)."""
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


def _check_differentiable(
    where: str, args: Sequence[PyTree], argnums: Sequence[int], complex_ok: bool = False
) -> None:
    """Inputs must be real floats; complex too with ``complex_ok`` (AD modes, as jax.grad)."""
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


def _check_same(where: str, role: str, primals: tuple, others: tuple) -> None:
    p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(primals)
    o_leaves, o_tree = jax.tree_util.tree_flatten(others)
    if p_tree != o_tree:
        raise DiffkitError(
            f"{where}: {role} must have the same pytree structure as "
            f"{'the output' if role == 'cotangent' else 'primals'}: expected {p_tree}, got {o_tree}"
        )
    for (path, p), o in zip(p_leaves, o_leaves, strict=True):
        label = role + jax.tree_util.keystr(path[1:] if role == "cotangent" else path)
        if p.shape != o.shape:
            raise DiffkitError(
                f"{where}: {label} has shape {tuple(o.shape)}, expected {tuple(p.shape)} "
                f"(the shape of the {'output' if role == 'cotangent' else 'primal'})"
            )
        if not jnp.issubdtype(p.dtype, jnp.inexact) and jnp.issubdtype(o.dtype, jnp.inexact):
            raise InputTypeError(
                f"{where}: primal{label[len(role) :]} has dtype {p.dtype}, which has no "
                f"derivative, but its {role.rstrip('s')} is {o.dtype}: pass the primal as floats "
                "(e.g. jnp.asarray(x, jnp.float32)) to differentiate it"
            )
        if jnp.issubdtype(p.dtype, jnp.inexact) and p.dtype != o.dtype and not _weak(o):
            raise DiffkitError(
                f"{where}: {label} has dtype {o.dtype}, expected {p.dtype} "
                f"(cast it with .astype(jnp.{p.dtype}))"
            )


def _weak(x: Array) -> bool:
    return bool(getattr(x, "weak_type", False))


def _select_args(
    where: str,
    f: Callable,
    args: tuple,
    kwargs: dict,
    argnums: int | Sequence[int],
    complex_ok: bool = False,
):
    """Split ``args`` into the differentiated ones and a closure ``g`` over the rest."""
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
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
    diff_args = tuple(_as_arrays(where, "argument", [args[a] for a in nums]))
    _check_differentiable(where, diff_args, nums, complex_ok)

    def g(*diff: PyTree) -> Any:
        full = list(args)
        for a, d in zip(nums, diff, strict=True):
            full[a] = d
        return f(*full, **kwargs)

    def unpack(grads: tuple) -> PyTree:
        return grads[0] if single else grads

    return g, diff_args, unpack


def _check_float_outputs(where: str, outs: Sequence[Any]) -> None:
    for o in outs:
        if not jnp.issubdtype(o.dtype, jnp.floating):
            raise InputTypeError(
                f"{where}: the function returns an output of dtype {o.dtype}; derivatives need "
                "real floating-point outputs"
            )


def _describe_shapes(shapes: list[tuple[int, ...]]) -> str:
    if len(shapes) == 1:
        return f"an array of shape {shapes[0]}"
    return f"{len(shapes)} outputs of shapes {shapes}"


def _paired(v: Array, like: Array) -> Array:
    """A product with a derivative taken along ``e`` and then ``i e`` (``v`` twice as long as
    ``like``, a complex vector) as JAX pairs complex values, by ``Re(u v)``: ``Re(v_e) -
    i Re(v_ie)``; the real part where ``like`` is real."""
    if len(v) > like.size:
        return v.real[: like.size] - 1j * v.real[like.size :]
    return v if jnp.iscomplexobj(like) else v.real


def _unravel_like(leaves: Sequence[Array], flat: Array) -> tuple[Array, ...]:
    """Split a flat vector into arrays shaped (and typed) like ``leaves``."""
    out, start = [], 0
    for leaf in leaves:
        size = int(np.prod(leaf.shape))
        out.append(flat[start : start + size].reshape(leaf.shape).astype(leaf.dtype))
        start += size
    return tuple(out)


def _split_jacobian(jac: Array, outs: Sequence[Array], ins: Sequence[Array]) -> list[list[Array]]:
    """Cut an (m, n) Jacobian into blocks of shape ``out.shape + in.shape``."""
    blocks, r = [], 0
    for o in outs:
        mo = int(np.prod(o.shape))
        row, c = [], 0
        for x in ins:
            nx = int(np.prod(x.shape))
            block = jac[r : r + mo, c : c + nx].reshape(tuple(o.shape) + tuple(x.shape))
            row.append(block.astype(jnp.result_type(o.dtype, x.dtype)))
            c += nx
        blocks.append(row)
        r += mo
    return blocks


def _bytes_per_direction(fun: FlatFun, primals: tuple[Array, ...]) -> float:
    """Bytes one tangent direction needs: inputs, outputs and every intermediate, as traced."""
    closed = jax.make_jaxpr(fun)(*primals)
    sizes = [v.aval.size * v.aval.dtype.itemsize for v in closed.jaxpr.invars]
    for eqn in closed.jaxpr.eqns:
        sizes += [
            v.aval.size * v.aval.dtype.itemsize for v in eqn.outvars if hasattr(v.aval, "size")
        ]
    return float(sum(sizes)) + 1.0


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Differentiator]] = {}
_ENTRY_POINTS_LOADED = False
D = TypeVar("D", bound=type[Differentiator])


def register(name: str) -> Callable[[D], D]:
    """Class decorator that registers a differentiator under ``name`` (third parties too;
    packages may also advertise one through the ``diffkit.differentiators`` entry point group).

    Example:
        >>> import diffkit as dk, jax
        >>> @dk.register("my-rev")
        ... class MyRev(dk.Differentiator):
        ...     mode, native = "reverse", frozenset({"vjp"})
        ...     def _vjp(self, fun, primals):
        ...         outs, vjp_fn, aux = jax.vjp(fun, *primals, has_aux=True)
        ...         return outs, vjp_fn, aux
        >>> float(dk.get("my-rev").grad(lambda x: x**2)(3.0))
        6.0
        >>> dk.unregister("my-rev")
    """
    if not isinstance(name, str) or not name:
        raise DiffkitError(f"register: name must be a non-empty string, got {name!r}")

    def decorate(cls: D) -> D:
        if not (isinstance(cls, type) and issubclass(cls, Differentiator)):
            raise DiffkitError(f"register({name!r}): {cls!r} is not a Differentiator subclass")
        if not cls.native:
            raise DiffkitError(f"register({name!r}): {cls.__name__}.native names no primitive")
        if getattr(cls, "mode", None) not in ("numerical", "symbolic", "forward", "reverse"):
            raise DiffkitError(
                f"register({name!r}): {cls.__name__}.mode must be one of "
                "numerical, symbolic, forward, reverse"
            )
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise DiffkitError(
                f"register: the name {name!r} is taken by {_REGISTRY[name].__name__}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def unregister(name: str) -> None:
    """Remove a registered differentiator (mainly for tests and plugins)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    """Register the built-in differentiators and, once, the plugins' entry points."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    importlib.import_module("diffkit.differentiators")  # the built-ins register themselves
    for ep in entry_points(group="diffkit.differentiators"):
        if ep.name not in _REGISTRY:
            register(ep.name)(ep.load())


def names() -> list[str]:
    """Names of every registered differentiator, sorted.

    Example:
        >>> import diffkit as dk
        >>> {"jax-fwd", "jax-rev"} <= set(dk.names())
        True
    """
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str, **options: Any) -> Differentiator:
    """A differentiator by name, configured with keyword options.

    Example:
        >>> import diffkit as dk
        >>> d = dk.get("jax-fwd", chunk_size=64)
        >>> d.name, d.mode
        ('jax-fwd', 'forward')
    """
    _load_entry_points()
    if name not in _REGISTRY:
        raise UnknownDifferentiatorError(
            f"unknown differentiator {name!r}; choose one of: {', '.join(names())}"
        )
    cls = _REGISTRY[name]
    params = _options(cls)
    unknown = sorted(set(options) - set(params))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise DiffkitError(
            f"{name}: unknown option{plural} {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(params) or '(none)'}"
        )
    return cls(**options)


def _options(cls: type[Differentiator]) -> list[str]:
    """Keyword options accepted by a differentiator's constructor (its whole MRO)."""
    found: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in found:
                found.append(p.name)
    return found


def options(name: str) -> list[str]:
    """The keyword options ``dk.get(name, ...)`` accepts.

    Example:
        >>> import diffkit as dk
        >>> "chunk_size" in dk.options("jax-fwd")
        True
    """
    get(name)  # raises the usual error for an unknown name
    return _options(_REGISTRY[name])
