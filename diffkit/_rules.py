"""The one table of derivative rules, keyed by jaxpr primitive name.

Both hand-written differentiators read this table: ``dual`` calls a row's ``jvp`` (push a
tangent forward), ``tape`` calls its ``vjp`` (pull a cotangent back). Rows come in three kinds,
each built by one constructor that writes its chain rule once:

* :func:`elementwise` -- the local partial derivatives ``p_i = d out / d x_i``, as functions of
  ``(out, *xs)``. Forward: ``out_dot = sum_i p_i * x_dot_i``; reverse: ``x_bar_i = p_i * y_bar``
  (summed back to the shape of ``x_i`` where a scalar was broadcast).
* :func:`linear` -- for primitives linear in their floating-point arguments (jointly, or in each
  one separately when ``multilinear``, like ``dot_general``): the tangent action is the primitive
  itself applied to the tangents, and one transpose function gives each argument's cotangent.
* :func:`zero` -- piecewise-constant primitives and ``stop_gradient``: no derivative flows.

Reductions whose derivative depends on the values (``reduce_max``, ``reduce_prod``) are rows
of one more constructor, ``_reduction``, from their partials ``d y / d x``; reorderings whose
order depends on the values (``sort``, ``top_k``) are rows of ``_permutation``, from where
each output entry came from; running reductions (``cumprod``, ``cummax``) rows of
``_cumulative``, from the partials of one step of the recurrence.

Every rule is written with ``jax.numpy`` / ``lax``, so what the differentiators emit is itself a
JAX program: it can be jit-compiled, vmapped and differentiated again. An equation whose inputs
carry no derivative, or whose outputs are all integer or boolean (comparisons, ``argmax``,
``iota``), needs no row: the interpreters evaluate it as it is.

Example:
    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> x, x_dot = jnp.array(2.0), jnp.array(1.0)
    >>> y = lax.integer_pow(x, 3)
    >>> [float(t) for t in RULES["integer_pow"].jvp(lax.integer_pow_p, [x], [x_dot], [y], {"y": 3})]
    [12.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from diffkit._errors import UnsupportedPrimitiveError
from diffkit._jaxpr import evaluate

__all__ = ["REFUSED", "RULES", "Rule", "elementwise", "linear", "refused_markdown", "zero"]

Array = Any
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


def _unbroadcast(ct: Array, x: Any) -> Array:
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
            _cast(_unbroadcast(_scale(partial(i, xs, ys[0], prm), y_bars[0]), x), _dtype(x))
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


# ------------------------------------------------------------ transposes


def _sum_to(ct: Array, x: Array, axes: Sequence[int]) -> Array:
    """Broadcast a reduced cotangent back over the reduced ``axes`` of ``x``."""
    return jnp.broadcast_to(jnp.expand_dims(ct, tuple(axes)), jnp.shape(x))


def _broadcast_t(i, ct, x, *dyn, shape, broadcast_dimensions, **_):
    new = [d for d in range(len(shape)) if d not in broadcast_dimensions]
    ones = [
        d for src, d in enumerate(broadcast_dimensions) if jnp.shape(x)[src] == 1 and shape[d] != 1
    ]
    return jnp.sum(ct, axis=tuple(new + ones)).reshape(jnp.shape(x))


def _dot_t(i, ct, x, y, *, dimension_numbers, precision, preferred_element_type, **_):
    """Cotangent of ``dot_general``'s argument ``i``: contract ``ct`` with the other argument
    over the other argument's free dimensions, then put the axes back in ``i``'s order."""
    (xc, yc), (xb, yb) = dimension_numbers
    me, other = (x, y) if i == 0 else (y, x)
    mc, oc, mb, ob = (xc, yc, xb, yb) if i == 0 else (yc, xc, yb, xb)
    m_free = [d for d in range(jnp.ndim(me)) if d not in mc and d not in mb]
    o_free = [d for d in range(jnp.ndim(other)) if d not in oc and d not in ob]
    # ct's axes: batch, x's free, y's free
    nb, nxf = len(xb), jnp.ndim(x) - len(xc) - len(xb)
    ct_m = list(range(nb, nb + len(m_free))) if i == 0 else list(range(nb + nxf, jnp.ndim(ct)))
    ct_o = list(range(nb + nxf, jnp.ndim(ct))) if i == 0 else list(range(nb, nb + nxf))
    dims = ((ct_o, o_free), (list(range(nb)), list(ob)))
    out = lax.dot_general(ct, other, dims, precision=precision)  # batch, ct_m, oc order
    mc_by_oc = [mc[k] for k in np.argsort(oc)]  # me's contracting dims in `other`'s order
    axes_now = [*mb, *m_free, *[mc_by_oc[k] for k in range(len(oc))]]
    del ct_m, preferred_element_type
    return jnp.transpose(out, np.argsort(axes_now)).astype(me.dtype)


def _pad_t(i, ct, x, pv, *, padding_config):
    lo, hi, interior = zip(*padding_config, strict=True) if padding_config else ((), (), ())
    unpadded = lax.pad(
        ct, jnp.zeros((), ct.dtype), [(-a, -b, 0) for a, b in zip(lo, hi, strict=True)]
    )
    t_x = lax.slice(unpadded, [0] * ct.ndim, unpadded.shape, [k + 1 for k in interior])
    return t_x if i == 0 else jnp.sum(ct) - jnp.sum(t_x)


def _slice_t(i, ct, x, *, start_indices, limit_indices, strides):
    strides = strides or (1,) * len(start_indices)
    real = [
        s + (0 if n == 0 else (n - 1) * k + 1)
        for s, n, k in zip(start_indices, ct.shape, strides, strict=True)
    ]
    config = [
        (s, d - r, k - 1)
        for s, d, r, k in zip(start_indices, jnp.shape(x), real, strides, strict=True)
    ]
    return lax.pad(ct, jnp.zeros((), ct.dtype), config)


def _concat_t(i, ct, *xs, dimension):
    start = sum(jnp.shape(x)[dimension] for x in xs[:i])
    return lax.slice_in_dim(ct, start, start + jnp.shape(xs[i])[dimension], axis=dimension)


def _select_t(i, ct, pred, *cases):
    zeros = jnp.zeros_like(ct)
    return lax.select_n(pred, *[ct if k == i - 1 else zeros for k in range(len(cases))])


def _dus_t(i, ct, x, update, *idx):
    if i == 0:
        return lax.dynamic_update_slice(ct, jnp.zeros_like(update), idx)
    return lax.dynamic_slice(ct, idx, jnp.shape(update))


def _gather_t(
    i, ct, x, indices, *, dimension_numbers, mode, unique_indices, indices_are_sorted, **_
):
    dn = dimension_numbers
    scatter_dn = lax.ScatterDimensionNumbers(
        update_window_dims=dn.offset_dims,
        inserted_window_dims=dn.collapsed_slice_dims,
        scatter_dims_to_operand_dims=dn.start_index_map,
        operand_batching_dims=dn.operand_batching_dims,
        scatter_indices_batching_dims=dn.start_indices_batching_dims,
    )
    return lax.scatter_add(
        jnp.zeros(jnp.shape(x), ct.dtype),
        indices,
        ct,
        scatter_dn,
        indices_are_sorted=indices_are_sorted,
        unique_indices=unique_indices,
        mode=mode,
    )


def _windows(ct, indices, updates_shape, *, dimension_numbers, mode, indices_are_sorted, **_):
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


def _scatter_add_t(i, ct, x, indices, updates, **prm):
    return ct if i == 0 else _windows(ct, indices, jnp.shape(updates), **prm)


def _scatter_masks(operand, indices, updates, **prm):
    """``(kept, landed)``: the operand entries a scatter leaves alone, and the updates it
    writes -- of several updates to one entry, the one that wins. Found by scattering each
    update's id (as JAX's own scatter JVP does), so tangents follow the same winners."""
    if prm.get("update_jaxpr") is not None:
        raise UnsupportedPrimitiveError(
            "scatter with an update function (x.at[i].apply(f)) has no derivative rule (JAX "
            "has none either); write x.at[i].set(f(x[i])) instead"
        )
    dn, shape = prm["dimension_numbers"], jnp.shape(updates)
    points = [d for d in range(len(shape)) if d not in dn.update_window_dims]
    count = int(np.prod([shape[d] for d in points]))
    ids = jnp.arange(1, count + 1, dtype=jnp.int32).reshape([shape[d] for d in points])
    ids = lax.broadcast_in_dim(ids, shape, points)
    written = lax.scatter(
        jnp.zeros(jnp.shape(operand), jnp.int32),
        indices,
        ids,
        dn,
        indices_are_sorted=prm["indices_are_sorted"],
        mode=prm["mode"],
    )
    return written == 0, _windows(written, indices, shape, **prm) == ids


def _scatter_tangent(t, indices, t_updates, **prm):
    kept, landed = _scatter_masks(t, indices, t_updates, **prm)
    return lax.scatter_add(
        jnp.where(kept, t, 0),
        indices,
        jnp.where(landed, t_updates, 0),
        prm["dimension_numbers"],
        indices_are_sorted=prm["indices_are_sorted"],
        mode=prm["mode"],
    )


def _scatter_t(i, ct, x, indices, updates, **prm):
    kept, landed = _scatter_masks(x, indices, updates, **prm)
    if i == 0:
        return jnp.where(kept, ct, 0)
    return jnp.where(landed, _windows(ct, indices, jnp.shape(updates), **prm), 0)


def _gather_tangent(t, indices, **prm):
    return lax.gather_p.bind(t, indices, **{**prm, "fill_value": 0})


# --------------------------------------------------- non-elementwise extras


def _chooser(x, y, axes):
    """Where ``reduce_max`` / ``reduce_min`` picked their value, split evenly among ties."""
    hit = (x == _sum_to(y, x, axes)).astype(y.dtype)
    return hit / _sum_to(jnp.sum(hit, axis=axes), x, axes)


def _others_product(x, y, axes):
    """d prod(x) / d x_i: the product of the other entries, exact where x has zeros (the
    exclusive products from the left times those from the right, not prod / x_i)."""
    keep = [d for d in range(jnp.ndim(x)) if d not in axes]
    order = (*keep, *axes)
    moved = jnp.transpose(x, order)
    flat = moved.reshape(*moved.shape[: len(keep)], -1)
    ones = jnp.ones_like(flat[..., :1])
    left = jnp.concatenate([ones, jnp.cumprod(flat[..., :-1], axis=-1)], axis=-1)
    right = jnp.cumprod(flat[..., ::-1], axis=-1)[..., ::-1]
    right = jnp.concatenate([right[..., 1:], ones], axis=-1)
    return jnp.transpose((left * right).reshape(moved.shape), np.argsort(order))


def _reduction(weights: Callable[[Array, Array, Sequence[int]], Array]) -> Rule:
    """A row for a reduction ``y = r(x, axes)`` from its partials ``weights(x, y, axes)``
    (``d y / d x``, shaped like ``x``): ``y_dot = sum(w * x_dot)``, ``x_bar = w * y_bar``."""

    def jvp(prim, xs, x_dots, ys, prm):
        return [jnp.sum(weights(xs[0], ys[0], prm["axes"]) * x_dots[0], axis=prm["axes"])]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        w = weights(xs[0], ys[0], prm["axes"])
        return [w * _sum_to(y_bars[0], xs[0], prm["axes"])]

    return Rule("reduction", jvp, vjp)


def _permutation(
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


def _sorted(xs, prm):
    """The sort with an iota carried along: the sorted operands, then where each entry came
    from (as JAX's own sort JVP does)."""
    axis = prm["dimension"]
    iota = lax.broadcasted_iota(jnp.int32, jnp.shape(xs[0]), axis)
    keys = prm["num_keys"]
    return lax.sort([*xs, iota], dimension=axis, is_stable=prm["is_stable"], num_keys=keys)


def _sort_order(xs, ys, prm):
    return ys[-1], prm["dimension"]  # the order, which the row's primal put after the outputs


def _top_k_order(xs, ys, prm):
    return ys[1], prm.get("axis", -1) % jnp.ndim(xs[0])


def _approx_top_k_order(xs, ys, prm):
    return ys[1], prm["reduction_dimension"] % jnp.ndim(xs[0])


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


def _cumulative(
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


def _reshape_t(i, ct, x, *dyn, dimensions, **_):
    """reshape with ``dimensions`` (``order="F"``) transposes ``x`` by them first."""
    if dimensions is None:
        return ct.reshape(jnp.shape(x))
    moved = ct.reshape([jnp.shape(x)[d] for d in dimensions])
    return jnp.transpose(moved, np.argsort(dimensions))


def _split_t(i, cts, x, *, sizes, axis):
    return lax.concatenate(list(cts), axis)


def _ties(a: Array, b: Array, dtype: Any) -> Array:
    """d max(a, b) / d a: 1 where a wins, 0 where it loses, 1/2 at a tie (as JAX does)."""
    return jnp.where(a > b, 1.0, jnp.where(a == b, 0.5, 0.0)).astype(dtype)


def _ipow(out, x, *, y):
    return jnp.zeros_like(x) if y == 0 else y * lax.integer_pow(x, y - 1)


def _replace_zero(x: Array) -> Array:
    return jnp.where(x == 0, jnp.ones_like(x), x)


def _pow_x(out, x, y):
    """d x**y / d x; 0 where an integer exponent is 0 (JAX's convention, not 0 * x**-1)."""
    if jnp.issubdtype(jnp.result_type(y), jnp.integer):
        y = jnp.broadcast_to(y, jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y)))
        return jnp.where(y == 0, 0, _replace_zero(y) * lax.pow(x, y - 1)).astype(out.dtype)
    return y * lax.pow(x, y - 1)


