"""Problem families with sparse Jacobians and Hessians, registered with the harness.

* ``brusselator-2d`` -- the right-hand side of the 2-D Brusselator reaction-diffusion system
  on an ``N x N`` periodic grid (SciML's sparse-AD benchmark): ``n = m = 2 N^2``, six
  nonzeros per row (the 5-point Laplacian and the other species at the same point);
* ``pde-1d`` -- the residual ``-u'' + u^3 - 1`` of a 1-D boundary-value problem (zero
  Dirichlet values), second-order differences: tridiagonal;
* ``pde-2d`` -- the 2-D Bratu residual ``-Lap u - lam exp(u)`` on an ``N x N`` grid (zero
  Dirichlet values): the 5-point pattern;
* ``rosenbrock-ext`` -- the extended Rosenbrock function, pairs ``(x_{2i}, x_{2i+1})``: a
  block-diagonal Hessian of 2 x 2 blocks;
* ``rosenbrock-ext-hessian`` -- that Hessian, as the Jacobian of its gradient (``jax.grad``,
  as GradBench's ``kmeans``): ``diffkit compare --sparse`` measures it dense and compressed.

Each module-level ``*_pattern`` function gives the exact pattern, written independently of
the detector (by the stencil), for the tests.

Example:
    >>> import diffkit as dk
    >>> inst = dk.harness.get_problem("brusselator-2d").build(4)
    >>> inst.n, inst.m
    (32, 32)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from diffkit.harness.families import Problem, register_problem

__all__ = [
    "brusselator",
    "brusselator_pattern",
    "pde_1d_pattern",
    "pde_2d_pattern",
    "rosenbrock_ext_pattern",
]


def brusselator(grid: int, dtype: Any = np.float32) -> Any:
    """The 2-D Brusselator's right-hand side on a ``grid x grid`` periodic mesh, as a
    function of the flat state ``(u, v)`` of length ``2 grid^2`` (SciML's benchmark: A = 3.4,
    B = 1, alpha = 10 / dx^2, the forcing pulse as at t >= 1.1).

    Example:
        >>> import jax.numpy as jnp
        >>> brusselator(3)(jnp.ones(18)).shape
        (18,)
    """
    n = grid
    dx = 1.0 / max(n - 1, 1)
    alpha = 10.0 / dx**2
    xs = np.linspace(0.0, 1.0, n)
    xx, yy = np.meshgrid(xs, xs, indexing="ij")
    forcing = np.where((xx - 0.3) ** 2 + (yy - 0.6) ** 2 <= 0.1**2, 5.0, 0.0).astype(dtype)

    def lap(a: Any) -> Any:
        return (
            jnp.roll(a, 1, 0) + jnp.roll(a, -1, 0) + jnp.roll(a, 1, 1) + jnp.roll(a, -1, 1)
        ) - 4.0 * a

    def rhs(y: Any) -> Any:
        u = y[: n * n].reshape(n, n)
        v = y[n * n :].reshape(n, n)
        uuv = u * u * v
        du = 1.0 + uuv - 4.4 * u + alpha * lap(u) + forcing
        dv = 3.4 * u - uuv + alpha * lap(v)
        return jnp.concatenate([du.ravel(), dv.ravel()])

    return rhs


def _stencil(grid: int, periodic: bool) -> Any:
    """The 5-point pattern on a ``grid x grid`` mesh (periodic or not)."""
    idx = np.arange(grid * grid).reshape(grid, grid)
    rows, cols = [idx.ravel()], [idx.ravel()]
    for shift, axis in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        if periodic:
            rows.append(idx.ravel())
            cols.append(np.roll(idx, shift, axis).ravel())
        else:
            a = np.roll(idx, shift, axis)
            keep = np.ones_like(idx, bool)
            edge = 0 if shift == 1 else grid - 1
            keep[(slice(None),) * axis + (edge,)] = False
            rows.append(idx[keep])
            cols.append(a[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_array((np.ones(r.size, bool), (r, c)), shape=(grid * grid,) * 2)


def brusselator_pattern(grid: int) -> Any:
    """The exact Jacobian pattern of :func:`brusselator` (by the stencil).

    Example:
        >>> brusselator_pattern(4).nnz  # six per row
        192
    """
    s = _stencil(grid, periodic=True)
    eye = sp.eye_array(grid * grid, dtype=bool, format="csr")
    return sp.csr_array(sp.block_array([[s, eye], [eye, s]], format="csr"), dtype=bool)


def pde_1d_pattern(n: int) -> Any:
    """Tridiagonal.

    Example:
        >>> pde_1d_pattern(4).nnz
        10
    """
    ones = np.ones(n)
    band = sp.diags_array([ones[1:], ones, ones[1:]], offsets=[-1, 0, 1], format="csr")
    return sp.csr_array(band, dtype=bool)


def pde_2d_pattern(grid: int) -> Any:
    """The 5-point pattern, Dirichlet boundaries.

    Example:
        >>> pde_2d_pattern(3).nnz
        33
    """
    return sp.csr_array(_stencil(grid, periodic=False), dtype=bool)


def rosenbrock_ext_pattern(n: int) -> Any:
    """2 x 2 diagonal blocks (``n`` even).

    Example:
        >>> rosenbrock_ext_pattern(4).toarray().astype(int).tolist()[0]
        [1, 1, 0, 0]
    """
    block = np.ones((2, 2), bool)
    return sp.csr_array(sp.block_diag([block] * (n // 2), format="csr"), dtype=bool)


def _brusselator(size, dtype, rng):
    grid = max(2, int(size))
    y0 = np.concatenate(
        [0.5 + 0.1 * rng.standard_normal(grid * grid), 2.0 + 0.1 * rng.standard_normal(grid**2)]
    ).astype(dtype)
    return brusselator(grid, dtype), (y0,)


def _pde_1d(size, dtype, rng):
    n = max(2, int(size))
    dx = 1.0 / (n + 1)

    def residual(u: Any) -> Any:
        up = jnp.pad(u, 1)
        return -(up[:-2] - 2.0 * up[1:-1] + up[2:]) / dx**2 + u**3 - 1.0

    return residual, (0.1 * rng.standard_normal(n).astype(dtype),)


def _pde_2d(size, dtype, rng, lam):
    grid = max(2, int(size))
    dx = 1.0 / (grid + 1)

    def residual(u: Any) -> Any:
        a = jnp.pad(u.reshape(grid, grid), 1)
        c = a[1:-1, 1:-1]
        lap = (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4.0 * c) / dx**2
        return (-lap - lam * jnp.exp(c)).ravel()

    return residual, (0.1 * rng.standard_normal(grid * grid).astype(dtype),)


def _rosen_ext(x: Any) -> Any:
    odd, even = x[0::2], x[1::2]
    return jnp.sum(100.0 * (even - odd**2) ** 2 + (1.0 - odd) ** 2)


def _rosenbrock_ext(size, dtype, rng):
    n = 2 * max(1, int(size) // 2)
    return _rosen_ext, ((0.5 * rng.standard_normal(n)).astype(dtype),)


def _rosenbrock_ext_hessian(size, dtype, rng):
    _, args = _rosenbrock_ext(size, dtype, rng)
    return jax.grad(_rosen_ext), args


for _problem in (
    Problem(
        "brusselator-2d",
        "2-D Brusselator right-hand side on a periodic N x N grid (n = m = 2 N^2, sparse)",
        "grid side N",
        (8, 16, 32, 64),
        _brusselator,
    ),
    Problem(
        "pde-1d",
        "1-D finite-difference residual -u'' + u^3 - 1 (tridiagonal Jacobian)",
        "n",
        (100, 1_000, 10_000),
        _pde_1d,
    ),
    Problem(
        "pde-2d",
        "2-D Bratu residual -Lap u - lam exp(u) on an N x N grid (5-point Jacobian)",
        "grid side N",
        (8, 16, 32, 64),
        _pde_2d,
        {"lam": 1.0},
    ),
    Problem(
        "rosenbrock-ext",
        "extended Rosenbrock (independent pairs): block-diagonal Hessian",
        "n",
        (10, 100, 1_000, 10_000),
        _rosenbrock_ext,
    ),
    Problem(
        "rosenbrock-ext-hessian",
        "extended Rosenbrock's Hessian: the Jacobian of its gradient (2 x 2 blocks, sparse)",
        "n",
        (10, 100, 1_000),
        _rosenbrock_ext_hessian,
    ),
):
    register_problem(_problem)

del _problem
