"""The contract every differentiator keeps.

A differentiator implements one or both of two primitives on *flat* functions:

* ``_jvp(fun, primals, tangents) -> (outs, out_dots, aux)``
* ``_vjp(fun, primals) -> (outs, vjp_fn, aux)`` with ``vjp_fn(out_bars) -> primal_bars``

where ``fun(*primals)`` takes a tuple of arrays and returns a pair ``(outs, aux)`` of tuples of
arrays (``aux`` is carried along undifferentiated). Everything a user calls -- pytrees,
``argnums``, ``has_aux``, ``grad``, ``value_and_grad``, ``jacobian``, ``hessian``, input checks
-- is derived here, once. The user's function is traced once per call, at this boundary
(:func:`diffkit._core.trees.trace_fun`); the primitives receive that record, a
:class:`~diffkit._core.trees.TracedFun` that is called like ``fun`` and also carries the closed
jaxpr and the avals (differentiators with ``traced = False`` get the plain function instead).
A primitive a differentiator does not implement natively is derived from the other through
the full Jacobian, and :meth:`Differentiator.passes` declares that cost. The registry that
names differentiators is :mod:`diffkit._core.registry`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from diffkit._core.errors import DiffkitError, InputTypeError, UnsupportedPrimitiveError
from diffkit._core.trees import (
    TracedFun,
    as_arrays,
    bytes_per_direction,
    check_callable,
    select_args,
    trace_fun,
    unravel_like,
)
from diffkit._core.types import Array, PyTree

#: XLA options for the programs diffkit compiles itself on the CPU: no YNNPACK fusions, which
#: jax 0.10 (XLA's ``xla_cpu_experimental_ynn_fusion_type``) applies to reductions and which
#: computed a float32 batched VJP wrongly (see ``Differentiator._map_basis``).
CPU_SAFE = {"xla_cpu_experimental_ynn_fusion_type": ""}


def safe_compile_options() -> dict[str, Any] | None:
    """:data:`CPU_SAFE` where JAX's default backend is the CPU, else ``None``: what to pass to
    ``jax.jit(..., compiler_options=)`` or ``Lowered.compile`` for a top-level program.

    Example:
        >>> import jax
        >>> safe_compile_options() == (CPU_SAFE if jax.default_backend() == "cpu" else None)
        True
    """
    return CPU_SAFE if jax.default_backend() == "cpu" else None


#: Bytes of intermediates (:func:`~diffkit._core.trees.bytes_per_direction` per direction) one
#: vectorised chunk of basis directions may take when ``chunk_size`` is not set (the memory
#: budget still caps): a chunk beyond the caches makes the batched passes memory-bound, each
#: direction costing more as the function grows. 2 cores (32 MiB L3), float64, jax-rev's
#: dense Jacobians: ba p=1000 1.51 s with 1 GiB chunks, 0.77 s with 8 MiB; ht 1000 points
#: 0.65 s vs 0.19 s; fd's MLP gradient n=1e4 9.2 s vs 3.5 s (benchmarks/README.md).
CACHE_BYTES = 8 * 2**20

Mode = Literal["numerical", "symbolic", "forward", "reverse", "stochastic"]
Strategy = Literal["fwd", "rev"]
FlatFun = Callable[..., tuple[tuple[Array, ...], tuple[Array, ...]]]

__all__ = ["Differentiator", "Mode", "Strategy"]


class Differentiator:
    """Base class: subclasses set ``name``, ``mode`` and ``native`` and implement the
    primitives listed in ``native`` (``"jvp"``, ``"vjp"`` or both).

    Options common to every differentiator:

    * ``chunk_size`` -- how many basis directions one vectorised pass evaluates when a
      Jacobian or a forward-mode gradient is assembled (``None``: as many as fit the budget
      and :data:`CACHE_BYTES`, a cache-sized working set);
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
    #: What the native ``_jvp``/``_vjp`` receive as ``fun``: True, the
    #: :class:`~diffkit._core.trees.TracedFun` record (callable like the flat function, without
    #: running the user's Python again; its ``closed`` jaxpr is there to interpret); False,
    #: the plain flat function (it runs the user's Python on each call or trace).
    traced: ClassVar[bool] = False

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
        if not cls.native <= {"jvp", "vjp"}:
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
    def _call_jvp(self, fun: TracedFun, primals: tuple[Array, ...], tangents: tuple[Array, ...]):
        """``_jvp`` on the record, or on the plain function where a native one asks for it."""
        native = "jvp" in self.native and not self.traced
        return self._jvp(fun.fun if native else fun, primals, tangents)

    def _call_vjp(self, fun: TracedFun, primals: tuple[Array, ...]):
        """``_vjp`` on the record, or on the plain function where a native one asks for it."""
        native = "vjp" in self.native and not self.traced
        return self._vjp(fun.fun if native else fun, primals)

    def _jvp(self, fun: FlatFun, primals: tuple[Array, ...], tangents: tuple[Array, ...]):
        """Default: ``J @ x_dot`` from the Jacobian assembled by VJPs (``m`` passes); ``fun``
        is the :class:`~diffkit._core.trees.TracedFun` record."""
        assert isinstance(fun, TracedFun)  # _call_jvp passes the plain function to native ones
        outs, vjp_fn, aux = self._call_vjp(fun, primals)
        x_dot, _ = ravel_pytree(tangents)
        rows = self._rows(fun, primals, vjp_fn, outs)  # (m, n); (2m, n) for complex outputs
        y_dot = _paired(rows @ x_dot.astype(rows.dtype), ravel_pytree(outs)[0])
        return outs, unravel_like(outs, y_dot), aux

    def _vjp(self, fun: FlatFun, primals: tuple[Array, ...]):
        """Default: ``y_bar @ J`` from the Jacobian assembled by JVPs (``n`` passes); ``fun``
        is the :class:`~diffkit._core.trees.TracedFun` record."""
        assert isinstance(fun, TracedFun)  # _call_vjp passes the plain function to native ones
        outs, aux = fun(*primals)
        split = {"split": True} if jnp.iscomplexobj(ravel_pytree(primals)[0]) else {}
        cols = self._cols(fun, primals, outs, **split)  # (n, m); (2n, m) for complex x

        def vjp_fn(out_bars: tuple[Array, ...]) -> tuple[Array, ...]:
            y_bar, _ = ravel_pytree(out_bars)
            x_bar = _paired(cols @ y_bar.astype(cols.dtype), ravel_pytree(primals)[0])
            return unravel_like(primals, x_bar)

        return outs, vjp_fn, aux

    # ------------------------------------------ Jacobians from basis directions
    def _chunk(self, n_dirs: int, bytes_per_dir: float) -> int:
        if self.chunk_size is not None:
            return min(self.chunk_size, max(n_dirs, 1))
        budget = min(self.memory_budget, CACHE_BYTES)
        return int(max(1, min(n_dirs, budget // max(bytes_per_dir, 1.0))))

    def _map_basis(self, fn: Callable[[Array], Array], n_dirs: int, bytes_per_dir: float) -> Array:
        """Stack ``fn(i)`` for ``i < n_dirs``: vmapped in chunks that fit the memory budget.

        One chunk is ``jax.vmap`` as called (eagerly: primitive by primitive). Several are a
        ``lax.map``, which XLA compiles whole: outside a user's jit it is compiled without the
        CPU's YNNPACK fusions (:data:`CPU_SAFE`), with which jax 0.10 got a float32 batched
        VJP wrong once a batch passed ~110 directions (ba's Jacobian off by up to 40% from
        row 110 on; JAX's own ``jax.vjp``, vmapped and jitted, too); ``fn``'s closed-over
        values (a VJP's residuals) reach that program as its arguments."""
        chunk = self._chunk(n_dirs, bytes_per_dir)
        idx = jnp.arange(n_dirs)
        top = not isinstance(idx, jax.core.Tracer)  # else inside a jit, which compiles it all
        try:
            if chunk >= n_dirs and top:
                return jax.vmap(fn)(idx)
            closed = jax.make_jaxpr(fn)(idx[0])

            def mapped(consts: list[Array], idx: Array) -> Array:
                def one(i: Array) -> Array:
                    return jax.core.eval_jaxpr(closed.jaxpr, consts, i)[0]

                return (
                    jax.vmap(one)(idx) if chunk >= n_dirs else lax.map(one, idx, batch_size=chunk)
                )

            options = safe_compile_options() if top else None
            return jax.jit(mapped, compiler_options=options)(closed.consts, idx)
        except DiffkitError as error:  # an interpreter's refusal (a NotImplementedError too),
            first = str(error).splitlines()[0]  # which vmap may have given JAX's footer
            raise error if first == str(error) else type(error)(first) from None
        except NotImplementedError as error:  # a primitive JAX cannot vmap (as jax.jacfwd)
            last = str(error).strip().splitlines()[0]
            raise UnsupportedPrimitiveError(
                f"{self.name}: cannot vectorise the basis directions of this Jacobian ({last}), "
                "and JAX's jacfwd/jacrev cannot either; take one direction at a time with "
                f"dk.get({self.name!r}).jvp or .vjp"
            ) from None

    def _cols(
        self, fun: TracedFun, primals: tuple[Array, ...], outs: tuple[Array, ...], split=False
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
            _, y_dot, _ = self._call_jvp(fun, primals, unravel(e))
            return ravel_pytree(y_dot)[0]

        cols = self._map_basis(col, n_dirs, bytes_per_direction(fun, primals))
        return cols if split or n_dirs == x.size else cols[: x.size] - 1j * cols[x.size :]

    def _rows(
        self, fun: TracedFun, primals: tuple[Array, ...], vjp_fn: Callable, outs: tuple
    ) -> Array:
        """``J`` as an (m, n) array: one VJP per output direction (complex outputs: then one
        per ``i e``, stacked below, for :func:`_paired`)."""
        y, unravel = ravel_pytree(outs)

        def row(j: Array) -> Array:
            e = jax.nn.one_hot(j % y.size, y.size, dtype=y.dtype)
            e = jnp.where(j < y.size, e, 1j * e) if n_dirs > y.size else e
            return ravel_pytree(vjp_fn(unravel(e)))[0]

        n_dirs = 2 * y.size if jnp.iscomplexobj(y) else y.size
        return self._map_basis(row, n_dirs, bytes_per_direction(fun, primals))

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
        check_callable(where, f)
        if not isinstance(primals, tuple | list) or not isinstance(tangents, tuple | list):
            raise InputTypeError(
                f"{where}: primals and tangents must be tuples, like jax.jvp(f, (x,), (v,))"
            )
        primals = tuple(as_arrays(where, "primal", primals))
        tangents = tuple(as_arrays(where, "tangent", tangents))
        _check_same(where, "tangents", primals, tangents)
        x_leaves, in_tree = jax.tree_util.tree_flatten(primals)
        t_leaves = jax.tree_util.tree_leaves(tangents)
        fun = trace_fun(f, in_tree, x_leaves, has_aux)
        outs, out_dots, aux = self._call_jvp(fun, tuple(x_leaves), tuple(t_leaves))
        out, out_dot = fun.unflatten(outs), fun.unflatten(out_dots)
        return (out, out_dot, fun.unflatten_aux(aux)) if has_aux else (out, out_dot)

    def vjp(self, f: Callable, *primals: PyTree, has_aux: bool = False):
        """Reverse-mode product: ``(f(*primals), vjp_fn)`` with ``vjp_fn(y_bar) -> x_bars``.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> y, vjp_fn = dk.get("jax-rev").vjp(lambda x: 3.0 * x, jnp.ones(2))
            >>> vjp_fn(jnp.array([1.0, 2.0]))[0].tolist()
            [3.0, 6.0]
        """
        where = f"{self.name}.vjp"
        check_callable(where, f)
        primals = tuple(as_arrays(where, "primal", primals))
        x_leaves, in_tree = jax.tree_util.tree_flatten(primals)
        fun = trace_fun(f, in_tree, x_leaves, has_aux)
        outs, flat_vjp, aux = self._call_vjp(fun, tuple(x_leaves))
        out = fun.unflatten(outs)

        def vjp_fn(y_bar: PyTree) -> tuple[PyTree, ...]:
            (y_bar,) = as_arrays(f"{where} cotangent", "cotangent", (y_bar,))
            _check_same(f"{where} cotangent", "cotangent", (out,), (y_bar,))
            bars = flat_vjp(tuple(jax.tree_util.tree_leaves(y_bar)))
            return jax.tree_util.tree_unflatten(in_tree, list(bars))

        return (out, vjp_fn, fun.unflatten_aux(aux)) if has_aux else (out, vjp_fn)

    def value_and_grad(
        self,
        f: Callable,
        argnums: int | Sequence[int] = 0,
        has_aux: bool = False,
        holomorphic: bool = False,
    ) -> Callable:
        """Like :func:`jax.value_and_grad`: ``f`` must return a real scalar (with
        ``holomorphic=True``, a complex scalar of complex inputs: the derivative ``f'(z)``).

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> v, g = dk.get("jax-rev").value_and_grad(lambda w: jnp.sum(w**3))(jnp.array([2.0]))
            >>> float(v), g.tolist()
            (8.0, [12.0])
        """
        where = f"{self.name}.grad"
        check_callable(where, f)

        @functools.wraps(f)
        def value_and_grad_f(*args: PyTree, **kwargs: Any):
            g, diff_args, unpack = select_args(where, f, args, kwargs, argnums, self._ad)
            x_leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
            fun = trace_fun(g, in_tree, x_leaves, has_aux)
            if holomorphic:
                outs, grads, aux = self._holomorphic_grad(where, fun, tuple(x_leaves))
            else:
                outs, grads, aux = self._scalar_grad(where, fun, tuple(x_leaves))
            value = fun.unflatten(outs)
            grad = unpack(jax.tree_util.tree_unflatten(in_tree, list(grads)))
            return ((value, fun.unflatten_aux(aux)), grad) if has_aux else (value, grad)

        return value_and_grad_f

    def grad(
        self,
        f: Callable,
        argnums: int | Sequence[int] = 0,
        has_aux: bool = False,
        holomorphic: bool = False,
    ) -> Callable:
        """Like :func:`jax.grad`: the gradient has the pytree structure of the argument(s).

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> g = dk.get("jax-fwd").grad(lambda p: p["a"] * p["b"])({"a": 2.0, "b": 5.0})
            >>> float(g["a"]), float(g["b"])
            (5.0, 2.0)
        """
        vg = self.value_and_grad(f, argnums, has_aux, holomorphic)

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
        sparsity: Any = None,
    ) -> Callable:
        """Full Jacobian, shaped like :func:`jax.jacfwd`'s (output shape + input shape).

        Columns come from JVPs or rows from VJPs (``strategy="fwd"``/``"rev"``); by default the
        cheaper of the two for this differentiator and these shapes. ``sparsity="auto"`` (or a
        boolean pattern): one pass per colour, returned as an ``(m, n)`` BCOO of the flattened
        outputs and inputs (:mod:`diffkit.sparse`, docs/sparse.md).

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> dk.get("jax-rev").jacobian(lambda x: x * x)(jnp.array([1.0, 3.0])).tolist()
            [[2.0, 0.0], [0.0, 6.0]]
        """
        where = f"{self.name}.jacobian"
        if sparsity is not None:  # diffkit.sparse sits above the core: reached by name
            compressed = importlib.import_module("diffkit.sparse.compressed")
            return compressed.sparse_jacobian(self, f, argnums, has_aux, sparsity, strategy)
        check_callable(where, f)
        if strategy not in (None, "fwd", "rev"):
            raise DiffkitError(f"{where}: strategy must be 'fwd', 'rev' or None, got {strategy!r}")

        @functools.wraps(f)
        def jacobian_f(*args: PyTree, **kwargs: Any):
            g, diff_args, unpack = select_args(where, f, args, kwargs, argnums, self._ad)
            leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
            x_leaves = tuple(leaves)
            fun = trace_fun(g, in_tree, x_leaves, has_aux)
            _check_float_outputs(where, fun.out_avals)
            how = strategy or self._strategy(fun.size_in, fun.size_out)
            if how == "fwd":
                outs, aux = fun(*x_leaves)
                jac = self._cols(fun, x_leaves, outs).T
            else:
                outs, vjp_fn, aux = self._call_vjp(fun, x_leaves)
                jac = self._rows(fun, x_leaves, vjp_fn, outs)
            blocks = _split_jacobian(jac, outs, x_leaves)
            per_out = [unpack(jax.tree_util.tree_unflatten(in_tree, list(row))) for row in blocks]
            out_jac = fun.unflatten(tuple(per_out))
            return (out_jac, fun.unflatten_aux(aux)) if has_aux else out_jac

        return jacobian_f

    def hessian(
        self, f: Callable, argnums: int | Sequence[int] = 0, sparsity: Any = None
    ) -> Callable:
        """Second derivatives: the Jacobian of this differentiator's own gradient
        (``sparsity="auto"`` or a pattern: an ``(n, n)`` BCOO from one Hessian-vector product
        per colour of a star colouring, :mod:`diffkit.sparse`).

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> dk.get("jax-rev").hessian(lambda x: jnp.sum(x**3))(jnp.array([1.0, 2.0])).tolist()
            [[6.0, 0.0], [0.0, 12.0]]
        """
        if sparsity is not None:
            compressed = importlib.import_module("diffkit.sparse.compressed")
            return compressed.sparse_hessian(self, f, argnums, sparsity)
        return self.jacobian(self.grad(f, argnums), argnums)

    # ------------------------------------------------------------- internals
    def _holomorphic_grad(self, where: str, fun: TracedFun, x_leaves: tuple[Array, ...]):
        """``(outs, f'(z) leaves, aux)`` of a holomorphic complex scalar: the VJP of 1."""
        avals = fun.out_avals
        dtypes = [str(a.dtype) for a in (*avals, *x_leaves)]
        if len(avals) != 1 or avals[0].shape != () or not all("complex" in d for d in dtypes):
            raise InputTypeError(
                f"{where}: holomorphic=True needs complex inputs and one complex scalar output, "
                f"got dtypes {dtypes}; for a real loss leave holomorphic out"
            )
        outs, vjp_fn, aux = self._call_vjp(fun, x_leaves)
        return outs, tuple(vjp_fn((jnp.ones_like(outs[0]),))), aux

    def _scalar_grad(self, where: str, fun: TracedFun, x_leaves: tuple[Array, ...]):
        """``(outs, gradient leaves, aux)`` of a scalar function, by the cheaper primitive."""
        avals = fun.out_avals
        if fun.out_tree.num_leaves != 1 or avals[0].shape != ():
            shapes = [tuple(o.shape) for o in avals]
            raise DiffkitError(
                f"{where}: the function must return a scalar, got {_describe_shapes(shapes)}; "
                "use .jacobian (or .vjp) for non-scalar outputs"
            )
        _check_float_outputs(where, avals)
        if self._strategy(fun.size_in, 1) == "rev":
            outs, vjp_fn, aux = self._call_vjp(fun, x_leaves)
            grads = vjp_fn((jnp.ones_like(outs[0]),))
        else:
            outs, aux = fun(*x_leaves)
            cols = self._cols(fun, x_leaves, outs)[:, 0]
            grads = unravel_like(x_leaves, cols)
        return outs, tuple(grads), aux


# ---------------------------------------------------------------- helpers


def _check_same(where: str, role: str, primals: tuple, others: tuple) -> None:
    p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(primals)
    o_leaves, o_tree = jax.tree_util.tree_flatten(others)
    if p_tree != o_tree:  # type: ignore[operator]  # jaxlib ships no stub for PyTreeDef
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
