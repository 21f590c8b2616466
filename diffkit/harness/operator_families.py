"""Harness families for higher-order derivatives (registered when the harness loads
``FAMILIES``; the functions are differentiated with respect to their first argument):

* ``pinn-mlp`` -- a PINN-style MLP ``u: R^d -> R`` (tanh or softplus, width 32, depth 3);
  size ``d``;
* ``poisson-loss`` -- the Poisson residual loss ``mean_b (Delta u(x_b) + g(x_b))^2`` of that
  MLP over a batch of points, as a function of the network's flat parameters: the operator
  (collapsed Taylor mode) inside, then the differentiator over it; size ``d``;
* ``taylor-order`` -- the K-th directional derivative of a fixed MLP ``R^8 -> R`` by Taylor
  mode, as a function of the point; size ``K`` (1..6);
* ``vmc-logpsi`` -- a VMC-style log-wavefunction ``log|det Phi(r)|``, ``Phi_ij = phi_j(r_i)``
  from a small MLP orbital map of ``n`` particles in 3-D; size ``n``.

Example:
    >>> import diffkit as dk
    >>> inst = dk.harness.get_problem("pinn-mlp").build(4)
    >>> inst.n, inst.m, inst.quantity
    (4, 1, 'grad')
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from diffkit.harness.families import Problem, register_problem
from diffkit.operators.core import laplacian
from diffkit.taylor.differentiator import directional

__all__ = ["mlp", "mlp_params"]

_ACTIVATIONS = {"tanh": jnp.tanh, "softplus": jax.nn.softplus}


def mlp_params(
    d: int, width: int, depth: int, dtype: Any, rng: np.random.Generator
) -> list[tuple[Any, Any]]:
    """Weights ``(W, b)`` of a ``depth``-layer MLP ``R^d -> R`` (Glorot-scaled)."""
    sizes = [d] + [width] * depth + [1]
    return [
        (
            jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), dtype),
            jnp.asarray(0.1 * rng.normal(size=(b,)), dtype),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def mlp(params: list[tuple[Any, Any]], x: Any, activation: str = "tanh") -> Any:
    """``u(x)``: the MLP's scalar output at one point ``x`` of shape ``(d,)``.

    Example:
        >>> import numpy as np, jax.numpy as jnp
        >>> p = mlp_params(3, 8, 2, jnp.float32, np.random.default_rng(0))
        >>> mlp(p, jnp.ones(3)).shape
        ()
    """
    act = _ACTIVATIONS[activation]
    h = x
    for w, b in params[:-1]:
        h = act(h @ w + b)
    w, b = params[-1]
    return (h @ w + b)[0]


def _pinn(d: int, dtype: Any, rng: np.random.Generator, width: int, depth: int, activation: str):
    params = mlp_params(d, width, depth, dtype, rng)
    x = jnp.asarray(rng.uniform(-1, 1, size=d), dtype)

    def u(x: Any, params: Any) -> Any:
        return mlp(params, x, activation)

    return u, (x, params)


def _poisson(
    d: int,
    dtype: Any,
    rng: np.random.Generator,
    width: int,
    depth: int,
    activation: str,
    batch: int,
):
    params = mlp_params(d, width, depth, dtype, rng)
    flat, unravel = ravel_pytree(params)
    xs = jnp.asarray(rng.uniform(-1, 1, size=(batch, d)), dtype)

    def loss(theta: Any, xs: Any) -> Any:
        p = unravel(theta)

        def residual(x: Any) -> Any:
            lap = laplacian(lambda z: mlp(p, z, activation), x, "collapsed")
            return lap + jnp.sum(jnp.sin(jnp.pi * x))  # -Delta u = g

        return jnp.mean(jax.vmap(residual)(xs) ** 2)

    return loss, (flat, xs)


def _taylor_order(K: int, dtype: Any, rng: np.random.Generator, width: int):
    params = mlp_params(8, width, 2, dtype, rng)
    x = jnp.asarray(rng.uniform(-1, 1, size=8), dtype)
    v = jnp.asarray(rng.normal(size=8) / np.sqrt(8), dtype)

    def kth(x: Any, v: Any) -> Any:
        return directional(lambda z: mlp(params, z), x, v, K)

    return kth, (x, v)


def _vmc(n: int, dtype: Any, rng: np.random.Generator, width: int):
    params = mlp_params(3, width, 2, dtype, rng)
    w_out = jnp.asarray(rng.normal(size=(width, n)) / np.sqrt(width), dtype)
    r = jnp.asarray(rng.normal(size=(n, 3)), dtype)

    def orbitals(ri: Any) -> Any:
        h = ri
        for w, b in params[:-1]:
            h = jnp.tanh(h @ w + b)
        return (h @ w_out) * jnp.exp(-0.5 * jnp.sum(ri * ri))

    def log_psi(r: Any) -> Any:
        return jnp.linalg.slogdet(jax.vmap(orbitals)(r))[1]

    return log_psi, (r,)


for _problem in (
    Problem(
        "pinn-mlp",
        "PINN-style MLP u: R^d -> R (width 32, depth 3), its gradient in x",
        "d (input dimension)",
        (2, 16, 128, 1_000),
        _pinn,
        {"width": 32, "depth": 3, "activation": "tanh"},
    ),
    Problem(
        "poisson-loss",
        "Poisson residual loss mean (Delta u + g)^2 over 8 points (Laplacian by collapsed "
        "Taylor mode inside), its gradient in the MLP's parameters",
        "d (input dimension)",
        (2, 8, 32),
        _poisson,
        {"width": 16, "depth": 2, "activation": "tanh", "batch": 8},
    ),
    Problem(
        "taylor-order",
        "K-th directional derivative of an MLP R^8 -> R (width 16) by Taylor mode, its "
        "gradient in the point",
        "K (order)",
        (1, 2, 3, 4, 5, 6),
        _taylor_order,
        {"width": 16},
    ),
    Problem(
        "vmc-logpsi",
        "VMC log-wavefunction log|det phi_j(r_i)| of n particles in 3-D (MLP orbitals)",
        "n (particles)",
        (2, 4, 8),
        _vmc,
        {"width": 16},
    ),
):
    register_problem(_problem)
