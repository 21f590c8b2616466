"""The kinds of rows of the rule table, each a constructor that writes its chain rule once.

* :func:`elementwise` -- the local partial derivatives ``p_i = d out / d x_i``, as functions of
  ``(out, *xs)``. Forward: ``out_dot = sum_i p_i * x_dot_i``; reverse: ``x_bar_i = p_i * y_bar``
  (summed back to the shape of ``x_i`` where a scalar was broadcast).
* :func:`linear` -- for primitives linear in their floating-point arguments (jointly, or in each
  one separately when ``multilinear``, like ``dot_general``): the tangent action is the primitive
  itself applied to the tangents, and one transpose function gives each argument's cotangent.
* :func:`zero` -- piecewise-constant primitives and ``stop_gradient``: no derivative flows.
* :func:`reduction` -- reductions whose derivative depends on the values (``reduce_max``,
  ``reduce_prod``), from their partials ``d y / d x``.
* :func:`permutation` -- reorderings whose order depends on the values (``sort``, ``top_k``),
  from where each output entry came from.
* :func:`cumulative` -- running reductions (``cumprod``, ``cummax``), from the partials of one
  step of the recurrence.

The table itself, and the row-specific functions, are in :mod:`diffkit.rules.table` and its section
modules, which all build rows with these constructors.

Example:
    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> sin = elementwise(lambda out, x: jnp.cos(x))
    >>> x, x_dot = jnp.array(0.0), jnp.array(2.0)
    >>> [float(t) for t in sin.jvp(lax.sin_p, [x], [x_dot], [jnp.sin(x)], {})]
    [2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from diffkit._core.jaxpr import evaluate
from diffkit._core.types import Array

__all__ = [
    "Rule",
    "cumulative",
    "elementwise",
    "expansion",
    "linear",
    "permutation",
    "reduction",
    "scatter_windows",
    "sum_to",
    "unbroadcast",
    "zero",
]

#: ``jvp(prim, xs, x_dots, ys, params) -> y_dots``; a ``None`` tangent is a zero tangent.
JvpFn = Callable[[Any, Sequence[Any], Sequence[Any], Sequence[Any], dict], list]
#: ``vjp(prim, xs, ys, y_bars, needs, params) -> x_bars``; only inputs with ``needs[i]``.
VjpFn = Callable[[Any, Sequence[Any], Sequence[Any], Sequence[Any], Sequence[bool], dict], list]


@dataclass(frozen=True)
class Rule:
    """One row of the table: how a primitive pushes tangents and pulls cotangents."""

    kind: str  # "elementwise", "linear", "reduction", "permutation", "cumulative", "zero"
    jvp: JvpFn
    vjp: VjpFn
    #: ``primal(xs, params) -> [*ys, *extra]``: how the row computes the outputs, where not
    #: by the primitive itself: together with values that ``jvp`` and ``vjp`` then find after
    #: them in ``ys`` (``sort``: where each entry came from, so it is sorted once), or in a
    #: faster form (running reductions: an associative scan).
    primal: Callable[[Sequence[Any], dict], list] | None = None
    #: ``expand(*xs, **params) -> outputs``: the program whose derivative JAX defines as the
    #: primitive's (``cummax`` is ``associative_scan(max)``); the interpreters differentiate
    #: its jaxpr, row by row, instead of calling ``jvp``/``vjp``.
    expand: Callable[..., Any] | None = None

    def outputs(self, eqn: Any, xs: Sequence[Any]) -> list:
        """The equation's outputs on the primal values ``xs``, then any extras of ``primal``."""
        return self.primal(xs, eqn.params) if self.primal else evaluate(eqn, xs)


def _scale(p: Any, t: Array) -> Array:
    """``p * t``, skipping the multiplication for the constant partials +1 and -1; a boolean
    partial is a mask, ``t`` where set and 0 elsewhere (a select, as JAX's rules write it: an
    infinite or NaN tangent stays out of the entries the mask leaves alone)."""
    if isinstance(p, int) and p in (1, -1):
        return t if p == 1 else -t
    if jnp.result_type(p) == jnp.bool_:
        return jnp.where(p, t, jnp.zeros((), jnp.result_type(t)))
    return p * t


