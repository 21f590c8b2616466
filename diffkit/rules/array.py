"""Rows of the rule table (:mod:`diffkit.rules.table`): array primitives beyond the core
table: convolutions, windows (pooling), stacking, tiling, scatter variants.

Each row is built by one of the constructors in :mod:`diffkit.rules.kinds` or by
:func:`linear_in` below; :mod:`diffkit.rules.table` merges ``ROWS`` into its ``RULES`` table. The
conventions are JAX's own, so that ties and edge cases give the same numbers:

* max/min pooling sends each window's derivative to one chosen entry (the first of the
  largest, ``select_and_gather_add`` forward and ``select_and_scatter_add`` back);
* ``scatter-max`` / ``scatter-min`` split an entry's derivative evenly among the operand
  and the updates that tie for it;
* ``scatter-mul`` differentiates in its updates only for unique indices, generic
  ``reduce_window`` forward only: where JAX refuses, these rules refuse too.

Example:
    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> x, t = jnp.array([1.0, 3.0, 2.0, 0.0]), jnp.array([10.0, 20.0, 30.0, 40.0])
    >>> prm = dict(window_dimensions=(2,), window_strides=(2,), padding=((0, 0),),
    ...            base_dilation=(1,), window_dilation=(1,))
    >>> y = lax.reduce_window_max_p.bind(x, **prm)
    >>> ROWS["reduce_window_max"].jvp(lax.reduce_window_max_p, [x], [t], [y], prm)[0].tolist()
    [20.0, 30.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.registry import get
from diffkit._core.types import Array
from diffkit.rules.kinds import Rule, linear, scatter_windows

__all__ = ["ROWS", "linear_in"]


def linear_in(count: int, transpose: Callable[..., Array]) -> Rule:
    """A row for a primitive linear in its first ``count`` arguments, the others held at
    their primal values with no derivative through them (``select_and_scatter_add``'s
    operand only says where the source goes, as in JAX). ``transpose(i, ct, *xs, **params)``
    is the cotangent of argument ``i < count``.
    """

    def jvp(prim, xs, x_dots, ys, prm):
        if all(t is None for t in x_dots[:count]):
            return [None]
        args = [
            (jnp.zeros_like(x) if t is None else t) if i < count else x
            for i, (x, t) in enumerate(zip(xs, x_dots, strict=True))
        ]
        return [prim.bind(*args, **prm)]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        return [
            transpose(i, y_bars[0], *xs, **prm) if need and i < count else None
            for i, need in enumerate(needs)
        ]

    return Rule("linear", jvp, vjp)


def _refuse(what: str) -> UnsupportedPrimitiveError:
    return UnsupportedPrimitiveError(what)


# ------------------------------------------------------------ convolution


def _dilate(sizes: Sequence[int], dilation: Sequence[int]) -> np.ndarray:
    """Sizes after inserting ``d - 1`` holes between entries (0 stays 0)."""
    return np.array(
        [0 if n == 0 else (n - 1) * d + 1 for n, d in zip(sizes, dilation, strict=True)]
    )


def _swap(spec: Sequence[int]) -> tuple[int, ...]:
    """A convolution spec with its first two roles exchanged (batch <-> feature)."""
    return (spec[1], spec[0], *spec[2:])


def _regroup(x: Array, src: int, dst: int, groups: int) -> Array:
    """Split axis ``src`` of ``x`` into ``(groups, rest)`` and fold the groups into axis
    ``dst`` (groups outermost)."""
    shape = list(x.shape)
    x = x.reshape(*shape[:src], groups, shape[src] // groups, *shape[src + 1 :])
    x = jnp.moveaxis(x, src, dst)  # the old axis dst now follows the groups
    shape = list(x.shape)
    return x.reshape(*shape[:dst], shape[dst] * shape[dst + 1], *shape[dst + 2 :])


def _back_padding(x_size, k_size, strides, y_size, padding, x_dil, k_dil):
    """The padding under which a window operation, run over the cotangent dilated by the
    strides, visits each input entry once per window holding it: before and after."""
    x_d, k_d, y_d = _dilate(x_size, x_dil), _dilate(k_size, k_dil), _dilate(y_size, strides)
    before = k_d - 1 - np.array([lo for lo, _ in padding], int)
    after = x_d + k_d - 1 - y_d - before
    return [(int(a), int(b)) for a, b in zip(before, after, strict=True)]


def _conv_t(  # long: the two transposes (input, kernel) share the dimension bookkeeping
    i,
    ct,
    x,
    w,
    *,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
    precision,
    preferred_element_type,
    **_,
):
    """Cotangent of ``conv_general_dilated``'s input (``i = 0``) or kernel (``i = 1``): each
    is again a convolution, with strides and dilations exchanging roles."""
    lhs, rhs, out = dimension_numbers
    xs = [x.shape[d] for d in lhs[2:]]
    ks = [w.shape[d] for d in rhs[2:]]
    ys = [ct.shape[d] for d in out[2:]]
    common = dict(precision=precision, preferred_element_type=preferred_element_type)
    if i == 0:
        # correlate the cotangent with the kernel flipped in space, its in/out features
        # exchanged; a group's features move from the kernel's outputs to its inputs
        groups = max(feature_group_count, batch_group_count)
        kernel = lax.rev(w, tuple(rhs[2:]))
        if groups > 1:
            kernel = _regroup(kernel, rhs[0], rhs[1], groups)
        pads = _back_padding(xs, ks, window_strides, ys, padding, lhs_dilation, rhs_dilation)
        x_bar = lax.conv_general_dilated(
            ct,
            kernel.astype(ct.dtype),
            window_strides=lhs_dilation,
            padding=pads,
            lhs_dilation=window_strides,
            rhs_dilation=rhs_dilation,
            dimension_numbers=lax.ConvDimensionNumbers(out, _swap(rhs), lhs),
            feature_group_count=groups,
            **common,
        )
        if batch_group_count > 1:  # the groups came out as features: they are batch entries
            x_bar = _regroup(x_bar, lhs[1], lhs[0], batch_group_count)
        return x_bar.astype(x.dtype)
    if ct.size == 0:
        return jnp.zeros_like(w)
    # correlate the input with the cotangent, batch and features exchanging roles (so
    # feature groups become batch groups and back)
    x_d, k_d, y_d = (
        _dilate(xs, lhs_dilation),
        _dilate(ks, rhs_dilation),
        _dilate(ys, window_strides),
    )
    pads = [
        (lo, int(yd - xd + kd - 1 - lo))
        for (lo, _), xd, kd, yd in zip(padding, x_d, k_d, y_d, strict=True)
    ]
    w_bar = lax.conv_general_dilated(
        x.astype(ct.dtype),
        ct,
        window_strides=rhs_dilation,
        padding=pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=window_strides,
        dimension_numbers=lax.ConvDimensionNumbers(_swap(lhs), _swap(out), _swap(rhs)),
        feature_group_count=batch_group_count,
        batch_group_count=feature_group_count,
        **common,
    )
    return w_bar.astype(w.dtype)


# ------------------------------------------------------------ windows (pooling)


def _window_sum_t(
    i, ct, x, *, window_dimensions, window_strides, padding, base_dilation, window_dilation
):
    """Each input entry collects the cotangent of every window holding it: a window sum
    over the cotangent, spread out by the strides and padded."""
    pads = _back_padding(
        x.shape,
        window_dimensions,
        window_strides,
        ct.shape,
        padding,
        base_dilation,
        window_dilation,
    )
    spread = lax.pad(
        ct,
        jnp.zeros((), ct.dtype),
        [(lo, hi, s - 1) for (lo, hi), s in zip(pads, window_strides, strict=True)],
    )
    return lax.reduce_window_sum_p.bind(
        spread,
        window_dimensions=tuple(window_dimensions),
        window_strides=tuple(base_dilation),
        padding=((0, 0),) * x.ndim,
        base_dilation=(1,) * x.ndim,
        window_dilation=tuple(window_dilation),
    )


def _gather_chosen(t, x, select_prim, **prm):
    """The entries of ``t`` where each window of ``x`` takes its max (``ge``) or min (``le``)."""
    return lax.select_and_gather_add_p.bind(t, x, select_prim=select_prim, **prm)


def _scatter_chosen(
    ct, x, select_prim, window_dimensions, window_strides, padding, base_dilation, window_dilation
):
    """The transpose of :func:`_gather_chosen` in ``t``: each window's cotangent goes to the
    entry it chose. JAX has no such rule for dilated windows; neither has this."""
    if any(d != 1 for d in window_dilation):
        raise _refuse(
            f"max/min pooling with window_dilation={tuple(window_dilation)}: no reverse rule "
            "(JAX has none either); use dual or jax-fwd, or pool without window dilation"
        )
    dilated = any(d != 1 for d in base_dilation)
    if dilated:  # the holes never win
        hole = -jnp.inf if select_prim is lax.ge_p else jnp.inf
        x = lax.pad(x, jnp.asarray(hole, x.dtype), [(0, 0, d - 1) for d in base_dilation])
    out = lax.select_and_scatter_add_p.bind(
        ct,
        x,
        select_prim=select_prim,
        window_dimensions=tuple(window_dimensions),
        window_strides=tuple(window_strides),
        padding=tuple(padding),
    )
    return lax.slice(out, (0,) * out.ndim, out.shape, tuple(base_dilation)) if dilated else out


def _chooser(select_prim) -> Rule:
    """``reduce_window_max`` / ``_min``: the tangent of the entry each window chose."""

    def jvp(prim, xs, x_dots, ys, prm):
        return [_gather_chosen(x_dots[0], xs[0], select_prim, **prm)]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        return [_scatter_chosen(y_bars[0], xs[0], select_prim, **prm)]

    return Rule("linear", jvp, vjp)


def _gather_chosen_t(i, ct, t, x, *, select_prim, **prm):
    return _scatter_chosen(ct, x, select_prim, **prm)


def _scatter_chosen_t(i, ct, source, x, *, select_prim, window_dimensions, **prm):
    ones = (1,) * x.ndim
    return _gather_chosen(
        ct,
        x,
        select_prim,
        window_dimensions=window_dimensions,
        base_dilation=ones,
        window_dilation=ones,
        **prm,
    )


def _generic_window_jvp(prim, xs, x_dots, ys, prm):
    """``reduce_window`` with any computation: one window reduction over (primal, tangent)
    pairs, whose computation is ``dual``'s JVP of the given one (as JAX does)."""
    n = len(xs) // 2
    if any(t is not None for t in x_dots[n:]):
        raise _refuse(
            "reduce_window: no rule for a derivative through its initial values (JAX has "
            "none either); make them constants"
        )
    floats = [k for k in range(n) if jnp.issubdtype(xs[k].dtype, jnp.inexact)]
    reducer = jex_core.jaxpr_as_fun(jex_core.ClosedJaxpr(prm["jaxpr"], prm["consts"]))
    dual = get("dual")

    def pair(a, b):
        def at(fl):
            args = list(a[:n]) + list(b[:n])
            for j, k in enumerate(floats):
                args[k], args[n + k] = fl[j], fl[len(floats) + j]
            return reducer(*args)

        primals = [a[k] for k in floats] + [b[k] for k in floats]
        tangents = list(a[n:]) + list(b[n:])
        out, out_dot = dual.jvp(at, (primals,), (tangents,))
        return (*out, *[out_dot[k] for k in floats])

    tangents = [jnp.zeros_like(xs[k]) if x_dots[k] is None else x_dots[k] for k in floats]
    zeros = [jnp.zeros((), xs[k].dtype) for k in floats]
    keys = ("window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")
    res = lax.reduce_window((*xs[:n], *tangents), (*xs[n:], *zeros), pair, *[prm[k] for k in keys])
    dots = iter(res[n:])
    return [next(dots) if k in floats else None for k in range(n)]


