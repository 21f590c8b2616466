"""The one table of derivative rules, keyed by jaxpr primitive name.

Both hand-written differentiators read this table: ``dual`` calls a row's ``jvp`` (push a
tangent forward), ``tape`` calls its ``vjp`` (pull a cotangent back). Every row is built by
one of the constructors of :mod:`diffkit.rules.kinds` (``elementwise``, ``linear``, ``zero``,
``reduction``, ``permutation``, ``cumulative``), each of which writes its chain rule once; this
module holds the row-specific functions (transposes, partials) and the table. Sections of the
table live in their own modules (:mod:`~diffkit.rules.array`, :mod:`~diffkit.rules.linalg`,
:mod:`~diffkit.rules.special`, :mod:`~diffkit.rules.collectives`) and are merged in below
the table.

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

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.types import Array
from diffkit.rules import array, collectives, linalg, special
from diffkit.rules.kinds import (
    Rule,
    cumulative,
    elementwise,
    expansion,
    linear,
    permutation,
    reduction,
    scatter_windows,
    sum_to,
    zero,
)

__all__ = ["REFUSED", "RULES", "Rule", "elementwise", "linear", "refused_markdown", "zero"]


# ------------------------------------------------------------ transposes


def _broadcast_t(i, ct, x, *dyn, shape, broadcast_dimensions, **_):
    new = [d for d in range(len(shape)) if d not in broadcast_dimensions]
    ones = [
        d for src, d in enumerate(broadcast_dimensions) if jnp.shape(x)[src] == 1 and shape[d] != 1
    ]
    return jnp.sum(ct, axis=tuple(new + ones)).reshape(jnp.shape(x))


def _dot_t(i, ct, x, y, *, dimension_numbers, precision, **_):
    """Cotangent of ``dot_general``'s argument ``i``: contract ``ct`` with the other argument
    over the other argument's free dimensions, then put the axes back in ``i``'s order."""
    (xc, yc), (xb, yb) = dimension_numbers
    me, other = (x, y) if i == 0 else (y, x)
    mc, oc, mb, ob = (xc, yc, xb, yb) if i == 0 else (yc, xc, yb, xb)
    m_free = [d for d in range(jnp.ndim(me)) if d not in mc and d not in mb]
    o_free = [d for d in range(jnp.ndim(other)) if d not in oc and d not in ob]
    # ct's axes: batch, x's free, y's free; contract those of the other argument's free ones
    nb, nxf = len(xb), jnp.ndim(x) - len(xc) - len(xb)
    ct_o = list(range(nb + nxf, jnp.ndim(ct))) if i == 0 else list(range(nb, nb + nxf))
    dims = ((ct_o, o_free), (list(range(nb)), list(ob)))
    out = lax.dot_general(ct, other, dims, precision=precision)  # batch, my free, oc order
    mc_by_oc = [mc[k] for k in np.argsort(oc)]  # me's contracting dims in `other`'s order
    axes_now = [*mb, *m_free, *[mc_by_oc[k] for k in range(len(oc))]]
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


def _scatter_add_t(i, ct, x, indices, updates, **prm):
    return ct if i == 0 else scatter_windows(ct, indices, jnp.shape(updates), **prm)


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
    return written == 0, scatter_windows(written, indices, shape, **prm) == ids


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
    return jnp.where(landed, scatter_windows(ct, indices, jnp.shape(updates), **prm), 0)


def _gather_tangent(t, indices, **prm):
    return lax.gather_p.bind(t, indices, **{**prm, "fill_value": 0})


# --------------------------------------------------- non-elementwise extras


def _chooser(x, y, axes):
    """Where ``reduce_max`` / ``reduce_min`` picked their value, split evenly among ties."""
    hit = (x == sum_to(y, x, axes)).astype(y.dtype)
    return hit / sum_to(jnp.sum(hit, axis=axes), x, axes)


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


def _reshape_t(i, ct, x, *dyn, dimensions, **_):
    """reshape with ``dimensions`` (``order="F"``) transposes ``x`` by them first."""
    if dimensions is None:
        return ct.reshape(jnp.shape(x))
    moved = ct.reshape([jnp.shape(x)[d] for d in dimensions])
    return jnp.transpose(moved, np.argsort(dimensions))


def _split_t(i, cts, x, *, sizes, axis):
    return lax.concatenate(list(cts), axis)


def _convert_t(i, ct, x, **_):
    """A cast's transpose casts back; from complex to real it keeps the real part (JAX's
    convention: the transpose of the real-to-complex embedding)."""
    if jnp.iscomplexobj(ct) and not jnp.iscomplexobj(x):
        ct = lax.real(ct)
    return ct.astype(jnp.result_type(x))


def _scan_of(combine: Callable[[Array, Array], Array]) -> Callable[..., Array]:
    """A running reduction as JAX defines its derivative: an associative scan of ``combine``."""
    return lambda x, *, axis, reverse: lax.associative_scan(combine, x, reverse=reverse, axis=axis)


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
    "reduce_sum": linear(lambda i, ct, x, *, axes, **_: sum_to(ct, x, axes)),
    "reduce_max": reduction(_chooser),
    "reduce_min": reduction(_chooser),
    "reduce_prod": reduction(_others_product),
    "sort": permutation(_sort_order, primal=lambda xs, prm: list(_sorted(xs, prm))),
    "top_k": permutation(_top_k_order),
    "approx_top_k": permutation(_approx_top_k_order),
    "cumprod": expansion(_scan_of(lax.mul)),
    "cummax": expansion(_scan_of(lax.max)),
    "cummin": expansion(_scan_of(lax.min)),
    "cumlogsumexp": cumulative(
        -np.inf, jnp.logaddexp, lambda x, y_prev, y: (y_prev - y, jnp.exp(x - y)), log=True
    ),
    "cumsum": linear(lambda i, ct, x, *, axis, reverse: lax.cumsum(ct, axis, not reverse)),
    # contraction
    "dot_general": linear(_dot_t, multilinear=True),
    # type and copies
    "convert_element_type": linear(_convert_t),
    "copy": linear(lambda i, ct, x: ct),
    # placement: the identity on values (device_put maps several operands at once)
    "device_put": linear(lambda i, cts, *xs, **_: cts[i]),
    "layout_constraint": linear(lambda i, ct, x, **_: ct),
    "reduce_precision": linear(lambda i, ct, x, **p: lax.reduce_precision(ct, **p)),
    # shape
    "broadcast_in_dim": linear(_broadcast_t),
    "reshape": linear(_reshape_t),
    "squeeze": linear(lambda i, ct, x, *, dimensions: ct.reshape(jnp.shape(x))),
    "transpose": linear(
        lambda i, ct, x, *, permutation: jnp.transpose(ct, np.argsort(permutation).tolist())
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
    # the sections kept in their own modules
    **array.ROWS,
    **linalg.ROWS,
    **special.ROWS,
    **collectives.ROWS,
}

#: Primitives JAX differentiates that the hand-written interpreters refuse, with the reason
#: (shown in the refusal's one-line error and in docs/hand-written-modes.md).
#: ``tests/test_census.py`` checks that every differentiable primitive of the installed JAX is
#: a row, a call, control flow, a custom rule, integer-valued, or here.
_COLLECTIVE = (
    "a collective over a named mesh axis (shard_map, pmap) of JAX's reduced/unreduced "
    "sharding types, a ragged exchange, pbroadcast or an explicit reshard: not yet supported "
    "(psum, all_gather, ppermute, all_to_all and shard_map itself are rows, rules.collectives)"
)
_STATE = "mutable state (array refs, boxes, run_state): the interpreters model pure programs"
_OPAQUE = (
    "an opaque host or foreign call, which no automatic method can differentiate (JAX neither): "
    "wrap it in a jax.custom_jvp or jax.custom_vjp rule, which dual and tape then use"
)
_INTERNAL = "an internal primitive of JAX's own transformations, not met in user programs"
REFUSED: dict[str, str] = {
    **dict.fromkeys(
        [
            "all_gather_reduced",
            "pbroadcast",
            "preduced",
            "ragged_all_to_all",
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
}


def refused_markdown() -> str:
    """The list of refused primitives in docs/hand-written-modes.md, one line per reason
    (generated from :data:`REFUSED`, so it is never stale).

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
