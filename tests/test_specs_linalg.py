"""Spec rows for the linear-algebra rows of the rule table (diffkit/rules/linalg.py).

Matrices are built inside each row from "real" inputs: ``_spd`` makes a symmetric positive
definite one, ``_tri`` a well-conditioned triangle. Sections: ``linalg`` (solves and
factorisations: triangular_solve in every parameter combination, cholesky, lu,
tridiagonal_solve), ``linalg_decomp`` (qr, eigh, svd, eig), ``linalg_user`` (what users
write: det, slogdet, cho_solve, solve_triangular, eigh, svd, qr, pinv, a Gaussian process'
negative log marginal likelihood) and ``linalg_solve`` (jnp.linalg.solve, inv, and
jax.scipy.linalg.solve, which also go through custom_linear_solve, a lead's row).
"""

from __future__ import annotations

import itertools
import warnings

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest
from _spec import DTYPES, Spec, check_rows, row_params
from jax import lax

L = lax.linalg


def _spd(x):
    """A symmetric positive definite matrix (batch) from any square ``x``."""
    n = x.shape[-1]
    return x @ jnp.swapaxes(x, -1, -2) + n * jnp.eye(n, dtype=x.dtype)


def _sym(x):
    return x + jnp.swapaxes(x, -1, -2)


def _tri(a):
    """``a`` with 3 added to its diagonal: a well-conditioned triangle to solve with."""
    return a + 3 * jnp.eye(a.shape[-1], dtype=a.dtype)


def _sq(n, *batch):
    return ("real", (*batch, n, n))


def _tri_solve_row(left: bool, lower: bool, trans: bool, unit: bool) -> Spec:
    shapes = (_sq(3), ("real", (3, 2) if left else (2, 3)))
    label = f"left={left} lower={lower} transpose_a={trans} unit_diagonal={unit}"
    return Spec(
        "triangular_solve",
        lambda a, b: L.triangular_solve(
            _tri(a), b, left_side=left, lower=lower, transpose_a=trans, unit_diagonal=unit
        ),
        shapes,
        label=label,
    )


def _gp_nll(x, y, log_ell):
    """A Gaussian process' negative log marginal likelihood (RBF kernel, noise 0.1)."""
    d = x[:, None] - x[None, :]
    k = jnp.exp(-(d * d) * jnp.exp(-2 * log_ell)) + 0.1 * jnp.eye(x.shape[0], dtype=x.dtype)
    chol = jnp.linalg.cholesky(k)
    alpha = jsl.cho_solve((chol, True), y)
    n = x.shape[0]
    return 0.5 * y @ alpha + jnp.sum(jnp.log(jnp.diag(chol))) + 0.5 * n * np.log(2 * np.pi)


def _eigvals_parts(x):
    """Real and imaginary parts of ``eig``'s eigenvalues (rows compare real arrays)."""
    w = L.eig(x, compute_left_eigenvectors=False, compute_right_eigenvectors=False)[0]
    with warnings.catch_warnings():  # the point: keep the real part
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        return tuple(lax.convert_element_type(v, x.dtype) for v in (w, -1j * w))


def _pivoted_qr_ref(x):
    """QR of the column-permuted ``x`` without pivoting: the same factors, with JAX's
    derivative (JAX's own rule for a pivoted wide QR takes ``X2`` unpermuted)."""
    p = L.qr(lax.stop_gradient(x), pivoting=True, full_matrices=False)[2]
    return tuple(L.qr(x[..., p], full_matrices=False))


