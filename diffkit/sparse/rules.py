"""The sparsity column of the rule table: what each primitive does to dependency sets.

A value the detector cannot know at trace time is a :class:`Dep`: its shape, dtype, and per
entry the set of differentiated inputs its derivative may depend on, stored as the rows of a
boolean ``scipy.sparse.csr_array`` (entries x inputs). Everything else is a known array (a
constant of the function, an ``iota``, a static index), folded as JAX would compute it.

Each kind of the derivative rule table (:data:`diffkit.rules.RULES`) has one generic action
(:data:`KIND_ACTIONS`), and :data:`ACTIONS` holds the per-primitive ones where the kind is
not enough; keyed by primitive name, as the rule table is:

* ``elementwise`` -- the union of the (broadcast) inputs' entries; ``mul`` by a known zero
  drops the other factor;
* ``zero`` -- no dependence (the value is unknown, its derivative zero);
* structural ``linear`` rows (reshape, transpose, broadcast, slice, concatenate, pad, rev,
  gather/dynamic_slice/dynamic_update_slice with known indices, select_n with a known
  predicate) -- by *index propagation*: the primitive itself is applied to arrays of entry
  numbers, so the result says where each output entry came from;
* ``dot_general`` -- a boolean matrix product over the contracted dimensions, skipping
  entries of a known operand that are zero;
* reductions and running reductions (``cumulative``) -- each output entry depends on the
  entries it reduces; ``permutation`` (sort, top_k) -- on its whole line;
* scatters with known indices -- the operand (less the overwritten entries) and each update
  where it lands; traced indices (and any index that is not known) -- conservatively: every
  entry they could reach.

A primitive with no action here is taken to depend densely (every output entry on every
input entry) and recorded in the detector's notes, so a nonzero is never missed.

Example:
    >>> sorted(KIND_ACTIONS)
    ['cumulative', 'elementwise', 'expansion', 'permutation', 'reduction', 'zero']
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax import lax

from diffkit._core.jaxpr import evaluate, is_float

__all__ = ["ACTIONS", "KIND_ACTIONS", "Dep", "blank", "dense", "rows_of"]

Action = Callable[[Any, Any, list[Any]], list[Any]]


class Dep:
    """A value unknown at trace time: ``shape``, ``dtype`` and ``rows``, a boolean CSR matrix
    (``size`` x inputs) whose row ``k`` is the set of inputs entry ``k`` may depend on.

    Example:
        >>> d = Dep((2,), np.float32, sp.csr_array(np.eye(2, 3, dtype=bool)))
        >>> d.size, d.rows.nnz
        (2, 2)
    """

    __slots__ = ("dtype", "rows", "shape")

    def __init__(self, shape: Sequence[int], dtype: Any, rows: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = rows

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"Dep({self.shape}, {self.dtype}, nnz={self.rows.nnz})"


def empty(size: int, n: int) -> Any:
    """No dependence: an all-false ``size`` x ``n`` CSR matrix."""
    return sp.csr_array((size, n), dtype=bool)


def blank(aval: Any, n: int) -> Dep:
    """An unknown value with no dependence (a floor, a comparison, an unknown index)."""
    return Dep(aval.shape, aval.dtype, empty(int(np.prod(aval.shape, dtype=np.int64)), n))


def rows_of(v: Any, n: int, size: int | None = None) -> Any:
    """The dependency rows of ``v``: a known value depends on nothing."""
    if isinstance(v, Dep):
        return v.rows
    return empty(int(np.size(v)) if size is None else size, n)


def _carries(v: Any) -> bool:
    """Whether ``v`` is unknown and floating point (it can carry a derivative)."""
    return isinstance(v, Dep) and bool(jnp.issubdtype(v.dtype, jnp.inexact))


def _outs(eqn: Any, rows: list[Any], n: int) -> list[Any]:
    """Output values: floating-point outputs get ``rows``, the others none."""
    return [
        Dep(v.aval.shape, v.aval.dtype, r) if is_float(v.aval) else blank(v.aval, n)
        for v, r in zip(eqn.outvars, rows, strict=True)
    ]


def _select(size: int, dest: np.ndarray, src: np.ndarray) -> Any:
    """The boolean ``size`` x ``len`` matrix with a one at each ``(dest[k], src[k])``."""
    dest, src = np.asarray(dest, np.int64).ravel(), np.asarray(src, np.int64).ravel()
    ncol = int(src.max()) + 1 if src.size else 0
    return sp.csr_array(
        (np.ones(dest.size, bool), (dest, src)), shape=(size, max(ncol, 0)), dtype=bool
    )


def _take(rows: Any, src: np.ndarray, n: int) -> Any:
    """Rows ``src`` of ``rows`` (``-1``: an empty row)."""
    src = np.asarray(src, np.int64).ravel()
    ext = sp.vstack([rows, empty(1, n)], format="csr")
    return ext[np.where(src < 0, ext.shape[0] - 1, src)]


def _mask_rows(rows: Any, keep: np.ndarray) -> Any:
    """``rows`` with the rows where ``keep`` is false emptied."""
    rows = sp.csr_array(rows)
    counts = np.diff(rows.indptr)
    entries = np.repeat(keep, counts)
    indptr = np.concatenate([[0], np.cumsum(counts * keep)])
    return sp.csr_array((rows.data[entries], rows.indices[entries], indptr), shape=rows.shape)


def _matmul(p: Any, rows: Any) -> Any:
    """``p @ rows`` as a boolean CSR matrix (``p`` may have fewer columns than rows)."""
    if p.shape[1] < rows.shape[0]:
        p = sp.csr_array((p.data, p.indices, p.indptr), shape=(p.shape[0], rows.shape[0]))
    return sp.csr_array(p @ rows, dtype=bool)


def dense(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """Every output entry depends on every input entry (the conservative action)."""
    n = interp.n
    union = empty(1, n)
    for v in invals:
        if _carries(v):
            union = union + sp.csr_array(v.rows.sum(axis=0, dtype=bool).reshape(1, -1))
    rows = []
    for v in eqn.outvars:
        size = int(np.prod(v.aval.shape, dtype=np.int64))
        rows.append(_take(union, np.zeros(size, np.int64), n))
    return _outs(eqn, rows, n)


# ------------------------------------------------------------------ the kinds


def elementwise(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """The union of the inputs' entries, broadcast to the output's shape; a factor of ``mul``
    known to be zero drops the other factor's dependence there."""
    n = interp.n
    shape = tuple(eqn.outvars[0].aval.shape)
    size = int(np.prod(shape, dtype=np.int64))
    keep = np.ones(size, bool)
    if eqn.primitive.name == "mul":
        for v in invals:
            if not isinstance(v, Dep):
                keep &= np.broadcast_to(np.asarray(v) != 0, shape).ravel()
    rows = empty(size, n)
    for v in invals:
        if _carries(v):
            src = np.broadcast_to(np.arange(v.size).reshape(v.shape), shape)
            rows = rows + _take(v.rows, src, n)
    if not keep.all():
        rows = _mask_rows(rows, keep)
    return _outs(eqn, [rows] * len(eqn.outvars), n)


