"""Rows of the rule table (:mod:`diffkit.rules.table`): linear algebra, decompositions and
solves (``cholesky``, ``triangular_solve``, ``lu``, ``qr``, ``eigh``, ``svd``, ``eig``,
``tridiagonal_solve``).

Each row gives the tangent map of JAX's own JVP rule (``jax/_src/lax/linalg.py``: the same
formulas, conventions and primal outputs) and, for reverse mode, that map's transpose written
out (JAX gets its reverse mode by transposing the JVP). Rules are written with other
primitives of the table (triangular solves, matrix products, masks), so their output can be
differentiated again. Where JAX refuses a derivative for some parameters (a partial
``eigh``, ``svd`` with full non-square factors, non-symmetric eigenvectors), the row refuses
it too, with an :class:`~diffkit._core.errors.UnsupportedPrimitiveError`. The decompositions are
written for real matrices (``triangular_solve``, ``cholesky`` and ``eig``'s eigenvalues also
take complex ones); a complex ``lu``, ``qr``, ``eigh`` or ``svd`` is refused. ``schur`` and
``hessenberg`` have no row: JAX has no derivative for them.

Example:
    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> a, a_dot = jnp.array([[4.0]]), jnp.array([[1.0]])
    >>> (l,) = ROWS["cholesky"].primal([a], {})
    >>> ROWS["cholesky"].jvp(lax.linalg.cholesky_p, [a], [a_dot], [l], {})[0].tolist()
    [[0.25]]
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.types import Array
from diffkit.rules.kinds import Rule

_HI = lax.Precision.HIGHEST  # as JAX's own linear-algebra derivatives


def _T(x: Array) -> Array:
    return jnp.swapaxes(x, -1, -2)


def _H(x: Array) -> Array:
    return jnp.conj(_T(x))


def _mm(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=_HI)


def _mm0(a: Array, b: Array) -> Array:
    """A matrix product at the default precision (JAX's ``qr`` and ``svd`` rules use it;
    on the CPU the highest precision takes another, slower path for large matrices)."""
    return jnp.matmul(a, b)


def _eye(n: int, dtype: Any) -> Array:
    return jnp.eye(n, dtype=dtype)


def _diag(x: Array) -> Array:
    """The diagonal of a (batch of) matrices."""
    return jnp.diagonal(x, axis1=-2, axis2=-1)


def _sym(x: Array) -> Array:
    return (x + _H(x)) / 2


def _rows(x: Array, perm: Array) -> Array:
    """``x[..., perm, :]`` for a batch of permutations."""
    return jnp.take_along_axis(x, perm[..., :, None], axis=-2)


def _cols(x: Array, perm: Array) -> Array:
    """``x[..., :, perm]`` for a batch of permutations."""
    return jnp.take_along_axis(x, perm[..., None, :], axis=-1)


def _unrows(x: Array, perm: Array) -> Array:
    """The transpose of :func:`_rows`: ``y`` with ``y[..., perm, :] = x``."""
    return _rows(x, jnp.argsort(perm, axis=-1))


def _solve_tri(a: Array, b: Array, **kw: Any) -> Array:
    return lax.linalg.triangular_solve(a, b, **kw)


def _refuse(prim: str, why: str) -> UnsupportedPrimitiveError:
    return UnsupportedPrimitiveError(f"dual/tape: no derivative of '{prim}' {why}")


def _real_only(prim: str, x: Array) -> None:
    if jnp.iscomplexobj(x):
        raise _refuse(prim, f"for complex input ({x.dtype}): use jax-fwd/jax-rev for it")


def _lu_solve(a: Array, b: Array, trans: bool = False) -> Array:
    """``a^-1 b`` (``a^-T b`` when ``trans``) by a pivoted LU, for matrices ``b``."""
    lu, _, perm = lax.linalg.lu(a)
    unit = {"left_side": True, "lower": True, "unit_diagonal": True}
    if not trans:
        x = _solve_tri(lu, _rows(b, perm), **unit)
        return _solve_tri(lu, x, left_side=True, lower=False)
    x = _solve_tri(lu, b, left_side=True, lower=False, transpose_a=True)
    return _unrows(_solve_tri(lu, x, transpose_a=True, **unit), perm)


# ----------------------------------------------------------------- triangular_solve


def _tri_mask(g: Array, lower: bool, unit_diagonal: bool) -> Array:
    k = 1 if unit_diagonal else 0
    return jnp.tril(g, -k) if lower else jnp.triu(g, k)


def _op(g: Array, transpose_a: bool, conjugate_a: bool) -> Array:
    """``op(g)`` of the solve: transposed and/or conjugated (both are self-inverse)."""
    g = _T(g) if transpose_a else g
    return jnp.conj(g) if conjugate_a else g


def _tri_solve_jvp(prim, xs, x_dots, ys, prm):
    """``op(A) X = B``: ``op(A) dX = dB - op(dA) X`` (left side; mirrored on the right),
    ``dA`` masked to the triangle the solve reads; one solve for both terms."""
    (a, _), (a_dot, b_dot), (x,) = xs, x_dots, ys
    rhs = b_dot
    if a_dot is not None:
        g = _op(_tri_mask(a_dot, prm["lower"], prm["unit_diagonal"]), *_opflags(prm))
        term = _mm(g, x) if prm["left_side"] else _mm(x, g)
        rhs = -term if rhs is None else rhs - term
    return [prim.bind(a, rhs, **prm)]


def _opflags(prm: dict) -> tuple[bool, bool]:
    return prm["transpose_a"], prm["conjugate_a"]


def _tri_solve_vjp(prim, xs, ys, y_bars, needs, prm):
    """``B_bar = op(A)^-T X_bar``; ``op(dA)``'s cotangent is ``-B_bar X^T`` (left side) or
    ``-X^T B_bar`` (right side), then ``op`` undone and masked to the triangle."""
    (a, _), (x,), (ct,) = xs, ys, y_bars
    b_bar = prim.bind(a, ct, **{**prm, "transpose_a": not prm["transpose_a"]})
    a_bar = None
    if needs[0]:
        g = -_mm(b_bar, _T(x)) if prm["left_side"] else -_mm(_T(x), b_bar)
        a_bar = _tri_mask(_op(g, *_opflags(prm)), prm["lower"], prm["unit_diagonal"])
    return [a_bar, b_bar if needs[1] else None]


# ------------------------------------------------------------------------- cholesky


def _phi(x: Array) -> Array:
    """The lower triangle with its diagonal halved (self-adjoint)."""
    n = x.shape[-1]
    return jnp.tril(x) * (1 - 0.5 * _eye(n, x.dtype))


def _chol_primal(xs, prm):
    return [jnp.tril(lax.linalg.cholesky_p.bind(*xs, **prm))]  # as JAX's JVP (and its users)


def _chol_jvp(prim, xs, x_dots, ys, prm):
    """``L_dot = L phi(L^-1 S_dot L^-H)`` (JAX's rule; ``S_dot`` as given, unsymmetrised)."""
    (l,), (s_dot,) = ys, x_dots
    tmp = _solve_tri(l, s_dot, left_side=False, lower=True, transpose_a=True, conjugate_a=True)
    return [_mm(l, _phi(_solve_tri(l, tmp, left_side=True, lower=True)))]


def _chol_vjp(prim, xs, ys, y_bars, needs, prm):
    """The transpose: ``S_bar = L^-T phi(L^T L_bar) conj(L)^-1``."""
    (l,), (ct,) = ys, y_bars
    y_bar = _phi(_mm(_T(l), ct))
    tmp = _solve_tri(l, y_bar, left_side=True, lower=True, transpose_a=True)
    return [_solve_tri(l, tmp, left_side=False, lower=True, conjugate_a=True)]


# ------------------------------------------------------------------------------- lu


def _lu_factors(lu: Array) -> tuple[Array, Array]:
    """``(L, U)`` from the packed ``lu`` of an ``m x n`` matrix, both square (``m x m`` unit
    lower, ``n x n`` upper with an identity block past ``min(m, n)``), as JAX's rule."""
    m, n = lu.shape[-2:]
    k = min(m, n)
    pad = [(0, 0)] * (lu.ndim - 2)
    l = jnp.pad(jnp.tril(lu[..., :, :k], -1), [*pad, (0, 0), (0, m - k)]) + _eye(m, lu.dtype)
    u = jnp.pad(jnp.triu(lu[..., :k, :]), [*pad, (0, n - k), (0, 0)])
    tail = jnp.pad(_eye(n - k, lu.dtype), [(k, 0), (k, 0)])
    return l, u + tail


def _lu_primal(xs, prm):
    _real_only("lu", xs[0])
    return list(lax.linalg.lu_p.bind(*xs, **prm))


def _lu_jvp(prim, xs, x_dots, ys, prm):
    """``lu_dot = L tril(W, -1) + triu(W) U`` with ``W = L^-1 P A_dot U^-1``."""
    lu, _, perm = ys
    l, u = _lu_factors(lu)
    la = _solve_tri(l, _rows(x_dots[0], perm), left_side=True, lower=True, unit_diagonal=True)
    w = _solve_tri(u, la, left_side=False, lower=False)
    return [_mm(l, jnp.tril(w, -1)) + _mm(jnp.triu(w), u), None, None]


def _lu_vjp(prim, xs, ys, y_bars, needs, prm):
    """The transpose: ``W_bar = tril(L^T ct, -1) + triu(ct U^T)``, then
    ``A_bar = P^T L^-T W_bar U^-T``."""
    (lu, _, perm), ct = ys, y_bars[0]
    l, u = _lu_factors(lu)
    w_bar = jnp.tril(_mm(_T(l), ct), -1) + jnp.triu(_mm(ct, _T(u)))
    la_bar = _solve_tri(u, w_bar, left_side=False, lower=False, transpose_a=True)
    pa_bar = _solve_tri(l, la_bar, left_side=True, lower=True, transpose_a=True, unit_diagonal=True)
    return [_unrows(pa_bar, perm)]


# ------------------------------------------------------------------------------- qr


def _thin_qr_jvp(q: Array, r: Array, dx: Array) -> tuple[Array, Array]:
    """``X = QR`` with ``m >= n`` (real): ``D = dX R^-1``, ``C = Q^T D``,
    ``dO = tril(C, -1) - tril(C, -1)^T``; ``dQ = Q (dO - C) + D``, ``dR = (C - dO) R``."""
    d = _solve_tri(r, dx, left_side=False, lower=False)
    c = _mm0(_T(q), d)
    cl = jnp.tril(c, -1)
    do = cl - _T(cl)
    return _mm0(q, do - c) + d, _mm0(c - do, r)


def _thin_qr_vjp(q: Array, r: Array, q_bar: Array, r_bar: Array) -> Array:
    """The transpose of :func:`_thin_qr_jvp`: with ``M = Q^T Q_bar - R_bar R^T``,
    ``C_bar = -M + tril(M - M^T, -1)`` and ``dX_bar = (Q_bar + Q C_bar) R^-T``."""
    m = _mm0(_T(q), q_bar) - _mm0(r_bar, _T(r))
    c_bar = jnp.tril(m - _T(m), -1) - m
    return _solve_tri(r, q_bar + _mm0(q, c_bar), left_side=False, lower=False, transpose_a=True)


def _qr_primal(xs, prm):
    _real_only("qr", xs[0])
    return list(lax.linalg.qr_p.bind(*xs, **prm))


def _qr_full_extra(q: Array, n: int) -> tuple[Array, Array]:
    """For full ``Q`` of a tall matrix: ``Z = Q_pn (Q_nn - I)^-1`` and ``Q_mn + Q_mp Z``,
    which give the tangent of ``Q``'s extra columns (JAX's rule, arXiv:2409.13374)."""
    q_mn = q[..., :, :n]
    z_t = _lu_solve(_T(q_mn[..., :n, :] - _eye(n, q.dtype)), _T(q_mn[..., n:, :]), trans=False)
    z = _T(z_t)
    return z, q_mn + _mm0(q[..., :, n:], z)


def _qr_jvp(prim, xs, x_dots, ys, prm):
    """JAX's rule: thin QR; a wide ``X = Q [R1 R2]`` adds ``dR2 = dQ^T X2 + Q^T dX2``; a full
    ``Q`` of a tall ``X`` adds its extra columns' tangent. With pivoting, ``X2`` is taken from
    the column-permuted ``X`` (JAX's rule takes it unpermuted, whose ``dR`` disagrees with
    finite differences for wide matrices)."""
    (x,), (dx,) = xs, x_dots
    q, r, *p = ys
    m, n = x.shape[-2:]
    if prm["pivoting"]:
        x, dx = (_cols(y, p[0]) for y in (x, dx))
    if m < n:  # wide: X = Q [R1 R2], R2 = Q^T X2
        dq, dr1 = _thin_qr_jvp(q, r[..., :, :m], dx[..., :, :m])
        dr2 = _mm0(_T(dq), x[..., :, m:]) + _mm0(_T(q), dx[..., :, m:])
        return [dq, jnp.concatenate([dr1, dr2], -1), *[None] * len(p)]
    full = prm["full_matrices"] and m > n
    dq, dr = _thin_qr_jvp(q[..., :, :n], r[..., :n, :n], dx)
    if full:
        z, w = _qr_full_extra(q, n)
        dq_mp = _mm0(dq, _T(z)) - _mm0(w, _T(dq[..., n:, :] - _mm0(z, dq[..., :n, :])))
        dq = jnp.concatenate([dq, dq_mp], -1)
        dr = jnp.concatenate([dr, jnp.zeros((*dr.shape[:-2], m - n, n), dr.dtype)], -2)
    return [dq, dr, *[None] * len(p)]


def _qr_vjp(prim, xs, ys, y_bars, needs, prm):
    (x,), (q, r, *p) = xs, ys
    q_bar, r_bar = y_bars[:2]
    m, n = x.shape[-2:]
    if m < n:
        x2 = (_cols(x, p[0]) if prm["pivoting"] else x)[..., :, m:]
        r2_bar = r_bar[..., :, m:]
        dx1 = _thin_qr_vjp(q, r[..., :, :m], q_bar + _mm0(x2, _T(r2_bar)), r_bar[..., :, :m])
        dx = jnp.concatenate([dx1, _mm0(q, r2_bar)], -1)
    else:
        q_mn_bar = q_bar[..., :, :n]
        if prm["full_matrices"] and m > n:
            z, w = _qr_full_extra(q, n)
            qb_mp = q_bar[..., :, n:]
            e_bar = -_mm0(_T(qb_mp), w)
            rows = jnp.concatenate([-_mm0(_T(z), e_bar), e_bar], -2)
            q_mn_bar = q_mn_bar + _mm0(qb_mp, z) + rows
        dx = _thin_qr_vjp(q[..., :, :n], r[..., :n, :n], q_mn_bar, r_bar[..., :n, :n])
    if prm["pivoting"]:
        dx = _T(_unrows(_T(dx), p[0]))
    return [dx]


# ----------------------------------------------------------------------------- eigh


def _eigh_primal(xs, prm):
    (a,) = xs
    _real_only("eigh", a)
    n, subset = a.shape[-1], prm["subset_by_index"]
    if not (subset is None or tuple(subset) == (0, n)):
        raise _refuse(
            "eigh",
            f"for a partial eigendecomposition (subset_by_index={subset}), "
            "as in JAX: compute all eigenvalues (subset_by_index=None)",
        )
    return list(lax.linalg.eigh_p.bind(_sym(a), **prm))  # as JAX's JVP: of the symmetrised a


def _gaps(w: Array) -> Array:
    """``F_ij = 1 / (w_j - w_i)`` off the diagonal, 0 on it (as JAX builds it)."""
    eye = _eye(w.shape[-1], w.dtype)
    return 1 / (eye + w[..., None, :] - w[..., :, None]) - eye


def _eigh_jvp(prim, xs, x_dots, ys, prm):
    """With ``S = V^T A_dot V``: ``V_dot = V (F * S)``, ``w_dot = diag(S)``."""
    (v, w), (a_dot,) = ys, x_dots
    s = _mm(_mm(_T(v), a_dot), v)
    return [_mm(v, _gaps(w) * s), _diag(s)]


def _eigh_vjp(prim, xs, ys, y_bars, needs, prm):
    """The transpose: ``A_bar = V (F * (V^T V_bar) + diag(w_bar)) V^T``."""
    (v, w), (v_bar, w_bar) = ys, y_bars
    s_bar = _gaps(w) * _mm(_T(v), v_bar) + w_bar[..., None, :] * _eye(w.shape[-1], w.dtype)
    return [_mm(_mm(v, s_bar), _T(v))]


# ------------------------------------------------------------------------------ svd


def _svd_primal(xs, prm):
    """``s, U, Vt`` of the thin SVD (as JAX's JVP computes them), whatever ``compute_uv``:
    the factors follow the outputs as extras when they are not outputs."""
    (a,) = xs
    _real_only("svd", a)
    m, n = a.shape[-2:]
    if prm["compute_uv"] and prm["full_matrices"] and m != n:
        raise _refuse(
            "svd",
            f"with full_matrices=True for a non-square {m}x{n} matrix, as "
            "in JAX: use full_matrices=False",
        )
    return list(lax.linalg.svd_p.bind(a, **{**prm, "full_matrices": False, "compute_uv": True}))


def _svd_gaps(s: Array) -> Array:
    """``F_ij = 1 / (s_j^2 - s_i^2)`` off the diagonal, 0 on it."""
    eye = _eye(s.shape[-1], s.dtype)
    row, col = s[..., None, :], s[..., :, None]
    return 1 / ((row + col) * (row - col) + eye) - eye


def _svd_jvp(prim, xs, x_dots, ys, prm):
    """JAX's rule (real): ``dS = U^T dA V``, ``ds = diag(dS)``,
    ``dU = U (F * (dS s + s dS^T)) [+ (I - U U^T) dA V / s when m > n]``, likewise ``dV``."""
    (a,), (a_dot,), (s, u, vt) = xs, x_dots, ys[:3]
    m, n = a.shape[-2:]
    v = _T(vt)
    dav = _mm0(a_dot, v)
    ds_mat = _mm0(_T(u), dav)
    ds = _diag(ds_mat)
    if not prm["compute_uv"]:
        return [ds]
    f, row, col = _svd_gaps(s), s[..., None, :], s[..., :, None]
    dss, sds = ds_mat * row, col * ds_mat
    du = _mm0(u, f * (dss + _T(dss)))
    dv = _mm0(v, f * (sds + _T(sds)))
    if m > n:
        du = du + (dav - _mm0(u, ds_mat)) / row
    if n > m:
        dahu = _mm0(_T(a_dot), u)
        dv = dv + (dahu - _mm0(v, _mm0(vt, dahu))) / row
    return [ds, du, _T(dv)]


def _svd_vjp(prim, xs, ys, y_bars, needs, prm):
    """The transpose: ``A_bar = U dS_bar V^T`` (plus the projections for ``m != n``) with
    ``dS_bar = diag(s_bar) + (H + H^T) diag(s) + diag(s) (K + K^T)``, ``H = F * U^T U_bar``,
    ``K = F * V^T V_bar``."""
    (a,), (s, u, vt) = xs, ys[:3]
    s_bar = y_bars[0]
    if not prm["compute_uv"]:
        return [_mm0(u * s_bar[..., None, :], vt)]
    u_bar, vt_bar = y_bars[1], y_bars[2]
    m, n = a.shape[-2:]
    f, row, col = _svd_gaps(s), s[..., None, :], s[..., :, None]
    g_u, g_v = _mm0(_T(u), u_bar), _mm0(vt, _T(vt_bar))
    h, k = f * g_u, f * g_v
    eye = _eye(s.shape[-1], s.dtype)
    ds_bar = s_bar[..., None, :] * eye + (h + _T(h)) * row + col * (k + _T(k))
    if m > n:
        return [_mm0(_mm0(u, ds_bar - g_u / row) + u_bar / row, vt)]
    if n > m:
        return [_mm0(u, _mm0(ds_bar - _T(g_v) / col, vt) + vt_bar / col)]
    return [_mm0(_mm0(u, ds_bar), vt)]


# ------------------------------------------------------------------------------ eig


def _eig_primal(xs, prm):
    """The eigenvalues, then the right eigenvectors as an extra (as JAX's JVP computes
    them); eigenvector derivatives are refused."""
    if prm["compute_left_eigenvectors"] or prm["compute_right_eigenvectors"]:
        if not prm["enable_eigvec_derivs"]:
            raise _refuse(
                "eig",
                "eigenvectors: valid only under assumptions JAX cannot check "
                "(see enable_eigvec_derivs of jax.lax.linalg.eig); as in JAX",
            )
        raise _refuse(
            "eig",
            "eigenvectors (enable_eigvec_derivs=True): no such rule in "
            "diffkit; use jax-fwd/jax-rev, or differentiate the eigenvalues only",
        )
    w, vr = lax.linalg.eig_p.bind(*xs, **{**prm, "compute_right_eigenvectors": True})
    return [w, vr]


def _eig_jvp(prim, xs, x_dots, ys, prm):
    """``w_dot = diag(V^-1 A_dot V)``."""
    (_, vr), (a_dot,) = ys, x_dots
    return [jnp.sum(_lu_solve(vr, a_dot.astype(vr.dtype)) * _T(vr), -1)]


def _eig_vjp(prim, xs, ys, y_bars, needs, prm):
    """The transpose: ``A_bar = V^-T diag(w_bar) V^T`` (its real part for real ``A``)."""
    (a,), (_, vr), (w_bar,) = xs, ys, y_bars
    a_bar = _lu_solve(vr, w_bar[..., :, None] * _T(vr), trans=True)
    return [a_bar if jnp.iscomplexobj(a) else jnp.real(a_bar).astype(a.dtype)]


# ---------------------------------------------------------------- tridiagonal_solve


def _shifts(x: Array) -> tuple[Array, Array]:
    """``(x_(i-1), x_(i+1))`` along the rows of ``x``, 0 past the ends."""
    zero = jnp.zeros_like(x[..., :1, :])
    return (
        jnp.concatenate([zero, x[..., :-1, :]], -2),
        jnp.concatenate([x[..., 1:, :], zero], -2),
    )


def _tri_product(dl: Array | None, d: Array | None, du: Array | None, x: Array) -> Array:
    """``T x`` for the tridiagonal ``T`` of the given diagonals (``None``: zero)."""
    prev, nxt = _shifts(x)
    terms = [c[..., None] * y for c, y in ((dl, prev), (d, x), (du, nxt)) if c is not None]
    return sum(terms[1:], terms[0])


def _tridiag_jvp(prim, xs, x_dots, ys, prm):
    """``T x_dot = b_dot - T_dot x``."""
    (dl, d, du, _), (x,) = xs, ys
    rhs = x_dots[3]
    if any(t is not None for t in x_dots[:3]):
        term = _tri_product(*x_dots[:3], x)
        rhs = -term if rhs is None else rhs - term
    return [prim.bind(dl, d, du, rhs, **prm)]


def _tridiag_vjp(prim, xs, ys, y_bars, needs, prm):
    """``b_bar = T^-T x_bar`` (the transposed diagonals); each diagonal's cotangent is
    ``-b_bar`` times the entries of ``x`` it multiplies, summed over the columns."""
    (dl, d, du, _), (x,), (ct,) = xs, ys, y_bars
    zero = jnp.zeros_like(d[..., :1])
    dl_t = jnp.concatenate([zero, du[..., :-1]], -1)
    du_t = jnp.concatenate([dl[..., 1:], zero], -1)
    b_bar = prim.bind(dl_t, d, du_t, ct, **prm)
    prev, nxt = _shifts(x)
    bars = [-jnp.sum(b_bar * y, -1) for y in (prev, x, nxt)]
    return [g if need else None for g, need in zip([*bars, b_bar], needs, strict=True)]


ROWS: dict[str, Rule] = {
    "triangular_solve": Rule("linalg", _tri_solve_jvp, _tri_solve_vjp),
    "cholesky": Rule("linalg", _chol_jvp, _chol_vjp, _chol_primal),
    "lu": Rule("linalg", _lu_jvp, _lu_vjp, _lu_primal),
    "qr": Rule("linalg", _qr_jvp, _qr_vjp, _qr_primal),
    "eigh": Rule("linalg", _eigh_jvp, _eigh_vjp, _eigh_primal),
    "svd": Rule("linalg", _svd_jvp, _svd_vjp, _svd_primal),
    "eig": Rule("linalg", _eig_jvp, _eig_vjp, _eig_primal),
    "tridiagonal_solve": Rule("linalg", _tridiag_jvp, _tridiag_vjp),
}