SECTIONS: dict[str, list[Spec]] = {
    "linalg": [
        *[_tri_solve_row(*c) for c in itertools.product([True, False], repeat=4)],
        Spec(
            "triangular_solve",
            lambda a, b: lax.linalg.triangular_solve_p.bind(
                _tri(a),
                b,
                left_side=True,
                lower=True,
                transpose_a=True,
                conjugate_a=True,
                unit_diagonal=False,
            ),
            (_sq(3), ("real", (3, 2))),
            label="conjugate_a (real)",
        ),
        Spec(
            "triangular_solve",
            lambda a, b: L.triangular_solve(_tri(a), b, left_side=True, lower=True),
            (_sq(3, 2), ("real", (2, 3, 4))),
            label="batched",
        ),
        Spec(
            "triangular_solve",
            lambda b: L.triangular_solve(_tri(jnp.arange(9.0).reshape(3, 3)), b, left_side=True),
            (("real", (3, 2)),),
            label="b only",
        ),
        Spec("cholesky", lambda x: L.cholesky(_spd(x)), (_sq(4),)),
        Spec("cholesky", lambda x: jnp.linalg.cholesky(_spd(x)), (_sq(3, 2),), label="batched"),
        Spec(  # the tangent is not symmetric: the rule uses it as given, as JAX's
            "cholesky",
            lambda x, y: L.cholesky(_spd(x) + 0.1 * y, symmetrize_input=False),
            (_sq(3), _sq(3)),
            label="unsymmetric tangent",
        ),
        Spec("lu", lambda x: L.lu(x)[0], (_sq(4),)),
        Spec("lu", lambda x: L.lu(x)[0], (("real", (5, 3)),), label="tall"),
        Spec("lu", lambda x: L.lu(x)[0], (("real", (3, 5)),), label="wide"),
        Spec("lu", lambda x: L.lu(x)[0], (_sq(3, 2),), label="batched"),
        Spec(
            "tridiagonal_solve",
            lambda dl, d, du, b: L.tridiagonal_solve(dl, d + 4, du, b),
            (("real", (4,)), ("real", (4,)), ("real", (4,)), ("real", (4, 2))),
        ),
        Spec(
            "tridiagonal_solve",
            lambda dl, d, du, b: L.tridiagonal_solve(dl, d + 4, du, b),
            (("real", (2, 4)), ("real", (2, 4)), ("real", (2, 4)), ("real", (2, 4, 3))),
            label="batched",
        ),
        Spec(
            "tridiagonal_solve",
            lambda d, b: L.tridiagonal_solve(jnp.ones_like(d), d + 4, jnp.ones_like(d), b),
            (("real", (4,)), ("real", (4, 1))),
            label="main diagonal and b",
        ),
    ],
    "linalg_decomp": [
        Spec("qr", lambda x: L.qr(x, full_matrices=False), (("real", (4, 3)),)),
        Spec("qr", lambda x: L.qr(x, full_matrices=True), (("real", (5, 3)),), label="full tall"),
        Spec("qr", lambda x: L.qr(x, full_matrices=False), (("real", (3, 5)),), label="wide"),
        Spec("qr", lambda x: L.qr(x, full_matrices=True), (_sq(3),), label="full square"),
        Spec("qr", lambda x: L.qr(x, full_matrices=True), (("real", (2, 4, 3)),), label="batch"),
        Spec(
            "qr",
            lambda x: L.qr(x, pivoting=True, full_matrices=False)[:2],
            (("real", (4, 3)),),
            label="pivoting",
        ),
        Spec(
            "qr",
            lambda x: L.qr(x, pivoting=True, full_matrices=False)[:2],
            (("real", (3, 5)),),
            label="pivoting wide",
            ref=_pivoted_qr_ref,
        ),
        Spec("eigh", lambda x: L.eigh(x), (_sq(4),)),
        Spec("eigh", lambda x: L.eigh(_sym(x), symmetrize_input=False), (_sq(3, 2),), label="b"),
        Spec("eigh", lambda x: L.eigh(x, lower=False)[1], (_sq(3),), label="upper, values"),
        Spec("svd", lambda x: L.svd(x, full_matrices=False), (("real", (4, 3)),)),
        Spec("svd", lambda x: L.svd(x, full_matrices=False), (("real", (3, 5)),), label="wide"),
        Spec("svd", lambda x: L.svd(x, full_matrices=True), (_sq(3),), label="full square"),
        Spec("svd", lambda x: L.svd(x, compute_uv=False), (("real", (2, 4, 3)),), label="values"),
        Spec("svd", lambda x: L.svd(x, full_matrices=False), (_sq(3, 2),), label="batched"),
        Spec("eig", _eigvals_parts, (_sq(4),), order2=False),  # JAX has no second order
        Spec("eig", _eigvals_parts, (_sq(3, 2),), order2=False, label="batched"),
    ],
    "linalg_user": [
        Spec("lu", jnp.linalg.det, (_sq(4),), label="det"),
        Spec("lu", lambda x: jnp.linalg.slogdet(x)[1], (_sq(4, 2),), label="slogdet"),
        Spec(
            "lu",
            lambda x, b: jsl.lu_solve(jsl.lu_factor(x), b),
            (_sq(3), ("real", (3, 2))),
            label="lu",
        ),
        Spec("lu", lambda x: jsl.lu(x)[1:], (("real", (4, 3)),), label="scipy lu"),
        Spec(
            "cholesky",
            lambda x, b: jsl.cho_solve((jnp.linalg.cholesky(_spd(x)), True), b),
            (_sq(3), ("real", (3,))),
            label="cho_solve",
        ),
        Spec(
            "triangular_solve",
            lambda a, b: jsl.solve_triangular(_tri(a), b, lower=True),
            (_sq(3), ("real", (3,))),
            label="solve_triangular",
        ),
        Spec(
            "triangular_solve",
            lambda a, b: jsl.solve_triangular(_tri(a), b, trans="T", unit_diagonal=True),
            (_sq(3), ("real", (3, 2))),
            label="solve_triangular trans",
        ),
        Spec("eigh", jnp.linalg.eigh, (_sq(4),), label="jnp"),
        Spec("eigh", jnp.linalg.eigvalsh, (_sq(3),), label="eigvalsh"),
        Spec(
            "svd",
            lambda x: jnp.linalg.svd(x, full_matrices=False),
            (("real", (4, 3)),),
            label="jnp",
        ),
        Spec("svd", jnp.linalg.pinv, (("real", (4, 3)),), label="pinv"),
        Spec("svd", lambda x: jnp.linalg.norm(x, 2), (("real", (3, 4)),), label="norm 2"),
        Spec("qr", jnp.linalg.qr, (("real", (4, 3)),), label="jnp"),
        Spec(
            "qr",
            lambda x: jnp.linalg.qr(x, mode="complete"),
            (("real", (4, 3)),),
            label="complete",
        ),
        Spec(
            "cholesky",
            _gp_nll,
            (("real", (5,)), ("real", (5,)), ("real", ())),
            label="GP negative log marginal likelihood",
        ),
    ],
    # jnp.linalg.solve and inv also emit custom_linear_solve (its row: the lead's)
    "linalg_solve": [
        Spec("lu", lambda x, b: jnp.linalg.solve(x, b), (_sq(3), ("real", (3,))), label="solve"),
        Spec("lu", jnp.linalg.inv, (_sq(3),), label="inv"),
        Spec(
            "cholesky",
            lambda x, b: jsl.solve(_spd(x), b, assume_a="pos"),
            (_sq(3), ("real", (3, 2))),
            label="scipy solve pos",
        ),
    ],
}


@pytest.mark.parametrize("spec", row_params(SECTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_match_jax(spec: Spec, dtype: str) -> None:
    """The row against jax.jvp / jax.vjp, first and second order: rho <= 1e-12 in float64,
    the row's ``tol32`` in float32 (float32 is marked slow for time only; the full suite runs
    it)."""
    with jax.enable_x64(dtype == "float64"):
        failures = check_rows([spec], dtype)
    assert not failures, "\n".join(failures)
