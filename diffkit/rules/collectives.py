"""Rows of the rule table (:mod:`diffkit.rules.table`): collectives over a named mesh axis, and
``shard_map``, the call that runs a program once per device of a mesh.

Every collective is linear in its operand; each row's transpose is the one JAX's own rule
uses (``jax/_src/lax/parallel.py``), so a function written with ``shard_map`` gets the same
derivative from ``dual`` and ``tape`` as from ``jax.jvp`` / ``jax.vjp``:

* ``psum`` (``check_vma=False``) transposes to ``psum``; under ``check_vma=True`` JAX types
  values as varying or invariant along an axis: ``psum_invariant`` transposes to ``pvary``
  (``lax.pcast(..., to="varying")``) and ``pvary`` to ``psum``;
* ``all_gather`` transposes to ``psum_scatter`` (``reduce_scatter``) and back;
* ``ppermute`` to ``ppermute`` by the inverse permutation, ``all_to_all`` to ``all_to_all``
  with the split and concatenation axes swapped.

``pmax`` and ``pmin`` have no derivative in JAX (an argmax over devices), so no row either;
``pbroadcast`` stays refused (no CPU lowering to check a row on, and JAX's own transpose
fails).

``sharding_constraint`` constrains the tangent, and the cotangent, as JAX's transpose does,
to the same sharding: the gradient of a sharded parameter stays sharded like it.

``shard_map`` is a row whose tangent and cotangent are themselves ``shard_map`` calls over
the same mesh: the dual interpreter runs the body on each device with the tangents laid out
as their primals, the tape records and sweeps the body on each device with the cotangents
laid out as the outputs (the body's forward pass is run again there, as the tape does for
control flow).

Example:
    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> [ROWS[n].kind for n in ("psum", "ppermute", "all_gather", "shard_map")]
    ['linear', 'linear', 'linear', 'call']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex_core

from diffkit._core.registry import get
from diffkit.rules.kinds import Rule, linear

__all__ = ["ROWS"]


def _named(axes: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(a for a in axes if not isinstance(a, int))


def _psum_t(i, ct, x, *, axes, axis_index_groups=None, **_):
    positional = sorted(a for a in axes if isinstance(a, int))
    if positional:  # psum over array axes too: broadcast the cotangent back over them
        ct = jnp.broadcast_to(jnp.expand_dims(ct, positional), jnp.shape(x))
    named = _named(axes)
    if not named:
        return ct
    return lax.psum(ct, named, axis_index_groups=axis_index_groups)


def _psum_invariant_t(i, ct, x, *, axes, **_):
    return lax.pcast(ct, tuple(axes), to="varying")


def _pvary_t(i, ct, x, *, axes, **_):
    return lax.psum(ct, tuple(axes))


def _ppermute_t(i, ct, x, *, axis_name, perm, **_):
    return lax.ppermute(ct, axis_name, perm=[(dst, src) for src, dst in perm])


def _all_to_all_t(i, ct, x, *, axis_name, split_axis, concat_axis, axis_index_groups, tiled):
    return lax.all_to_all(
        ct, axis_name, concat_axis, split_axis, axis_index_groups=axis_index_groups, tiled=tiled
    )


def _all_gather_t(i, ct, x, *, all_gather_dimension, axis_name, axis_index_groups, tiled, **_):
    return lax.psum_scatter(
        ct,
        axis_name,
        scatter_dimension=all_gather_dimension,
        axis_index_groups=axis_index_groups,
        tiled=tiled,
    )


def _all_gather_invariant_t(i, ct, x, *, all_gather_dimension, axis_name, axis_size, tiled):
    size = ct.shape[all_gather_dimension] // axis_size
    start = lax.axis_index(axis_name) * size
    own = lax.dynamic_slice_in_dim(ct, start, size, axis=all_gather_dimension)
    return own if tiled else lax.squeeze(own, [all_gather_dimension])


def _reduce_scatter_t(i, ct, x, *, axis_name, scatter_dimension, axis_index_groups, tiled, **_):
    return lax.all_gather(
        ct, axis_name, axis_index_groups=axis_index_groups, axis=scatter_dimension, tiled=tiled
    )


# ------------------------------------------------------------ shard_map


def _body(prm: dict[str, Any], keep: Sequence[bool], fixed: Sequence[Any]) -> Any:
    """The shard_map body as a function of the inputs flagged in ``keep`` (the others fixed
    at ``fixed``), returning its floating-point outputs."""
    closed = jex_core.ClosedJaxpr(prm["jaxpr"], [])
    floats = [jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in prm["jaxpr"].outvars]

    def body(*chosen: Any) -> list[Any]:
        it = iter(chosen)
        args = [next(it) if k else f for k, f in zip(keep, fixed, strict=True)]
        outs = jex_core.jaxpr_as_fun(closed)(*args)
        return [o for o, f in zip(outs, floats, strict=True) if f]

    return body, floats


def _unmapped(prm: dict[str, Any], spec: Any) -> tuple[Any, ...]:
    """The manual mesh axes a spec does not mention (the value is the same on each)."""
    named = {n for e in spec if e is not None for n in (e if isinstance(e, tuple) else (e,))}
    return tuple(a for a in prm["mesh"].axis_names if a in prm["newly_manual_axes"] - named)


def _size(prm: dict[str, Any], spec: Any) -> int:
    return math.prod(prm["mesh"].shape[a] for a in _unmapped(prm, spec))


def _sum_unmapped(prm: dict[str, Any], x_bar: Any, spec: Any) -> Any:
    axes = _unmapped(prm, spec)
    return lax.psum(x_bar, axes) if axes else x_bar


def _mapped(prm: dict[str, Any], fun: Any, in_specs: Sequence[Any], out_specs: Sequence[Any]):
    return jax.shard_map(
        fun,
        mesh=prm["mesh"],
        in_specs=tuple(in_specs),
        out_specs=tuple(out_specs),
        axis_names=set(prm["newly_manual_axes"]),
        check_vma=prm["check_vma"],
    )


def _shard_map_jvp(prim, xs, x_dots, ys, prm):
    active = [t is not None for t in x_dots]
    specs = prm["in_specs"]

    def per_device(*args: Any) -> tuple[Any, ...]:
        primals, tangents = args[: len(xs)], args[len(xs) :]
        body, _ = _body(prm, active, primals)
        chosen = [p for p, a in zip(primals, active, strict=True) if a]
        return tuple(get("dual").jvp(body, tuple(chosen), tuple(tangents))[1])

    _, floats = _body(prm, active, xs)
    out_specs = [s for s, f in zip(prm["out_specs"], floats, strict=True) if f]
    tangent_specs = [s for s, a in zip(specs, active, strict=True) if a]
    run = _mapped(prm, per_device, [*specs, *tangent_specs], out_specs)
    found = iter(run(*xs, *[t for t in x_dots if t is not None]))
    return [next(found) if f else None for f in floats]


def _shard_map_vjp(prim, xs, ys, y_bars, needs, prm):
    specs = prm["in_specs"]
    _, floats = _body(prm, needs, xs)
    bars = [
        jnp.zeros_like(y) if b is None else b
        for y, b, f in zip(ys, y_bars, floats, strict=True)
        if f
    ]

    out_specs = [s for s, f in zip(prm["out_specs"], floats, strict=True) if f]
    bar_specs = [s for s, n in zip(specs, needs, strict=True) if n]

    def per_device(*args: Any) -> tuple[Any, ...]:
        primals, out_bars = args[: len(xs)], list(args[len(xs) :])
        body, _ = _body(prm, needs, primals)
        chosen = [p for p, n in zip(primals, needs, strict=True) if n]
        if not prm["check_vma"]:  # untyped: JAX splits an unmapped output's cotangent ...
            out_bars = [b / _size(prm, s) for b, s in zip(out_bars, out_specs, strict=True)]
        x_bars = get("tape").vjp(body, *chosen)[1](out_bars)
        if not prm["check_vma"]:  # ... and sums an unmapped input's over the devices
            x_bars = [_sum_unmapped(prm, b, s) for b, s in zip(x_bars, bar_specs, strict=True)]
        return tuple(x_bars)

    run = _mapped(prm, per_device, [*specs, *out_specs], bar_specs)
    found = iter(run(*xs, *bars))
    return [next(found) if n else None for n in needs]


_PLACED = linear(lambda i, ct, x, **_: ct)  # the tangent: the constraint on it


def _same_placement_vjp(prim, xs, ys, y_bars, needs, prm):
    """A placement's cotangent placed as its output was (JAX's transpose of
    ``sharding_constraint``): a gradient laid out like the parameter it belongs to."""
    return [prim.bind(y_bars[0], **prm) if needs[0] else None]


ROWS: dict[str, Rule] = {
    "sharding_constraint": Rule("linear", _PLACED.jvp, _same_placement_vjp),
    "psum": linear(_psum_t),
    "psum_invariant": linear(_psum_invariant_t),
    "pvary": linear(_pvary_t),
    "ppermute": linear(_ppermute_t),
    "all_to_all": linear(_all_to_all_t),
    "all_gather": linear(_all_gather_t),
    "all_gather_invariant": linear(_all_gather_invariant_t),
    "reduce_scatter": linear(_reduce_scatter_t),
    "shard_map": Rule("call", _shard_map_jvp, _shard_map_vjp),
}