def _cast(v: Array, dtype: Any) -> Array:
    """``v`` as ``dtype``; a complex value cast to a real dtype keeps its real part (JAX's
    convention: a cotangent is the transpose, so ``real`` and ``complex`` transpose to each
    other)."""
    if jnp.iscomplexobj(v) and not jnp.issubdtype(dtype, jnp.complexfloating):
        v = lax.real(v)
    return v.astype(dtype)


def unbroadcast(ct: Array, x: Any) -> Array:
    """Sum a cotangent back to the shape of ``x``, which the primitive broadcast."""
    shape = jnp.shape(x)
    if jnp.shape(ct) == shape:
        return ct
    lead = jnp.ndim(ct) - len(shape)
    ones = [lead + d for d, n in enumerate(shape) if n == 1 and jnp.shape(ct)[lead + d] != 1]
    return jnp.sum(ct, axis=(*range(lead), *ones)).reshape(shape)


def elementwise(*partials: Callable[..., Array] | int, params: bool = False) -> Rule:
    """A row from the partial derivatives ``p_i(out, *xs)`` of an elementwise primitive
    (an ``int`` stands for a constant partial; ``params=True`` passes the equation's params).
    """

    def partial(i: int, xs: Sequence[Any], y: Array, prm: dict) -> Any:
        p = partials[i]
        return p if isinstance(p, int) else p(y, *xs, **(prm if params else {}))

    def jvp(prim, xs, x_dots, ys, prm):
        terms = [
            _scale(partial(i, xs, ys[0], prm), t) for i, t in enumerate(x_dots) if t is not None
        ]
        y_dot = sum(terms[1:], terms[0])
        return [_cast(jnp.broadcast_to(y_dot, jnp.shape(ys[0])), ys[0].dtype)]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        return [
            _cast(unbroadcast(_scale(partial(i, xs, ys[0], prm), y_bars[0]), x), _dtype(x))
            if need
            else None
            for i, (x, need) in enumerate(zip(xs, needs, strict=True))
        ]

    return Rule("elementwise", jvp, vjp)


def linear(transpose: Callable[..., Array], multilinear: bool = False, tangent=None) -> Rule:
    """A row for a primitive linear in its floating-point arguments.

    ``transpose(i, ct, *xs, **params)`` is the cotangent of argument ``i`` given the output's
    cotangent ``ct``. Jointly linear primitives (``concatenate``, ``pad``, ``select_n``) act on
    the tangents with zeros for the missing ones; ``multilinear`` ones (``dot_general``) sum one
    term per tangent with the other arguments at their primal values. ``tangent(*args,
    **params)`` overrides the tangent action (default: the primitive itself).
    """

    def act(prim, args, prm):
        return tangent(*args, **prm) if tangent else prim.bind(*args, **prm)

    def jvp(prim, xs, x_dots, ys, prm):
        if multilinear:
            terms = [
                act(prim, [*xs[:i], t, *xs[i + 1 :]], prm)
                for i, t in enumerate(x_dots)
                if t is not None
            ]
            return [sum(terms[1:], terms[0])]
        args = [
            x if t is None and not _is_float(x) else (jnp.zeros_like(x) if t is None else t)
            for x, t in zip(xs, x_dots, strict=True)
        ]
        out = act(prim, args, prm)
        return list(out) if prim.multiple_results else [out]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        ct = y_bars if prim.multiple_results else y_bars[0]
        return [transpose(i, ct, *xs, **prm) if need else None for i, need in enumerate(needs)]

    return Rule("linear", jvp, vjp)


def zero() -> Rule:
    """A row for a primitive through which no derivative flows."""
    return Rule("zero", lambda prim, xs, x_dots, ys, prm: [None] * len(ys), _no_cotangents)


