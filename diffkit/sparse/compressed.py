"""Compressed Jacobians and Hessians: one pass per colour, decompressed into a BCOO.

A :class:`Plan` is prepared once per input shapes (pattern, colouring, seeds and the
gather that decompresses), on the host, and the derivative is then a fixed JAX program:
``c`` seeded passes (vmapped in chunks by the differentiator's own ``_map_basis``) and one
gather, which ``jax.jit`` compiles once and runs many times.

* forward methods (``jax-fwd``, ``dual``, ``symbolic``): ``J S`` by seeded JVPs, column
  colouring; ``fd``: Curtis-Powell-Reid, every column of a colour perturbed at once, each by
  its own step (so the compressed Jacobian equals ``fd``'s dense one);
* reverse methods (``jax-rev``, ``tape``): ``S^T J`` by seeded VJPs, row colouring;
* Hessians: ``H S`` by seeded Hessian-vector products (a JVP, or a VJP, of the method's own
  gradient), star colouring (``fd``: a column colouring, each entry from its own column's
  step, as ``fd``'s dense Hessian).

Example:
    >>> import diffkit as dk, jax.numpy as jnp
    >>> f = lambda x: x[1:] * x[:-1]
    >>> J = dk.get("jax-fwd").jacobian(f, sparsity="auto")(jnp.arange(1.0, 5.0))
    >>> J.todense().tolist()
    [[2.0, 1.0, 0.0, 0.0], [0.0, 3.0, 2.0, 0.0], [0.0, 0.0, 4.0, 3.0]]
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse
from jax.flatten_util import ravel_pytree

from diffkit._core.errors import DiffkitError
from diffkit._core.trees import bytes_per_direction, check_callable, select_args, trace_fun
from diffkit.sparse.colouring import Colouring, colour_columns, colour_rows, colour_star
from diffkit.sparse.detect import _detect, hessian_sparsity

__all__ = [
    "Plan",
    "make_plan",
    "plan_jacobian",
    "prepare_hessian",
    "prepare_jacobian",
    "sparse_hessian",
    "sparse_jacobian",
]


@dataclass(frozen=True)
class Plan:
    """A prepared compressed derivative: the ``pattern`` (CSR, ``(m, n)``), its
    ``colouring``, the ``mode`` (``"fwd"``: ``J S``; ``"rev"``: ``S^T J``; ``"star"``: ``H S``
    read symmetrically), and for each nonzero (CSR order) where the compressed result holds
    it: ``take = (colour, position)`` into the ``(n_colours, len)`` array of passes, and
    ``step_of``, the column whose finite-difference step divides it. ``detect_s`` and
    ``colour_s`` time the two steps of preparing it."""

    pattern: Any
    colouring: Colouring
    mode: str
    take: tuple[np.ndarray, np.ndarray] = field(repr=False)
    step_of: np.ndarray = field(repr=False)
    detect_s: float = 0.0
    colour_s: float = 0.0

    @property
    def n_colours(self) -> int:
        return self.colouring.n_colours

    @property
    def indices(self) -> np.ndarray:
        """The ``(nnz, 2)`` row/column indices of the nonzeros, in CSR order."""
        coo = self.pattern.tocoo()
        return np.stack([coo.row, coo.col], axis=1).astype(np.int32)

    def assemble(self, compressed: Any, steps: Any = None) -> Any:
        """The BCOO matrix from the ``(n_colours, len)`` array of seeded passes (``steps``:
        finite differences' steps, each entry divided by its column's)."""
        data = compressed[self.take[0], self.take[1]]
        if steps is not None:
            data = data / steps[self.step_of]
        return jsparse.BCOO(
            (data, jnp.asarray(self.indices)),
            shape=self.pattern.shape,
            indices_sorted=True,
            unique_indices=True,
        )


def _as_pattern(sparsity: Any, shape: tuple[int, int], where: str) -> Any:
    if isinstance(sparsity, jsparse.BCOO):
        sparsity = np.asarray(sparsity.todense())
    try:
        p = sp.csr_array(sparsity, dtype=bool)
    except Exception:
        raise DiffkitError(
            f"{where}: sparsity must be 'auto' or a 2-D boolean pattern (scipy.sparse, NumPy, "
            f"BCOO), got {type(sparsity).__name__}"
        ) from None
    if p.shape != shape:
        raise DiffkitError(
            f"{where}: the sparsity pattern has shape {p.shape}, but this Jacobian is {shape} "
            "(outputs x inputs, flattened); detect it with dk.jacobian_sparsity(f, *args)"
        )
    p.eliminate_zeros()  # a stored False is no nonzero
    p.sort_indices()
    return p


def make_plan(pattern: Any, mode: str, order: str, detect_s: float) -> Plan:
    """The plan for a known ``pattern``: colour it (``mode`` "fwd": columns, "rev": rows,
    "star": a symmetric Hessian's star colouring, in vertex ``order``) and index the seeds and
    the decompression; ``detect_s`` is recorded as the detection's time.

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> make_plan(sp.csr_array(np.eye(4, dtype=bool)), "fwd", "natural", 0.0).n_colours
        1
    """
    start = time.perf_counter()
    if mode == "fwd":
        colouring = colour_columns(pattern, order)
    elif mode == "rev":
        colouring = colour_rows(pattern, order)
    else:
        colouring = colour_star(pattern, order)
    colour_s = time.perf_counter() - start
    coo = pattern.tocsr().tocoo()
    r, c, k = coo.row.astype(np.int64), coo.col.astype(np.int64), colouring.colours
    if mode == "fwd":  # (J S)[i, colour(j)]
        take, step = (k[c], r), c
    elif mode == "rev":  # (S^T J)[colour(i), j]
        take, step = (k[r], c), c
    else:  # H S: entry (i, j) from row i at colour(j) when j is i's only neighbour of that
        # colour, else from its mirror (j, i), at colour(i): the star colouring ensures one
        key = r * (k.max() + 1 if k.size else 1) + k[c]
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        unique_here = (counts[inv] == 1) | (r == c)
        take = (np.where(unique_here, k[c], k[r]), np.where(unique_here, r, c))
        step = np.where(unique_here, c, r)
    return Plan(
        pattern,
        colouring,
        mode,
        (take[0].astype(np.int32), take[1].astype(np.int32)),
        step.astype(np.int32),
        detect_s,
        colour_s,
    )


def prepare_jacobian(
    f: Callable,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    mode: str = "fwd",
    sparsity: Any = "auto",
    order: str = "best",
) -> Plan:
    """Detect (or take) the pattern of ``f``'s Jacobian and colour it for ``mode`` (``"fwd"``:
    columns, ``"rev"``: rows).

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> plan = dk.sparse.prepare_jacobian(lambda x: jnp.diff(x) ** 2, jnp.ones(100))
        >>> plan.pattern.shape, plan.n_colours
        ((99, 100), 2)
    """
    if mode not in ("fwd", "rev"):
        raise DiffkitError(f"prepare_jacobian: mode must be 'fwd' or 'rev', got {mode!r}")
    start = time.perf_counter()
    detected = _detect(f, args, argnums, "prepare_jacobian")[0]
    detect_s = time.perf_counter() - start
    pattern = (
        detected
        if _is_auto(sparsity)
        else _as_pattern(sparsity, detected.shape, "prepare_jacobian")
    )
    return make_plan(pattern, mode, order, detect_s if _is_auto(sparsity) else 0.0)


def prepare_hessian(
    f: Callable,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    sparsity: Any = "auto",
    order: str = "best",
    star: bool = True,
) -> Plan:
    """Detect (or take) the pattern of a scalar ``f``'s Hessian and star-colour it
    (``star=False``: a column colouring, each entry read from its own column).

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> rosen = lambda x: jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
        >>> plan = dk.sparse.prepare_hessian(rosen, jnp.ones(50))
        >>> plan.pattern.nnz, plan.n_colours
        (148, 3)
    """
    start = time.perf_counter()
    pattern = hessian_sparsity(f, *args, argnums=argnums) if _is_auto(sparsity) else None
    detect_s = time.perf_counter() - start
    if pattern is None:
        n = sum(int(np.size(x)) for a in _nums(argnums, len(args)) for x in _leaves(args[a]))
        pattern = _as_pattern(sparsity, (n, n), "prepare_hessian")
        pattern = sp.csr_array(pattern + pattern.T, dtype=bool)
        pattern.sort_indices()
    return make_plan(pattern, "star" if star else "fwd", order, detect_s)


def _is_auto(sparsity: Any) -> bool:
    return isinstance(sparsity, str) and sparsity == "auto"


def _nums(argnums: int | Sequence[int], n_args: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    return tuple(a % n_args for a in nums)


def _leaves(a: Any) -> list[Any]:
    return jax.tree_util.tree_leaves(a)


def _key(args: tuple, kwargs: dict) -> Any:
    leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
    return tree, tuple((np.shape(x), str(jnp.result_type(x))) for x in leaves)


def _check_sparsity(where: str, sparsity: Any, d: Any = None) -> None:
    if d is not None and d.mode == "stochastic":
        raise DiffkitError(
            f"{where}: a stochastic estimate is not compressed by colouring (its passes are "
            "random directions, not seeds); use an exact method (jax-fwd, jax-rev, dual, tape, "
            "fd, symbolic) with sparsity=, or leave sparsity out"
        )
    if isinstance(sparsity, Plan):
        return
    if isinstance(sparsity, str) and sparsity != "auto":
        raise DiffkitError(
            f"{where}: sparsity must be 'auto' or a boolean pattern (scipy.sparse, NumPy, "
            f"BCOO), got {sparsity!r}"
        )


def sparse_jacobian(
    d: Any,
    f: Callable,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    sparsity: Any = "auto",
    strategy: str | None = None,
    order: str = "best",
) -> Callable:
    """``d.jacobian(f, sparsity=...)``: the Jacobian of the flattened outputs with respect
    to the flattened ``argnums`` arguments, as a ``(m, n)`` BCOO, computed in one pass per
    colour. The plan is prepared at the first call for each input shape, and kept; a
    :class:`Plan` given as ``sparsity`` (from :func:`prepare_jacobian`) is used as it is.

    Example:
        >>> import diffkit as dk, jax, jax.numpy as jnp
        >>> jac = jax.jit(dk.get("jax-rev").jacobian(lambda x: jnp.sin(x) * x[0], sparsity="auto"))
        >>> jac(jnp.array([0.0, 1.0, 2.0])).todense()[:, 0].tolist()
        [0.0, 0.8414709568023682, 0.9092974066734314]
    """
    where = f"{d.name}.jacobian"
    check_callable(where, f)
    _check_sparsity(where, sparsity, d)
    if strategy not in (None, "fwd", "rev"):
        raise DiffkitError(f"{where}: strategy must be 'fwd', 'rev' or None, got {strategy!r}")
    plans: dict[Any, Plan] = {}

    def plan_for(args: tuple, kwargs: dict) -> Plan:
        key = _key(args, kwargs)
        if key not in plans:

            def inner(*a: Any) -> Any:
                out = f(*a, **kwargs)
                return out[0] if has_aux else out

            plans[key] = plan_jacobian(d, inner, args, argnums, sparsity, strategy, order, where)
        return plans[key]

    @functools.wraps(f)
    def jacobian_f(*args: Any, **kwargs: Any) -> Any:
        plan = plan_for(args, kwargs)
        g, diff_args, _ = select_args(where, f, args, kwargs, argnums, False)
        leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
        x_leaves = tuple(leaves)
        fun = trace_fun(g, in_tree, x_leaves, has_aux)
        compressed, aux = _passes(d, fun, x_leaves, plan)
        if isinstance(compressed, tuple):  # fd: each entry over its column's step
            passes, h = compressed
            jac = plan.assemble(passes, h).astype(jnp.result_type(*fun.out_avals))
        else:
            jac = plan.assemble(compressed)
        return (jac, fun.unflatten_aux(aux)) if has_aux else jac

    return jacobian_f


def plan_jacobian(
    d: Any,
    f: Callable,
    args: tuple,
    argnums: int | Sequence[int] = 0,
    sparsity: Any = "auto",
    strategy: str | None = None,
    order: str = "best",
    where: str = "plan_jacobian",
) -> Plan:
    """The plan of differentiator ``d``'s compressed Jacobian of ``f`` at ``args``' shapes:
    the pattern detected (``"auto"``), given, or a :class:`Plan` taken as it is (its shape
    checked), coloured for ``strategy`` or, when ``None``, for whichever of ``d``'s modes
    needs fewer colours.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> f = lambda x: jnp.stack([jnp.sum(x * x), x[0]])  # a dense row: 4 column colours
        >>> plan = plan_jacobian(dk.get("jax-rev"), f, (jnp.ones(4),))
        >>> plan.mode, plan.n_colours
        ('rev', 2)
    """
    if isinstance(sparsity, Plan):
        if sparsity.pattern.shape != _shape(f, args, argnums):
            raise DiffkitError(
                f"{where}: the plan is for a {sparsity.pattern.shape} Jacobian, but this one is "
                f"{_shape(f, args, argnums)} (outputs x inputs, flattened); prepare it for "
                "these arguments"
            )
        if sparsity.mode not in ("fwd", "rev") or not _can(d, sparsity.mode):
            raise DiffkitError(
                f"{where}: the plan seeds {sparsity.mode!r} passes, which {d.name} does not "
                "take; prepare it with a mode this method has (dk.sparse.prepare_jacobian(..., "
                "mode='fwd' or 'rev'))"
            )
        return sparsity
    start = time.perf_counter()
    if _is_auto(sparsity):
        pattern = _detect(f, args, argnums, where)[0]
    else:
        pattern = _as_pattern(sparsity, _shape(f, args, argnums), where)
    detect_s = time.perf_counter() - start
    modes = [strategy] if strategy else [m for m in ("fwd", "rev") if _can(d, m)]
    found = [make_plan(pattern, m, order, detect_s) for m in modes]
    return min(found, key=lambda p: p.n_colours)


def _shape(f: Callable, args: tuple, argnums: int | Sequence[int]) -> tuple[int, int]:
    """``(m, n)``: the flattened outputs and differentiated inputs."""
    outs = jax.eval_shape(f, *args)
    m = sum(int(np.prod(o.shape)) for o in jax.tree_util.tree_leaves(outs))
    nums = _nums(argnums, len(args))
    return m, sum(int(np.size(x)) for a in nums for x in _leaves(args[a]))


def _can(d: Any, mode: str) -> bool:
    return ("jvp" if mode == "fwd" else "vjp") in d.native


def _whole(d: Any, n_colours: int, per_dir: float) -> Any:
    """``d``, or a copy that maps every colour in one vectorised pass: a handful of colours
    fit the memory budget together, and one batch of them beats a loop of cache-sized
    chunks (the dense Jacobian's default, :data:`~diffkit._core.interface.CACHE_BYTES`)."""
    if d.chunk_size is not None or n_colours * per_dir > d.memory_budget:
        return d
    whole = copy.copy(d)
    whole.chunk_size = max(n_colours, 1)
    return whole


def _passes(d: Any, fun: Any, x_leaves: tuple, plan: Plan) -> tuple[Any, Any]:
    """The ``(n_colours, len)`` array of seeded passes, and the aux outputs."""
    c = plan.n_colours
    d = _whole(d, c, bytes_per_direction(fun, x_leaves) * 3)
    x, unravel = ravel_pytree(x_leaves)
    per_dir = bytes_per_direction(fun, x_leaves)
    if plan.mode == "rev":
        outs, vjp_fn, aux = d._call_vjp(fun, x_leaves)
        y, unravel_y = ravel_pytree(outs)
        seeds = jnp.asarray(plan.colouring.seeds(), y.dtype)
        if c == 0:
            return jnp.zeros((0, x.size), x.dtype), aux

        def row(k: Any) -> Any:
            return ravel_pytree(vjp_fn(unravel_y(seeds[k])))[0]

        return d._map_basis(row, c, per_dir), aux
    outs, aux = fun(*x_leaves)
    y = ravel_pytree(outs)[0]
    if c == 0:
        return jnp.zeros((0, y.size), y.dtype), aux
    if d.name == "fd":
        passes, h = _curtis_powell_reid(d, fun, x_leaves, outs, plan)
        return (passes, h), aux
    seeds = jnp.asarray(plan.colouring.seeds(), x.dtype)

    def col(k: Any) -> Any:
        _, y_dot, _ = d._call_jvp(fun, x_leaves, tuple(unravel(seeds[k])))
        return ravel_pytree(y_dot)[0]

    return d._map_basis(col, c, per_dir), aux


def _curtis_powell_reid(d: Any, fun: Any, x_leaves: tuple, outs: tuple, plan: Plan) -> Any:
    """``fd``'s stencil along each colour, every column of the colour moved by its own step
    at once (Curtis, Powell & Reid): ``(passes, steps)``, each entry to be divided by its
    column's step, which makes it the very number ``fd``'s dense column gives."""
    with d._precision():
        x, f_flat = d._flat(fun, x_leaves)
        h = d._steps(x)
        if d.scheme != "complex":  # the exact steps fd's dense columns take
            sign = -1.0 if max(d.stencil.offsets) <= 0 else 1.0
            h = sign * ((x + sign * h) - x)
        f0 = d._center(f_flat, x, outs)
        moves = jnp.asarray(plan.colouring.seeds(), x.dtype) * h

        def col(k: Any) -> Any:
            return d._along(f_flat, x, lambda c: x + c * moves[k], jnp.ones((), x.dtype), f0)

        per_dir = bytes_per_direction(fun, x_leaves) * max(d.stencil.per_direction, 1)
        return d._map_basis(col, plan.n_colours, per_dir), h


def sparse_hessian(
    d: Any,
    f: Callable,
    argnums: int | Sequence[int] = 0,
    sparsity: Any = "auto",
    order: str = "best",
) -> Callable:
    """``d.hessian(f, sparsity=...)``: a scalar ``f``'s Hessian with respect to the
    flattened ``argnums`` arguments, as an ``(n, n)`` BCOO, from one Hessian-vector product
    of ``d``'s own gradient per colour.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> f = lambda x: jnp.sum(x[1:] * x[:-1] ** 2)
        >>> dk.get("jax-rev").hessian(f, sparsity="auto")(jnp.ones(3)).todense().tolist()
        [[2.0, 2.0, 0.0], [2.0, 2.0, 2.0], [0.0, 2.0, 0.0]]
    """
    where = f"{d.name}.hessian"
    check_callable(where, f)
    _check_sparsity(where, sparsity, d)
    plans: dict[Any, Plan] = {}
    jacobians: dict[Any, Callable] = {}
    star = d.name != "fd"  # fd's dense Hessian is not symmetric: read each entry in place

    @functools.wraps(f)
    def hessian_f(*args: Any, **kwargs: Any) -> Any:
        key = _key(args, kwargs)
        if key not in plans:
            plans[key] = prepare_hessian(
                lambda *a: f(*a, **kwargs),
                *args,
                argnums=argnums,
                sparsity=sparsity,
                order=order,
                star=star,
            )
        plan = plans[key]
        g, diff_args, _ = select_args(where, f, args, kwargs, argnums, False)
        x, unravel = ravel_pytree(diff_args)

        def loss(z: Any) -> Any:
            return g(*unravel(z))

        grad = d.grad(loss)
        if not star:  # fd: the compressed Jacobian of its own gradient, column by column
            if key not in jacobians:
                jacobians[key] = sparse_jacobian(d, grad, sparsity=plan.pattern, strategy="fwd")
            return jacobians[key](x)
        seeds = jnp.asarray(plan.colouring.seeds(), x.dtype)
        if "jvp" in d.native:

            def hvp(k: Any) -> Any:
                return d.jvp(grad, (x,), (seeds[k],))[1]
        else:
            _, pull = d.vjp(grad, x)

            def hvp(k: Any) -> Any:
                return pull(seeds[k])[0]

        if plan.n_colours == 0:
            return plan.assemble(jnp.zeros((0, x.size), x.dtype))
        per_dir = 8.0 * x.size * x.dtype.itemsize
        compressed = _whole(d, plan.n_colours, per_dir)._map_basis(hvp, plan.n_colours, per_dir)
        return plan.assemble(compressed)

    return hessian_f