def _generic_window_vjp(prim, xs, ys, y_bars, needs, prm):
    raise _refuse(
        "reduce_window with a custom computation: no reverse rule (JAX has none either); "
        "use dual or jax-fwd, or lax.reduce_window with lax.add / lax.max / lax.min"
    )


# ------------------------------------------------------------ generic reduce


def _tree_reduce(closed, n, axes):
    """A function computing ``lax.reduce`` with this computation by halving the reduced
    entries (flattened to one leading axis) until one is left: differentiable with
    :mod:`jax.numpy` rules where the primitive itself has none."""
    reducer = jax.vmap(jex_core.jaxpr_as_fun(closed))

    def run(*xs):
        ops, inits = xs[:n], xs[n:]
        shape = ops[0].shape
        keep = [d for d in range(len(shape)) if d not in axes]
        out_shape = [shape[d] for d in keep]
        ops = [jnp.transpose(x, (*axes, *keep)).reshape(-1, *out_shape) for x in ops]
        if ops[0].shape[0] == 0:
            return [jnp.full(out_shape, i) for i in inits]
        while ops[0].shape[0] > 1:
            half = (ops[0].shape[0] + 1) // 2
            first = [x[:half] for x in ops]
            rest = [
                jnp.concatenate([x[half:], jnp.broadcast_to(i, (1, *out_shape))])
                if 2 * half > x.shape[0]
                else x[half:]
                for x, i in zip(ops, inits, strict=True)
            ]
            flat = [a.reshape(-1) for a in first + rest]
            ops = [y.reshape(half, *out_shape) for y in reducer(*flat)]
        return [x[0] for x in ops]

    return run