def zero(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """Piecewise constant: no dependence."""
    return [blank(v.aval, interp.n) for v in eqn.outvars]


def structural(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """Index propagation: the primitive applied to arrays of entry numbers (1-based, 0 for
    no dependence) says where each output entry came from; integer operands (indices,
    starts, predicates) must be known, else the action falls back to :func:`dense`."""
    n = interp.n
    codes: list[Any] = []
    blocks: list[Any] = []
    off = 0
    for v, var in zip(invals, eqn.invars, strict=True):
        if isinstance(v, Dep) and not _carries(v) and not is_float(var.aval):
            return dense(interp, eqn, invals)  # a traced index: any entry may be reached
        if isinstance(v, Dep):
            codes.append(np.arange(off + 1, off + 1 + v.size, dtype=np.int32).reshape(v.shape))
            blocks.append(v.rows)
            off += v.size
        elif is_float(var.aval):
            codes.append(np.zeros(np.shape(v), np.int32))
        else:  # a known index, start or predicate: as it is
            codes.append(np.asarray(v) if not isinstance(v, jax.core.Tracer) else v)
    if off >= 2**31 - 1:
        return dense(interp, eqn, invals)
    stacked = sp.vstack(blocks, format="csr") if blocks else empty(0, n)
    outs = _numpy_apply(eqn, codes)
    if outs is None:  # the primitive itself, on the entry numbers
        outs = evaluate(eqn, [jnp.asarray(c) if isinstance(c, np.ndarray) else c for c in codes])
    rows = []
    for out in outs:
        code = np.asarray(out).astype(np.int64).ravel()
        src = np.where((code >= 1) & (code <= off), code - 1, -1)
        rows.append(_take(stacked, src, n))
    return _outs(eqn, rows, n)


def _starts(starts: Sequence[Any], shape: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """Start indices clamped as ``lax.dynamic_slice`` clamps them (the slice stays inside)."""
    return [
        int(np.clip(int(np.asarray(s)), 0, d - k))
        for s, d, k in zip(starts, shape, sizes, strict=True)
    ]


def _numpy_apply(eqn: Any, codes: list[Any]) -> list[Any] | None:
    """The common structural primitives on entry numbers, in NumPy (no program to compile);
    ``None`` for the others, which JAX evaluates."""
    name, p = eqn.primitive.name, eqn.params
    x = codes[0]
    if not all(isinstance(c, np.ndarray) or np.isscalar(c) for c in codes):
        return None
    if name == "reshape" and p.get("dimensions") is None:
        return [np.reshape(x, p["new_sizes"])]
    if name == "transpose":
        return [np.transpose(x, p["permutation"])]
    if name == "broadcast_in_dim" and len(codes) == 1:
        shape = tuple(p["shape"])
        expanded = [1] * len(shape)
        for i, d in enumerate(p["broadcast_dimensions"]):
            expanded[d] = x.shape[i]
        return [np.broadcast_to(x.reshape(expanded), shape)]
    if name == "squeeze":
        return [np.squeeze(x, axis=tuple(p["dimensions"]))]
    if name == "expand_dims":
        return [np.expand_dims(x, tuple(p["dimensions"]))]
    if name == "slice":
        strides = p["strides"] or (1,) * x.ndim
        index = tuple(
            slice(a, b, c)
            for a, b, c in zip(p["start_indices"], p["limit_indices"], strides, strict=True)
        )
        return [x[index]]
    if name == "rev":
        return [np.flip(x, axis=tuple(p["dimensions"]))]
    if name == "concatenate":
        return [np.concatenate(codes, axis=p["dimension"])]
    if name == "pad":
        config = p["padding_config"]
        if any(lo < 0 or hi < 0 or mid != 0 for lo, hi, mid in config):
            return None
        pad_code = int(np.asarray(codes[1]))
        return [np.pad(x, [(lo, hi) for lo, hi, _ in config], constant_values=pad_code)]
    if name in ("copy", "copy_p"):
        return [x]
    if name == "select_n":
        pred = np.asarray(x).astype(np.int64)
        cases = np.broadcast_arrays(*codes[1:])
        return [np.choose(np.broadcast_to(pred, cases[0].shape), cases)]
    if name == "dynamic_slice":
        sizes = p["slice_sizes"]
        start = _starts(codes[1:], x.shape, sizes)
        return [x[tuple(slice(a, a + k) for a, k in zip(start, sizes, strict=True))]]
    if name == "dynamic_update_slice":
        update = codes[1]
        start = _starts(codes[2:], x.shape, update.shape)
        out = np.array(x, copy=True)
        out[tuple(slice(a, a + k) for a, k in zip(start, update.shape, strict=True))] = update
        return [out]
    return None


def select_n(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """``jnp.where``: with a known predicate each entry takes its chosen case's entries (by
    index propagation); with an unknown one, the union of the cases."""
    if isinstance(invals[0], Dep):  # the predicate is an integer: it carries nothing
        return elementwise(interp, eqn, invals)
    return structural(interp, eqn, invals)


def convert(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """A cast keeps the entries (one to float from an integer has no derivative)."""
    return elementwise(interp, eqn, invals)


def _reduce_map(shape: Sequence[int], axes: Sequence[int]) -> tuple[np.ndarray, int]:
    """For each entry of an array of ``shape``, the output entry it is reduced into."""
    axes = tuple(int(a) for a in axes)
    out_shape = tuple(d for i, d in enumerate(shape) if i not in axes)
    out_size = int(np.prod(out_shape, dtype=np.int64))
    dest = np.arange(out_size).reshape(out_shape)
    dest = np.broadcast_to(np.expand_dims(dest, axes), tuple(shape)).ravel()
    return dest, out_size


def reduction(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """Each output entry depends on the entries it reduces (``reduce_*``, ``reduce``)."""
    n = interp.n
    axes = eqn.params.get("axes", eqn.params.get("dimensions"))
    shape = tuple(eqn.invars[0].aval.shape)
    dest, out_size = _reduce_map(shape, axes)
    rows = empty(out_size, n)
    for v, var in zip(invals, eqn.invars, strict=True):
        if not _carries(v):
            continue
        if tuple(var.aval.shape) == shape:
            p = _select(out_size, dest, np.arange(dest.size))
            rows = rows + _matmul(p, v.rows)
        else:  # an init value (a scalar): every output
            rows = rows + _take(v.rows, np.zeros(out_size, np.int64), n)
    return _outs(eqn, [rows] * len(eqn.outvars), n)


def cumulative(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """A running reduction: entry ``k`` of a line depends on entries ``<= k`` (``>= k``
    reversed)."""
    n = interp.n
    (x,) = invals
    shape = tuple(eqn.invars[0].aval.shape)
    axis = int(eqn.params["axis"])
    length = shape[axis]
    lines = np.moveaxis(np.arange(int(np.prod(shape))).reshape(shape), axis, -1)
    lines = lines.reshape(-1, length)
    a, b = np.triu_indices(length)  # a <= b: out b depends on in a
    if eqn.params.get("reverse", False):
        a, b = b, a
    p = _select(lines.size, lines[:, b], lines[:, a])
    return _outs(eqn, [_matmul(p, x.rows)], n)


def _lines(shape: Sequence[int], axis: int) -> np.ndarray:
    """The line (along ``axis``) of each entry of an array of ``shape``."""
    shape = tuple(shape)
    other = tuple(d for i, d in enumerate(shape) if i != axis)
    ids = np.arange(int(np.prod(other, dtype=np.int64))).reshape(other)
    return np.broadcast_to(np.expand_dims(ids, axis), shape).ravel()


def sort(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """Sorting: every output entry depends on its whole line, in every operand."""
    n = interp.n
    shape = tuple(eqn.invars[0].aval.shape)
    line = _lines(shape, int(eqn.params["dimension"]))
    p = _select(int(line.max()) + 1 if line.size else 0, line, np.arange(line.size))
    per_line = empty(p.shape[0], n)
    for v in invals:
        if _carries(v):
            per_line = per_line + _matmul(p, v.rows)
    rows = _take(per_line, line, n)
    return _outs(eqn, [rows] * len(eqn.outvars), n)


def top_k(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """``top_k``: the outputs of a line depend on the operand's whole line (the last axis)."""
    n = interp.n
    shape = tuple(eqn.invars[0].aval.shape)
    line = _lines(shape, len(shape) - 1)
    p = _select(int(line.max()) + 1 if line.size else 0, line, np.arange(line.size))
    per_line = _matmul(p, invals[0].rows)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    rows = _take(per_line, _lines(out_shape, len(out_shape) - 1), n)
    return _outs(eqn, [rows] * len(eqn.outvars), n)


def dot_general(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """``out[b, i, j] = sum_k lhs[b, i, k] rhs[b, k, j]``: each output entry depends on the
    ``lhs[b, i, k]`` whose partner ``rhs[b, k, j]`` may be nonzero, and vice versa."""
    n = interp.n
    lhs, rhs = invals
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    ls, rs = tuple(eqn.invars[0].aval.shape), tuple(eqn.invars[1].aval.shape)
    lf = [d for d in range(len(ls)) if d not in lc and d not in lb]
    rf = [d for d in range(len(rs)) if d not in rc and d not in rb]
    nb = int(np.prod([ls[d] for d in lb], dtype=np.int64))
    nk = int(np.prod([ls[d] for d in lc], dtype=np.int64))
    ni = int(np.prod([ls[d] for d in lf], dtype=np.int64))
    nj = int(np.prod([rs[d] for d in rf], dtype=np.int64))
    lidx = np.transpose(np.arange(int(np.prod(ls))).reshape(ls), [*lb, *lf, *lc])
    ridx = np.transpose(np.arange(int(np.prod(rs))).reshape(rs), [*rb, *rc, *rf])
    lidx, ridx = lidx.reshape(nb, ni, nk), ridx.reshape(nb, nk, nj)

    def nonzero(v: Any, order: list, shape3: tuple) -> np.ndarray:
        if isinstance(v, Dep):
            return np.ones(shape3, bool)
        return np.transpose(np.asarray(v) != 0, order).reshape(shape3)

    lnz = nonzero(lhs, [*lb, *lf, *lc], (nb, ni, nk))
    rnz = nonzero(rhs, [*rb, *rc, *rf], (nb, nk, nj))
    out_size = nb * ni * nj
    rows = empty(out_size, n)
    if _carries(lhs):  # out[b, i, j] <- lhs[b, i, k] for rnz[b, k, j]
        b, k, j = np.nonzero(rnz)
        i = np.arange(ni)[:, None]
        dest = (b * ni + i) * nj + j
        rows = rows + _matmul(_select(out_size, dest, lidx[b, i, k]), lhs.rows)
    if _carries(rhs):  # out[b, i, j] <- rhs[b, k, j] for lnz[b, i, k]
        b, i, k = np.nonzero(lnz)
        j = np.arange(nj)[:, None]
        dest = (b * ni + i)[None, :] * nj + j
        rows = rows + _matmul(_select(out_size, dest, ridx[b, k, :].T), rhs.rows)
    return _outs(eqn, [rows], n)


@functools.cache
def _landing(
    shape: tuple, ushape: tuple, dnums: Any, mode: Any, is_sorted: bool, unique: bool
) -> Callable:
    """Where each entry of a scatter's updates lands (1-based entry numbers of the operand,
    0 for none), as one compiled program per scatter signature: the transpose of a
    scatter-add, applied to the operand's entry numbers."""
    size = int(np.prod(shape, dtype=np.int64))

    def landing(idx: Any) -> Any:
        def add(u: Any) -> Any:
            return lax.scatter_add(
                jnp.zeros(shape, jnp.float64), idx, u, dnums,
                indices_are_sorted=is_sorted, unique_indices=unique, mode=mode,
            )  # fmt: skip

        _, pull = jax.vjp(add, jnp.zeros(ushape, jnp.float64))
        return pull(jnp.arange(1, size + 1, dtype=jnp.float64).reshape(shape))[0]

    return jax.jit(landing)


def scatter(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """Scatters (``scatter``, ``scatter-add``, ``-mul``, ``-min``, ``-max``): the operand's
    entries (less those ``scatter`` overwrites) and each update's where it lands, found by
    transposing a scatter-add on entry numbers; unknown indices reach every entry."""
    n = interp.n
    operand, indices, updates = invals[0], invals[1], invals[2]
    shape = tuple(eqn.invars[0].aval.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if isinstance(indices, Dep):
        out = elementwise(interp, eqn, [operand])[0].rows if _carries(operand) else empty(size, n)
        if _carries(updates):
            union = sp.csr_array(updates.rows.sum(axis=0, dtype=bool).reshape(1, -1))
            out = out + _take(union, np.zeros(size, np.int64), n)
        return _outs(eqn, [out], n)
    ushape = tuple(eqn.invars[2].aval.shape)
    p = eqn.params
    with jax.enable_x64(True):
        key = (shape, ushape, p["dimension_numbers"], p.get("mode"))
        where = _landing(*key, bool(p.get("indices_are_sorted")), bool(p.get("unique_indices")))(
            jnp.asarray(indices)
        )
    dest = np.asarray(where).ravel().astype(np.int64) - 1
    landed = dest >= 0
    place = _select(size, dest[landed], np.flatnonzero(landed))
    out = empty(size, n)
    if _carries(updates):
        out = out + _matmul(place, updates.rows)
    if _carries(operand):
        rows = operand.rows
        if eqn.primitive.name == "scatter":  # overwritten entries forget the operand
            written = np.zeros(size, bool)
            written[dest[landed]] = True
            rows = _mask_rows(rows, ~written)
        out = out + rows
    return _outs(eqn, [out], n)


def dynamic_update_slice(interp: Any, eqn: Any, invals: list[Any]) -> list[Any]:
    """With known starts by index propagation; with unknown ones, each entry may be the
    operand's own or any of the update's."""
    if any(isinstance(v, Dep) for v in invals[2:]):
        n = interp.n
        operand, update = invals[0], invals[1]
        size = int(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64))
        out = rows_of(operand, n, size) if _carries(operand) else empty(size, n)
        if _carries(update):
            union = sp.csr_array(update.rows.sum(axis=0, dtype=bool).reshape(1, -1))
            out = out + _take(union, np.zeros(size, np.int64), n)
        return _outs(eqn, [out], n)
    return structural(interp, eqn, invals)


STRUCTURAL = (
    "reshape",
    "transpose",
    "broadcast_in_dim",
    "squeeze",
    "expand_dims",
    "slice",
    "rev",
    "concatenate",
    "pad",
    "gather",
    "dynamic_slice",
    "split",
    "tile",
    "stack",
    "unstack",
)
SAME = (  # one output shaped like the (first) input, entry for entry
    "copy",
    "copy_p",
    "reduce_precision",
    "real",
    "imag",
    "conj",
    "complex",
    "sharding_constraint",
    "device_put",
    "optimization_barrier",
    "layout_constraint",
    "pvary",
)

#: Per-primitive sparsity actions, where the rule table's kind is not enough.
ACTIONS: dict[str, Action] = {
    **dict.fromkeys(STRUCTURAL, structural),
    **dict.fromkeys(SAME, elementwise),
    "convert_element_type": convert,
    "select_n": select_n,
    "dot_general": dot_general,
    "dynamic_update_slice": dynamic_update_slice,
    **dict.fromkeys(("scatter", "scatter-add", "scatter-sub", "scatter-mul"), scatter),
    **dict.fromkeys(("scatter-min", "scatter-max"), scatter),
    **dict.fromkeys(("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce"), reduction),
    **dict.fromkeys(("argmax", "argmin"), zero),
    **dict.fromkeys(("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"), cumulative),
    "sort": sort,
    "top_k": top_k,
}

#: One generic action per kind of the rule table (``RULES[name].kind``).
KIND_ACTIONS: dict[str, Action] = {
    "elementwise": elementwise,
    "zero": zero,
    "reduction": reduction,
    "cumulative": cumulative,
    "expansion": cumulative,
    "permutation": sort,
}