def _abs(out, x):
    """d|x|/dx as JAX has it: +1 at 0 and -0 for real x; ``conj(x) / |x|`` (0 at 0) for
    complex x, of whose product with the tangent the row keeps the real part."""
    if jnp.iscomplexobj(x):
        return jnp.conj(x) / _replace_zero(out).astype(x.dtype)
    return jnp.where(x >= 0, 1, -1).astype(x.dtype)


_SQRT_PI = float(np.sqrt(np.pi))

#: The rule table. Adding a primitive is one row here and one row in tests/test_rules.py.
RULES: dict[str, Rule] = {
    # arithmetic
    "add": elementwise(1, 1),
    "add_any": elementwise(1, 1),
    "sub": elementwise(1, -1),
    "neg": elementwise(-1),
    "mul": elementwise(lambda out, x, y: y, lambda out, x, y: x),
    "div": elementwise(lambda out, x, y: 1 / y, lambda out, x, y: -out / y),
    "rem": elementwise(1, lambda out, x, y: -jnp.trunc(x / y)),
    "pow": elementwise(_pow_x, lambda out, x, y: out * jnp.log(_replace_zero(x))),
    "integer_pow": elementwise(_ipow, params=True),
    "square": elementwise(lambda out, x: 2 * x),
    "sqrt": elementwise(lambda out, x: 0.5 / out),
    "rsqrt": elementwise(lambda out, x: -0.5 * out / x),
    "cbrt": elementwise(lambda out, x: lax.integer_pow(out, -2) / 3),
    "abs": elementwise(_abs),
    "max": elementwise(
        lambda out, x, y: _ties(x, y, out.dtype), lambda out, x, y: _ties(y, x, out.dtype)
    ),
    "min": elementwise(
        lambda out, x, y: _ties(y, x, out.dtype), lambda out, x, y: _ties(x, y, out.dtype)
    ),
    "clamp": elementwise(
        lambda out, lo, x, hi: (lo > x) & (lo < hi),  # masks: selects, as in JAX's rule
        lambda out, lo, x, hi: (x > lo) & (x < hi),
        lambda out, lo, x, hi: hi < x,
    ),
    # exponentials and logarithms
    "exp": elementwise(lambda out, x: out),
    "exp2": elementwise(lambda out, x: out * np.log(2.0)),
    "expm1": elementwise(lambda out, x: out + 1),
    "log": elementwise(lambda out, x: 1 / x),
    "log1p": elementwise(lambda out, x: 1 / (1 + x)),
    "logistic": elementwise(lambda out, x: out * (1 - out)),
    # trigonometric and hyperbolic
    "sin": elementwise(lambda out, x: jnp.cos(x)),
    "cos": elementwise(lambda out, x: -jnp.sin(x)),
    "tan": elementwise(lambda out, x: 1 + out * out),
    "asin": elementwise(lambda out, x: lax.rsqrt(1 - x * x)),
    "acos": elementwise(lambda out, x: -lax.rsqrt(1 - x * x)),
    "atan": elementwise(lambda out, x: 1 / (1 + x * x)),
    "atan2": elementwise(
        lambda out, x, y: y / (x * x + y * y), lambda out, x, y: -x / (x * x + y * y)
    ),
    "sinh": elementwise(lambda out, x: jnp.cosh(x)),
    "cosh": elementwise(lambda out, x: jnp.sinh(x)),
    "tanh": elementwise(lambda out, x: 1 - out * out),
    "asinh": elementwise(lambda out, x: lax.rsqrt(x * x + 1)),
    "acosh": elementwise(lambda out, x: lax.rsqrt((x - 1) * (x + 1))),
    "atanh": elementwise(lambda out, x: 1 / (1 + x) / (1 - x)),  # JAX's form: inf, not nan, at 1
    # special functions
    "erf": elementwise(lambda out, x: 2 / _SQRT_PI * jnp.exp(-x * x)),
    "erfc": elementwise(lambda out, x: -2 / _SQRT_PI * jnp.exp(-x * x)),
    "erf_inv": elementwise(lambda out, x: _SQRT_PI / 2 * jnp.exp(out * out)),
    "lgamma": elementwise(lambda out, x: lax.digamma(x)),
    "digamma": elementwise(lambda out, x: lax.polygamma(jnp.ones_like(x), x)),
    # no derivative
    "sign": zero(),
    "floor": zero(),
    "ceil": zero(),
    "round": zero(),
    "stop_gradient": zero(),
    # reductions
    "reduce_sum": linear(lambda i, ct, x, *, axes, **_: _sum_to(ct, x, axes)),
    "reduce_max": _reduction(_chooser),
    "reduce_min": _reduction(_chooser),
    "reduce_prod": _reduction(_others_product),
    "sort": _permutation(_sort_order, primal=lambda xs, prm: list(_sorted(xs, prm))),
    "top_k": _permutation(_top_k_order),
    "approx_top_k": _permutation(_approx_top_k_order),
    "cumprod": _cumulative(1.0, lax.mul, lambda x, y_prev, y: (x, y_prev)),
    "cummax": _cumulative(
        -np.inf,
        lax.max,
        lambda x, y_prev, y: (_ties(y_prev, x, y.dtype), _ties(x, y_prev, y.dtype)),
    ),
    "cummin": _cumulative(
        np.inf,
        lax.min,
        lambda x, y_prev, y: (_ties(x, y_prev, y.dtype), _ties(y_prev, x, y.dtype)),
    ),
    "cumlogsumexp": _cumulative(
        -np.inf, jnp.logaddexp, lambda x, y_prev, y: (y_prev - y, jnp.exp(x - y)), log=True
    ),
    "cumsum": linear(lambda i, ct, x, *, axis, reverse: lax.cumsum(ct, axis, not reverse)),
    # contraction
    "dot_general": linear(_dot_t, multilinear=True),
    # type and copies
    "convert_element_type": linear(lambda i, ct, x, **_: ct.astype(jnp.result_type(x))),
    "copy": linear(lambda i, ct, x: ct),
    # placement: the identity on values (device_put maps several operands at once)
    "device_put": linear(lambda i, cts, *xs, **_: cts[i]),
    "sharding_constraint": linear(lambda i, ct, x, **_: ct),
    "layout_constraint": linear(lambda i, ct, x, **_: ct),
    "reduce_precision": linear(lambda i, ct, x, **p: lax.reduce_precision(ct, **p)),
    # shape
    "broadcast_in_dim": linear(_broadcast_t),
    "reshape": linear(_reshape_t),
    "squeeze": linear(lambda i, ct, x, *, dimensions: ct.reshape(jnp.shape(x))),
    "transpose": linear(
        lambda i, ct, x, *, permutation: jnp.transpose(ct, np.argsort(permutation))
    ),
    "rev": linear(lambda i, ct, x, *, dimensions: lax.rev(ct, dimensions)),
    "concatenate": linear(_concat_t),
    "split": linear(_split_t),
    "pad": linear(_pad_t),
    # slicing and indexing
    "slice": linear(_slice_t),
    "dynamic_slice": linear(
        lambda i, ct, x, *idx, slice_sizes: lax.dynamic_update_slice(
            jnp.zeros(jnp.shape(x), ct.dtype), ct, idx
        )
    ),
    "dynamic_update_slice": linear(_dus_t),
    "gather": linear(_gather_t, tangent=_gather_tangent),
    "scatter-add": linear(_scatter_add_t),
    "scatter": linear(_scatter_t, tangent=_scatter_tangent),
    "select_n": linear(_select_t),
}