def _generic_reduce_parts(xs, prm):
    n = len(xs) // 2
    run = _tree_reduce(prm["jaxpr"], n, tuple(prm["dimensions"]))
    floats = [k for k in range(len(xs)) if jnp.issubdtype(xs[k].dtype, jnp.inexact)]

    def on_floats(*fl):
        args = list(xs)
        for k, v in zip(floats, fl, strict=True):
            args[k] = v
        return [y for y in run(*args) if jnp.issubdtype(y.dtype, jnp.inexact)]

    return n, floats, on_floats


def _generic_reduce(xs, prm):
    """The primal as JAX's derivatives compute it: by the tree (for a computation that is
    not associative, the primitive's order of evaluation gives other values)."""
    return list(_tree_reduce(prm["jaxpr"], len(xs) // 2, tuple(prm["dimensions"]))(*xs))


def _generic_reduce_jvp(prim, xs, x_dots, ys, prm):
    n, floats, on_floats = _generic_reduce_parts(xs, prm)
    if any(t is not None for t in x_dots[n:]):
        raise _refuse(
            "reduce: no rule for a derivative through its initial values (JAX has none "
            "either); make them constants"
        )
    tangents = [jnp.zeros_like(xs[k]) if x_dots[k] is None else x_dots[k] for k in floats]
    _, dots = get("dual").jvp(on_floats, [xs[k] for k in floats], tangents)
    dots = iter(dots)
    return [next(dots) if jnp.issubdtype(y.dtype, jnp.inexact) else None for y in ys]


def _generic_reduce_vjp(prim, xs, ys, y_bars, needs, prm):
    n, floats, on_floats = _generic_reduce_parts(xs, prm)
    bars = [b for y, b in zip(ys, y_bars, strict=True) if jnp.issubdtype(y.dtype, jnp.inexact)]
    _, pull = get("tape").vjp(lambda *fl: on_floats(*fl), *[xs[k] for k in floats])
    got = dict(zip(floats, pull(bars), strict=True))
    return [got.get(k) if need and k < n else None for k, need in enumerate(needs)]


# ------------------------------------------------------------ stacking


def _tile_t(i, ct, x, *, reps):
    pairs = [k for r, d in zip(reps, x.shape, strict=True) for k in (r, d)]
    return jnp.sum(ct.reshape(pairs), axis=tuple(range(0, 2 * x.ndim, 2)))


def _barrier_jvp(prim, xs, x_dots, ys, prm):
    live = [t for t in x_dots if t is not None]
    moved = iter(lax.optimization_barrier(live))
    return [None if t is None else next(moved) for t in x_dots]


def _barrier_vjp(prim, xs, ys, y_bars, needs, prm):
    bars = [jnp.zeros_like(y) if b is None else b for y, b in zip(ys, y_bars, strict=True)]
    bars = iter(lax.optimization_barrier([b for b, n in zip(bars, needs, strict=True) if n]))
    return [next(bars) if n else None for n in needs]


# ------------------------------------------------------------ scatter variants


def _scatter_sub_t(i, ct, x, indices, updates, **prm):
    return ct if i == 0 else -scatter_windows(ct, indices, updates.shape, **prm)


def _scatter_kw(prm):
    keys = ("indices_are_sorted", "unique_indices", "mode")
    return {k: prm[k] for k in keys}


def _scatter_add(x, indices, updates, prm):
    return lax.scatter_add(x, indices, updates, prm["dimension_numbers"], **_scatter_kw(prm))


def _need_unique(prm, what: str) -> None:
    if not prm["unique_indices"]:
        raise _refuse(
            f"scatter-mul ({what}): no derivative in the updates for indices that may repeat "
            "(JAX has none either); pass unique_indices=True if they are unique"
        )


def _scatter_mul_jvp(prim, xs, x_dots, ys, prm):
    x, indices, u = xs
    t_x, _, t_u = x_dots
    terms = []
    if t_x is not None:  # linear in the operand: the same scatter of the same factors
        terms.append(prim.bind(t_x, indices, u, **prm))
    if t_u is not None:  # each written entry is x * u: d/du = x
        _need_unique(prm, "x.at[i].multiply")
        terms.append(x * _scatter_add(jnp.zeros_like(x), indices, t_u, prm))
    return [sum(terms[1:], terms[0])]


def _scatter_mul_vjp(prim, xs, ys, y_bars, needs, prm):
    x, indices, u = xs
    ct = y_bars[0]
    x_bar = prim.bind(ct, indices, u, **prm) if needs[0] else None
    u_bar = None
    if needs[2]:
        _need_unique(prm, "x.at[i].multiply")
        u_bar = scatter_windows(ct * x, indices, u.shape, **prm)
    return [x_bar, None, u_bar]


def _extremal_weights(x, indices, u, y, prm):
    """``(x_w, u_w)`` of ``scatter-max`` / ``scatter-min``: each output entry's derivative
    is split evenly among the operand entry and the updates that equal it (JAX's
    convention). ``u_w`` weighs each update; ``x_w`` is the change of the operand's weight
    that each of the ``k`` updates landing on its entry carries (summed: weight - 1)."""
    clip = {**prm, "mode": lax.GatherScatterMode.CLIP}  # in bounds: dropped ones weigh 0
    win = lambda a: scatter_windows(a, indices, u.shape, **clip)  # noqa: E731
    target = win(y)
    won = u == target
    kept = win(x) == target
    one = jnp.ones_like(u)
    winners = win(_scatter_add(jnp.zeros_like(x), indices, jnp.where(won, one, 0), prm))
    landed = win(_scatter_add(jnp.zeros_like(x), indices, one, prm))
    u_w = jnp.where(won, 1 / jnp.where(kept, winners + 1, jnp.maximum(winners, 1)), 0)
    x_share = jnp.where(kept, 1 / (winners + 1), 0)
    return jnp.where(landed > 0, (x_share - 1) / jnp.maximum(landed, 1), 0), u_w


def _extremal() -> Rule:
    """``scatter-max`` / ``scatter-min``: linear in the tangents with weights from the ties."""

    def jvp(prim, xs, x_dots, ys, prm):
        x, indices, u = xs
        x_w, u_w = _extremal_weights(x, indices, u, ys[0], prm)
        t_x = jnp.zeros_like(x) if x_dots[0] is None else x_dots[0]
        t_u = jnp.zeros_like(u) if x_dots[2] is None else x_dots[2]
        moved = scatter_windows(t_x, indices, u.shape, **prm) * x_w + t_u * u_w
        return [_scatter_add(t_x, indices, moved, prm)]

    def vjp(prim, xs, ys, y_bars, needs, prm):
        x, indices, u = xs
        ct = y_bars[0]
        x_w, u_w = _extremal_weights(x, indices, u, ys[0], prm)
        at = scatter_windows(ct, indices, u.shape, **prm)
        x_bar = ct + _scatter_add(jnp.zeros_like(ct), indices, at * x_w, prm) if needs[0] else None
        return [x_bar, None, at * u_w if needs[2] else None]

    return Rule("linear", jvp, vjp)


ROWS: dict[str, Rule] = {
    "conv_general_dilated": linear(_conv_t, multilinear=True),
    "reduce_window_sum": linear(_window_sum_t),
    "reduce_window_max": _chooser(lax.ge_p),
    "reduce_window_min": _chooser(lax.le_p),
    "reduce_window": Rule("linear", _generic_window_jvp, _generic_window_vjp),
    "select_and_gather_add": linear_in(1, _gather_chosen_t),
    "select_and_scatter_add": linear_in(1, _scatter_chosen_t),
    "reduce": Rule("linear", _generic_reduce_jvp, _generic_reduce_vjp, _generic_reduce),
    "stack": linear(lambda i, ct, *xs, axis: lax.index_in_dim(ct, i, axis, keepdims=False)),
    "unstack": linear(lambda i, cts, x, *, axis: jnp.stack(cts, axis)),
    "tile": linear(_tile_t),
    "optimization_barrier": Rule("linear", _barrier_jvp, _barrier_vjp),
    "scatter-sub": linear(_scatter_sub_t),
    "scatter-mul": Rule("linear", _scatter_mul_jvp, _scatter_mul_vjp),
    "scatter-max": _extremal(),
    "scatter-min": _extremal(),
}