def _no_cotangents(prim, xs, ys, y_bars, needs, prm):
    return [None] * len(xs)


def _dtype(x: Any) -> Any:
    return jnp.result_type(x)


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def sum_to(ct: Array, x: Array, axes: Sequence[int]) -> Array:
    """Broadcast a reduced cotangent back over the reduced ``axes`` of ``x``."""
    return jnp.broadcast_to(jnp.expand_dims(ct, tuple(axes)), jnp.shape(x))


def scatter_windows(
    ct, indices, updates_shape, *, dimension_numbers, mode, indices_are_sorted, **_
):
    """The windows of ``ct`` that a scatter with these parameters writes ``updates`` into
    (shaped like the updates; 0 where an index falls outside and the scatter drops it)."""
    dn = dimension_numbers
    gather_dn = lax.GatherDimensionNumbers(
        offset_dims=dn.update_window_dims,
        collapsed_slice_dims=dn.inserted_window_dims,
        start_index_map=dn.scatter_dims_to_operand_dims,
        operand_batching_dims=dn.operand_batching_dims,
        start_indices_batching_dims=dn.scatter_indices_batching_dims,
    )
    window = iter(dn.update_window_dims)
    slice_sizes = [
        1
        if d in dn.inserted_window_dims or d in dn.operand_batching_dims
        else updates_shape[next(window)]
        for d in range(jnp.ndim(ct))
    ]
    return lax.gather(
        ct,
        indices,
        gather_dn,
        slice_sizes,
        mode=mode,
        indices_are_sorted=indices_are_sorted,
        fill_value=0,
    )


def expansion(program: Callable[..., Any]) -> Rule:
    """A row for a primitive whose derivative JAX defines as the derivative of ``program(*xs,
    **params)``: the interpreters trace that program and differentiate it with the other rows,
    so they compute what JAX computes, ties and all (``cummax`` as ``associative_scan(max)``).
    """

    def refuse(*_: Any) -> list:
        raise NotImplementedError("an expansion row is differentiated through its program")

    return Rule("expansion", refuse, refuse, expand=program)


def reduction(weights: Callable[[Array, Array, Sequence[int]], Array]) -> Rule:
    """A row for a reduction ``y = r(x, axes)`` from its partials ``weights(x, y, axes)``
    (``d y / d x``, shaped like ``x``): ``y_dot = sum(w * x_dot)``, ``x_bar = w * y_bar``."""

    def jvp(prim, xs, x_dots, ys, prm):
        # an entry whose tangent is 0 adds 0, even where its weight overflowed (prod: the
        # others' product can be inf where JAX's product rule still gives 0 * ... = 0). Only
        # such weights are masked, and the product stays linear in t, so a derivative of
        # this tangent with respect to t (a second derivative) keeps w where t is 0
        w, t = weights(xs[0], ys[0], prm["axes"]), x_dots[0]
        w = jnp.where((t == 0) & ~jnp.isfinite(w), 0, w)
        return [jnp.sum(w * t, axis=prm["axes"])]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        w = weights(xs[0], ys[0], prm["axes"])
        return [w * sum_to(y_bars[0], xs[0], prm["axes"])]

    return Rule("reduction", jvp, vjp)


def permutation(
    indices: Callable[[Sequence[Any], Sequence[Any], dict], Array],
    primal: Callable[[Sequence[Any], dict], list] | None = None,
) -> Rule:
    """A row for a primitive whose output ``j`` takes the entries of input ``j`` at
    ``indices(xs, ys, params)`` along an axis (``sort``, ``top_k``); outputs
    past the inputs (``top_k``'s indices) are integers. Forward: gather the tangents there;
    reverse: put the cotangents back there."""

    def jvp(prim, xs, x_dots, ys, prm):
        idx, axis = indices(xs, ys, prm)
        y_dots = [None if t is None else jnp.take_along_axis(t, idx, axis) for t in x_dots]
        return y_dots + [None] * (len(ys) - len(xs))

    def vjp(prim, xs, ys, y_bars, needs, prm):
        idx, axis = indices(xs, ys, prm)
        return [
            jnp.put_along_axis(jnp.zeros_like(x), idx, ct, axis, inplace=False) if need else None
            for x, ct, need in zip(xs, y_bars, needs, strict=False)
        ]

    return Rule("permutation", jvp, vjp, primal)


