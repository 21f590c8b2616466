"""Sharding invariance: the gradient sharded over a mesh is the gradient on one device.

:func:`check_invariance` computes a derivative unsharded (one device) and sharded (the mesh)
and names the first parameter leaf where they differ: the bugs a gradient check on one device
cannot see (a ``sum`` where a mean over the data axis was meant, a custom rule without its
``psum``, a replicated parameter counted once per device, a ``shard_map`` whose ``out_specs``
claims replication of a value that varies). A function with a ``mesh`` parameter is called
with a one-device mesh for the unsharded derivative and with the checked mesh for the sharded
one; :data:`SEEDED_BUGS` holds such bugs and their fixes. ``check_grads(f, args, mesh=...)``
calls :func:`check_invariance`.

Example:
    >>> import jax.numpy as jnp
    >>> from diffkit.testing import check_invariance
    >>> check_invariance(lambda w, x: jnp.mean((x @ w) ** 2), (jnp.ones(3), jnp.ones((4, 3))), 1)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from diffkit._core.errors import GradCheckError
from diffkit._core.registry import get
from diffkit.accuracy import rho
from diffkit.sharding import AXIS, device_mesh, place

__all__ = ["INVARIANCE_TOL", "SEEDED_BUGS", "check_invariance"]

#: rho between the sharded and the unsharded derivative that counts as a difference: the
#: sum of a sharded reduction runs in another order, which moves the last digits only.
INVARIANCE_TOL = {"float64": 1e-10, "float32": 1e-4}


def _derivative(method: str | None, fun: Callable, argnums: int) -> Callable:
    if method is None:
        return jax.grad(fun, argnums=argnums)
    return get(method).grad(fun, argnums=argnums)


def _bind_mesh(f: Callable, mesh: Mesh) -> Callable:
    try:
        takes_mesh = "mesh" in inspect.signature(f).parameters
    except (TypeError, ValueError):
        takes_mesh = False
    return (lambda *a: f(*a, mesh=mesh)) if takes_mesh else f


def check_invariance(
    f: Callable,
    args: Sequence[Any],
    mesh: int | Mesh,
    *,
    specs: Any = None,
    methods: Iterable[str | None] | None = None,
    argnums: int = 0,
    rtol: float | None = None,
) -> None:
    """Check that the gradient of scalar ``f`` for ``args[argnums]`` is the same sharded over
    ``mesh`` as on one device; silent on success.

    The unsharded gradient runs on one device (``f`` called with ``mesh=`` a one-device mesh
    if it takes a ``mesh`` parameter); the sharded one with ``args`` placed on ``mesh`` by
    ``specs`` (default :func:`default_specs`) and ``f`` given that mesh. ``methods``: names of
    differentiators, None for ``jax.grad`` (the default: ``[None]``). ``rtol``: largest rho
    allowed (default :data:`INVARIANCE_TOL` of the gradient's dtype).

    Raises:
        GradCheckError: naming the method and the first parameter leaf that differs.

    Example:
        >>> import jax.numpy as jnp
        >>> check_invariance(lambda w: jnp.sum(jnp.sin(w)), (jnp.ones(4),), 1, methods=["tape"])
    """
    mesh = device_mesh(mesh)
    one = device_mesh(1)
    args = tuple(args)
    sharded_args = place(args, mesh, specs)
    local_args = place(args, one, specs and jax.tree_util.tree_map(lambda _: P(), specs))
    for method in list(methods) if methods is not None else [None]:
        name = method or "jax.grad"
        unsharded = jax.jit(_derivative(method, _bind_mesh(f, one), argnums))(*local_args)
        sharded = jax.jit(_derivative(method, _bind_mesh(f, mesh), argnums))(*sharded_args)
        leaves = jax.tree_util.tree_flatten_with_path(unsharded)[0]
        widest = max((u.dtype for _, u in leaves), key=lambda d: d.itemsize)
        tol = rtol if rtol is not None else INVARIANCE_TOL.get(str(widest), 1e-4)
        for (path, u), s in zip(leaves, jax.tree_util.tree_leaves(sharded), strict=True):
            err = rho(np.asarray(s), np.asarray(u))
            if not err <= tol:
                where = f"args[{argnums}]{jax.tree_util.keystr(path)}"
                raise GradCheckError(
                    f"{name}: the gradient of {where} changes when sharded over "
                    f"{dict(mesh.shape)}: rho {err:.3g} > {tol:.1g} against one device"
                )


# ------------------------------------------------------------ seeded bugs


def _sum_over_data(w, x, mesh):  # the per-device means summed: the gradient grows with d
    body = lambda w, x: lax.psum(jnp.mean(jnp.tanh(x @ w) ** 2), AXIS)  # noqa: E731
    return jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())(w, x)


def _mean_over_data(w, x, mesh):
    body = lambda w, x: lax.pmean(jnp.mean(jnp.tanh(x @ w) ** 2), AXIS)  # noqa: E731
    return jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())(w, x)


def _project(mesh: Mesh, psum_in_rule: bool) -> Callable:
    """``x @ w`` with ``x`` split by rows over ``mesh``, with a custom VJP whose ``w``
    cotangent must be summed over the devices: each holds the part from its own rows."""

    def local(w, x):
        return x @ w

    @jax.custom_vjp
    def project(w, x):
        return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS))(w, x)

    def fwd(w, x):
        return project(w, x), (w, x)

    def bwd(res, y_bar):
        w, x = res

        def w_part(x, y_bar):
            g = x.T @ y_bar
            return lax.psum(g, AXIS) if psum_in_rule else g  # without: this device's part

        w_bar = jax.shard_map(
            w_part, mesh=mesh, in_specs=(P(AXIS), P(AXIS)), out_specs=P(), check_vma=False
        )(x, y_bar)
        return w_bar, y_bar @ w.T

    project.defvjp(fwd, bwd)
    return project


def _custom_rule(psum: bool) -> Callable:
    def loss(w, x, mesh):
        return jnp.sum(jnp.tanh(_project(mesh, psum)(w, x)))

    return loss


def _penalty_per_device(w, x, mesh):  # the penalty on w added on every device, then summed
    def body(w, x):
        return lax.psum(jnp.sum(jnp.tanh(x @ w)) + 0.5 * jnp.sum(w**2), AXIS)

    return jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())(w, x)


def _penalty_once(w, x, mesh):
    body = lambda w, x: lax.psum(jnp.sum(jnp.tanh(x @ w)), AXIS)  # noqa: E731
    data = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())(w, x)
    return data + 0.5 * jnp.sum(w**2)


def _out_specs(replicated: bool) -> Callable:
    def loss(w, x, mesh):
        def body(w, x):
            local = jnp.sum(jnp.tanh(x @ w))
            return local if replicated else local[None]

        spec = P() if replicated else P(AXIS)
        out = jax.shard_map(
            body, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=spec, check_vma=False
        )(w, x)
        return jnp.sum(out)  # wrong: one device's partial sum; right: the sum of every part

    return loss


#: Seeded sharding bugs, each as ``name -> (buggy, correct)``: functions ``f(w, x, mesh)``
#: of a weight vector ``w`` (3,) or matrix (3, 2) and a batch ``x`` (8, 3) split over the
#: mesh. :func:`check_invariance` must refuse each buggy one and pass each correct one.
SEEDED_BUGS: dict[str, tuple[Callable, Callable]] = {
    "sum instead of mean over the data axis": (_sum_over_data, _mean_over_data),
    "custom rule without its psum": (_custom_rule(False), _custom_rule(True)),
    "replicated parameter counted once per device": (_penalty_per_device, _penalty_once),
    "shard_map out_specs claims a varying value replicated": (_out_specs(True), _out_specs(False)),
}