#: Primitives JAX differentiates that the hand-written interpreters refuse, with the reason
#: (shown in the refusal's one-line error and in the README). ``tests/test_census.py`` checks
#: that every differentiable primitive of the installed JAX is a row, a call, control flow, a
#: custom rule, integer-valued, or here.
_COLLECTIVE = (
    "a collective over a named mesh axis (shard_map, pmap): the hand-written interpreters "
    "run one device's program"
)
_STATE = "mutable state (array refs, boxes, run_state): the interpreters model pure programs"
_OPAQUE = "an opaque host or foreign call: JAX differentiates it only through a custom rule"
_INTERNAL = "an internal primitive of JAX's own transformations, not met in user programs"
REFUSED: dict[str, str] = {
    **dict.fromkeys(
        [
            "all_gather",
            "all_gather_invariant",
            "all_gather_reduced",
            "all_to_all",
            "ppermute",
            "psum",
            "psum_invariant",
            "pbroadcast",
            "preduced",
            "pvary",
            "ragged_all_to_all",
            "reduce_scatter",
            "reduced_vary_cast_p",
            "reshard",
            "unreduced_psum",
            "unreduced_reduce_scatter",
            "vary_unreduced_cast_p",
            "global_array_to_host_local_array",
            "host_local_array_to_global_array",
        ],
        _COLLECTIVE,
    ),
    **dict.fromkeys(
        [
            "accum_grad_in_ref",
            "addupdate",
            "box_get",
            "box_set",
            "empty_ref",
            "free_ref",
            "freeze",
            "get",
            "new_box",
            "new_ref",
            "run_state",
            "swap",
        ],
        _STATE,
    ),
    **dict.fromkeys(["ffi_call", "io_callback", "pure_callback"], _OPAQUE),
    **dict.fromkeys(
        [
            "call_hi_primitive",
            "check",
            "dce_sink",
            "eval_jaxpr",
            "from_edtype",
            "log_extend",
            "log_read",
            "name",
            "new_log",
            "remat_opt",
            "stage",
            "tie",
            "to_edtype",
        ],
        _INTERNAL,
    ),
    "linear_call": "jax.custom_transpose's linear call: not yet supported",
    "ragged_dot_general": "grouped matmul of ragged groups: not yet supported",
}


def refused_markdown() -> str:
    """The README's list of refused primitives, one line per reason (generated from
    :data:`REFUSED`, so it is never stale).

    Example:
        >>> print(refused_markdown().splitlines()[0][:40])
        - a collective over a named mesh axis (s
    """
    by_reason: dict[str, list[str]] = {}
    for name, reason in REFUSED.items():
        by_reason.setdefault(reason, []).append(name)
    return "\n".join(
        f"- {reason}: " + ", ".join(f"`{n}`" for n in sorted(names))
        for reason, names in by_reason.items()
    )


# Sections of the table kept in their own modules (they build rows with the constructors above).
from diffkit import _rules_array, _rules_linalg, _rules_special  # noqa: E402

RULES.update({**_rules_array.ROWS, **_rules_linalg.ROWS, **_rules_special.ROWS})