def _recurrence(b: Array, a: Array, axis: int, reverse: bool, log: bool = False) -> Array:
    """``h`` with ``h_i = b_i h_(i-1) + a_i`` along ``axis`` (``h_(i+1)`` when ``reverse``;
    0 before the start), in log depth: an associative scan over the affine maps ``(b, a)``.
    With ``log``, ``b`` holds ``log b_i``: products of many factors near 1 become sums."""

    def compose(first, then):
        if log:
            return then[0] + first[0], jnp.exp(then[0]) * first[1] + then[1]
        return then[0] * first[0], then[0] * first[1] + then[1]

    return lax.associative_scan(compose, (b, a), reverse=reverse, axis=axis)[1]


def _shifted(a: Array, fill: float, axis: int, reverse: bool) -> Array:
    """``a_(i-1)`` at ``i`` (``a_(i+1)`` when ``reverse``), with ``fill`` past the edge."""
    if jnp.shape(a)[axis] == 0:  # nothing to shift (prod over no axes differentiated twice)
        return a
    edge = jnp.full_like(lax.slice_in_dim(a, 0, 1, axis=axis), fill)
    if reverse:
        return lax.concatenate([lax.slice_in_dim(a, 1, None, axis=axis), edge], axis)
    return lax.concatenate([edge, lax.slice_in_dim(a, 0, -1, axis=axis)], axis)


def cumulative(
    identity: float,
    combine: Callable[[Array, Array], Array],
    partials: Callable[[Array, Array, Array], tuple[Array, Array]],
    log: bool = False,
) -> Rule:
    """A row for a running reduction ``y_i = g(y_(i-1), x_i)`` (``cumprod``, ``cummax``,
    ``cumlogsumexp``; ``y_(-1) = identity``; from the end when ``reverse``) from
    ``partials(x, y_prev, y) -> (b, c) = (d g / d y_prev, d g / d x)``. The tangent obeys the
    linear recurrence ``y_dot_i = b_i y_dot_(i-1) + c_i x_dot_i``, the cotangent its transpose,
    run the other way: ``w_i = y_bar_i + b_(i+1) w_(i+1)``, ``x_bar_i = c_i w_i``. No
    division, so exact where x has zeros. With ``log``, ``partials`` gives ``log b``
    (``cumlogsumexp``: ``b_i = exp(y_(i-1) - y_i)``, near 1 over long runs, whose product
    in float32 would lose digits at each factor while the sum of the logs telescopes
    exactly). The primal is an associative scan of ``combine``
    (``g`` as a binary operation), as in JAX's own derivatives: on the CPU the primitive's
    lowering is up to 4x slower (``cumlogsumexp``)."""

    def primal(xs, prm):
        return [lax.associative_scan(combine, xs[0], reverse=prm["reverse"], axis=prm["axis"])]

    def local(xs, ys, prm):
        y_prev = _shifted(ys[0], identity, prm["axis"], prm["reverse"])
        return partials(xs[0], y_prev, ys[0])

    def jvp(prim, xs, x_dots, ys, prm):
        b, c = local(xs, ys, prm)
        return [_recurrence(b, c * x_dots[0], prm["axis"], prm["reverse"], log)]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        b, c = local(xs, ys, prm)
        axis, back = prm["axis"], not prm["reverse"]
        b_next = _shifted(b, -np.inf if log else 0.0, axis, back)
        return [c * _recurrence(b_next, y_bars[0], axis, back, log)]

    return Rule("cumulative", jvp, vjp, primal)
