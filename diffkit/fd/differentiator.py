"""The ``fd`` differentiator: finite differences, batched with ``jax.vmap`` and chunked.

A JVP is one stencil along the tangent. A gradient or Jacobian perturbs every input coordinate
with its own step, all perturbations of a chunk in one vectorised call, in chunks sized to the
memory budget (the base class's ``_map_basis``); one-sided rules share ``f(x)``. A VJP goes
through that Jacobian (``n`` directions, declared by :meth:`FiniteDifferences.evaluations`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import DiffkitError, UnsupportedPrimitiveError
from diffkit._core.interface import Differentiator, FlatFun
from diffkit._core.jaxpr import user_site
from diffkit._core.registry import register
from diffkit._core.trees import TracedFun, bytes_per_direction, select_args, trace_fun, unravel_like
from diffkit._core.types import Array
from diffkit.fd.stencils import FDResult, check_analytic, default_step, stencil

__all__ = ["FiniteDifferences"]

#: Assumed relative error of one evaluation of ``f``, in units of eps (for the error estimate).
ROUNDING_ULPS = 4.0


@register("fd")
class FiniteDifferences(Differentiator):
    """Finite differences of any accuracy order, the complex step, and Richardson extrapolation.

    Options (keywords): ``scheme`` (``"central"``, ``"forward"``, ``"backward"``,
    ``"complex"``, ``"richardson"``), ``order`` (accuracy order; default 1 one-sided, 2
    central/complex, 6 Richardson), ``step`` (``None``: per coordinate from the dtype and
    ``|x_i|``, see :func:`diffkit.fd.default_step`; a number: the same absolute step for every
    coordinate; an array: one step per input coordinate, in flattened order), ``precision``
    (``"float64"``: evaluate ``f`` in float64 and cast the result back), plus ``chunk_size``
    and ``memory_budget``. For repeated calls wrap the result in ``jax.jit``.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> d = dk.get("fd", scheme="central", order=4)
        >>> [round(v, 4) for v in d.grad(lambda x: jnp.sum(x**3))(jnp.array([1.0, 2.0])).tolist()]
        [3.0, 12.0]
        >>> d.evaluations("grad", n=1000)
        4000
    """

    mode = "numerical"
    native = frozenset({"jvp"})
    traced = True
    description = "finite differences (any order, complex step, Richardson), vmapped and chunked"

    def __init__(
        self,
        *,
        scheme: str = "central",
        order: int | None = None,
        step: float | Array | np.ndarray | None = None,
        precision: str | None = None,
        chunk_size: int | None = None,
        memory_budget: float = 2**30,
    ) -> None:
        super().__init__(chunk_size=chunk_size, memory_budget=memory_budget)
        self.stencil = stencil(scheme, order)
        self.scheme, self.order = scheme, self.stencil.order
        self.step = _check_step(step)
        if precision not in (None, "float64"):
            raise DiffkitError(f"fd: precision must be None or 'float64', got {precision!r}")
        self.precision = precision
        self._factor = 1.0  # step multiplier (2 for the error estimate's second step)

    def __repr__(self) -> str:
        return f"<diffkit differentiator 'fd' ({self.scheme}, order {self.order})>"

    # ------------------------------------------------------------------ costs
    def evaluations(self, op: str, n: int, m: int = 1) -> int:
        """Calls of ``f`` that ``op`` costs for ``n`` inputs and ``m`` outputs: one stencil per
        direction (one direction for ``jvp``, ``n`` otherwise), ``f(x)`` counted once when the
        rule uses it.

        Example:
            >>> import diffkit as dk
            >>> [dk.get("fd", scheme=s).evaluations("grad", 100) for s in ("forward", "complex")]
            [101, 100]
        """
        self.passes(op, n, m)  # checks op
        directions = 1 if op == "jvp" else n
        return directions * self.stencil.per_direction + self.stencil.uses_center

    # ---------------------------------------------------------- the primitive
    def _jvp(self, fun: FlatFun, primals: tuple[Array, ...], tangents: tuple[Array, ...]):
        outs, aux = fun(*primals)
        with self._precision():
            x, f_flat = self._flat(fun, primals)
            v = jnp.concatenate([jnp.ravel(t).astype(x.dtype) for t in tangents])
            # a step t along v moves coordinate i by t v_i: as far as its own step h_i
            v_max = jnp.max(jnp.abs(v), initial=0.0)
            moving = v_max > 0
            v_max = jnp.where(moving, v_max, 1.0)
            t = jnp.max(jnp.abs(self._steps(x) * v), initial=0.0) / v_max**2
            t = jnp.where(moving, t, 1.0)
            y_dot = self._along(f_flat, x, lambda c: x + c * v, t, self._center(f_flat, x, outs))
            y_dot = jnp.where(moving, y_dot, 0.0)
        return outs, unravel_like(outs, y_dot), aux

    def _cols(
        self,
        fun: FlatFun,
        primals: tuple[Array, ...],
        outs: tuple[Array, ...],
        split: bool = False,
    ) -> Array:
        """All ``n`` coordinate stencils, vmapped in chunks: ``J^T`` as an (n, m) array
        (``split``, for complex inputs in the base class, changes nothing: fd takes real
        inputs only)."""
        with self._precision():
            x, f_flat = self._flat(fun, primals)
            h = self._steps(x)
            if self.scheme != "complex":  # a step whose x +- h is exact: (x +- h) - x
                sign = -1.0 if max(self.stencil.offsets) <= 0 else 1.0
                h = sign * ((x + sign * h) - x)
                if not isinstance(h, jax.core.Tracer) and not bool(jnp.all(h > 0)):
                    i = int(jnp.argmin(h))
                    raise DiffkitError(
                        f"fd: the step for input coordinate {i} is below the resolution of "
                        f"{x.dtype} at |x| = {abs(float(x[i])):.3g}; choose a larger step"
                    )
            f0 = self._center(f_flat, x, outs)

            def col(i: Array) -> Array:
                return self._along(f_flat, x, lambda c: _add_at(x, i, c), h[i], f0)

            per_dir = bytes_per_direction(fun, primals) * max(self.stencil.per_direction, 1)
            per_dir *= 2 if self.scheme == "complex" else 1
            try:
                cols = self._map_basis(col, x.size, per_dir)
            except UnsupportedPrimitiveError:  # name the host call JAX could not batch
                _check_batchable(fun)
                raise
        return cols.astype(jnp.result_type(*outs))

    # -------------------------------------------------------- error estimate
    def gradient(self, f: Callable, argnums: int | tuple[int, ...] = 0) -> Callable[..., FDResult]:
        """Like :meth:`grad`, but returns an :class:`~diffkit.fd.FDResult`: the value, the
        gradient, a per-coordinate error bound from a second step ``2h`` plus rounding, the
        evaluations used (twice the gradient's, ``f(x)`` once) and the steps.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> r = dk.get("fd").gradient(lambda x: jnp.sum(jnp.sin(x)))(jnp.array([0.0, 1.0]))
            >>> r.evaluations, bool(abs(r.grad[0] - 1.0) <= r.error[0] < 1e-3)
            (9, True)
        """
        where = f"{self.name}.gradient"

        def gradient_f(*args: Any, **kwargs: Any) -> FDResult:
            g, diff_args, unpack = select_args(where, f, args, kwargs, argnums)
            leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
            x_leaves = tuple(leaves)
            fun = trace_fun(g, in_tree, x_leaves, False)
            outs, grads, _ = self._scalar_grad(where, fun, x_leaves)
            twice = copy.copy(self)
            twice._factor = 2.0 * self._factor
            coarse = twice._cols(fun, x_leaves, outs)[:, 0]
            with self._precision():
                x, _ = self._flat(fun, x_leaves)
                h, eps = self._steps(x), float(jnp.finfo(x.dtype).eps)
                d = jnp.concatenate([jnp.ravel(a) for a in grads]).astype(x.dtype)
                f0 = jnp.maximum(1.0, jnp.abs(outs[0]).astype(x.dtype))  # f may cancel
                c = ROUNDING_ULPS * eps
                if self.scheme == "complex":
                    rounding = c * (jnp.abs(d) + f0 / jnp.maximum(1.0, jnp.abs(x)))
                else:
                    s = sum(abs(w) for w in self.stencil.weights)
                    r = max(abs(o) for o in self.stencil.offsets)
                    rounding = s * c * (f0 / h + r * jnp.abs(d))
                error = 2.0 * jnp.abs(d - coarse.astype(x.dtype)) + rounding

            def tree(flat: Array) -> Any:
                return unpack(jax.tree_util.tree_unflatten(in_tree, unravel_like(x_leaves, flat)))

            n = int(x.size)
            return FDResult(
                value=fun.unflatten(outs),
                grad=unpack(jax.tree_util.tree_unflatten(in_tree, list(grads))),
                error=tree(error),
                evaluations=2 * n * self.stencil.per_direction + 1,
                step=tree(h),
                scheme=self.scheme,
                order=self.order,
            )

        return gradient_f

    # ------------------------------------------------------------- internals
    def _precision(self) -> contextlib.AbstractContextManager:
        return jax.enable_x64(True) if self.precision else contextlib.nullcontext()

    def _flat(self, fun: FlatFun, primals: tuple[Array, ...]):
        """The primals as one flat vector (in the evaluation dtype) and ``f`` on such vectors.
        An empty input, or (outside ``jit``) a non-finite one, is a one-line error."""
        if not sum(int(np.size(p)) for p in primals):
            raise DiffkitError(
                "fd: the input has no entries (an empty array or pytree): there is no "
                "coordinate to step along; give at least one number"
            )
        dtype = jnp.float64 if self.precision else jnp.result_type(*primals)
        x = jnp.concatenate([jnp.ravel(p).astype(dtype) for p in primals])
        if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
            i = int(jnp.argmin(jnp.isfinite(x)))
            raise DiffkitError(
                f"fd: input coordinate {i} is {float(x[i])}: finite differences evaluate f "
                "around x and need finite inputs; use an AD method (jax-fwd, jax-rev, dual, "
                "tape) there"
            )
        shapes = [p.shape for p in primals]
        if isinstance(fun, TracedFun) and (self.scheme == "complex" or self.precision):
            # the record's jaxpr holds the traced dtypes: complex or float64 evaluations need
            # the function itself, traced again at those dtypes
            fun = fun.fun
        if self.scheme == "complex":
            check_analytic(lambda *xs: fun(*xs)[0], *(jnp.asarray(p, dtype) for p in primals))

        def f_flat(z: Array) -> Array:
            leaves, start = [], 0
            for shape in shapes:
                size = int(np.prod(shape))
                leaves.append(z[start : start + size].reshape(shape))
                start += size
            return jnp.concatenate([jnp.ravel(o) for o in fun(*leaves)[0]])

        return x, f_flat

    def _steps(self, x: Array) -> Array:
        """The step per coordinate of flat ``x`` (before rounding to an exact ``x + h``)."""
        if self.step is None:
            h = default_step(x, self.stencil)
        else:
            h = jnp.asarray(self.step, x.dtype)
            if h.ndim and h.size != x.size:
                raise DiffkitError(
                    f"fd: step has {h.size} entries, but the inputs have {x.size} coordinates; "
                    "pass one step per coordinate (flattened) or a single number"
                )
            h = jnp.broadcast_to(jnp.ravel(h) if h.ndim else h, x.shape)
        return h * self._factor

    def _center(self, f_flat: Callable, x: Array, outs: tuple[Array, ...]) -> Array | None:
        """``f(x)`` flat, when the rule uses it: the shared one, unless evaluated in float64."""
        if not self.stencil.uses_center:
            return None
        if self.precision:
            return f_flat(x)
        return jnp.concatenate([jnp.ravel(o) for o in outs]).astype(x.dtype)

    def _along(
        self, f_flat: Callable, x: Array, move: Callable, t: Array, f0: Array | None
    ) -> Array:
        """The rule along one direction: ``sum_j w_j f(move(o_j t)) / t``, where ``move(c)``
        is ``x`` shifted by ``c`` along the direction (``Im f(move(i t)) / t``: complex)."""
        if self.scheme == "complex":
            return jnp.imag(f_flat(move(1j * t))) / t
        acc: Array = 0.0
        for o, w in zip(self.stencil.offsets, self.stencil.weights, strict=True):
            if o == 0.0:
                assert f0 is not None  # a stencil with a center gets f(x) from _center
                acc = acc + w * f0
            else:
                acc = acc + w * f_flat(move(o * t))
        return acc / t


#: Host and foreign calls that JAX's vmap refuses unless they name a ``vmap_method``.
_HOST_CALLS = ("pure_callback", "ffi_call")


def _check_batchable(fun: FlatFun) -> None:
    """Refuse, in one line, a host call that fd's batched stencils (``jax.vmap``) could not
    map (called once they failed: a host call JAX never batches, such as equinox's error
    check under a ``cond`` on an unbatched predicate, is fine)."""
    jaxprs = [fun.closed.jaxpr] if isinstance(fun, TracedFun) else []
    while jaxprs:
        for eqn in jaxprs.pop().eqns:
            if eqn.primitive.name in _HOST_CALLS and eqn.params.get("vmap_method") is None:
                name = eqn.primitive.name
                raise UnsupportedPrimitiveError(
                    f"fd: cannot evaluate '{name}' in batches (at {user_site(eqn)}): an opaque "
                    "host or foreign call without a vmap_method, which jax.vmap refuses; pass "
                    f"vmap_method='sequential' to jax.{name}, or wrap it in a jax.custom_jvp or "
                    "jax.custom_vjp rule and use dual or tape"
                )
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else [param]:
                    sub = getattr(sub, "jaxpr", sub)
                    if hasattr(sub, "eqns"):
                        jaxprs.append(sub)


def _add_at(x: Array, i: Array, c: Array) -> Array:
    """``x`` with ``c`` added to coordinate ``i`` (complex ``c`` makes the result complex)."""
    return x.astype(jnp.result_type(x, c)).at[i].add(c)


def _check_step(step: Any) -> Any:
    """A positive finite number, or an array of them; tracers (step sweeps) pass unchecked."""
    if step is None or isinstance(step, jax.core.Tracer):
        return step
    try:
        values = np.asarray(step, dtype=np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or isinstance(step, bool) or values.size == 0:
        raise DiffkitError(
            f"fd: step must be None, a positive number or an array of them, got {step!r}"
        )
    if not np.all(np.isfinite(values) & (values > 0)):
        bad = values[~(np.isfinite(values) & (values > 0))].ravel()[0]
        raise DiffkitError(f"fd: steps must be positive and finite, got {float(bad)}")
    return step
