"""Functions over many devices: meshes, the sharded MLP problem, sharding-invariance checks,
the collectives of compiled programs, and scaling with the device count.

* :func:`device_mesh` makes a one-axis mesh (``"data"``) over the first ``devices`` devices;
  :func:`place` lays arguments out on it (:func:`default_specs`: a leaf whose leading
  dimension the device count divides is split along it, the others replicated).
* ``mlp-sharded`` (registered with the harness's problems): the ``mlp`` loss with its flat
  parameter vector split over ``devices`` devices (padded to a multiple of them; the padding
  is unused) and its batch split likewise, jitted with those ``NamedSharding`` inputs.
* :func:`check_invariance` computes a derivative unsharded (one device) and sharded (the
  mesh) and names the first parameter leaf where they differ: the bugs a gradient check on
  one device cannot see (a ``sum`` where a mean over the data axis was meant, a custom rule
  without its ``psum``, a replicated parameter counted once per device, a ``shard_map``
  whose ``out_specs`` claims replication of a value that varies). A function with a
  ``mesh`` parameter is called with a one-device mesh for the unsharded derivative and with
  the checked mesh for the sharded one; :data:`SEEDED_BUGS` holds such bugs and their fixes.
* :func:`collectives` lists the collectives of a compiled program (from its HLO text);
  :func:`scaling` turns sweep records over device counts into time and memory per device
  and strong/weak scaling efficiencies.

Several devices on a CPU are simulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
set before JAX starts.

Example:
    >>> import jax.numpy as jnp
    >>> from diffkit.sharding import check_invariance
    >>> check_invariance(lambda w, x: jnp.mean((x @ w) ** 2), (jnp.ones(3), jnp.ones((4, 3))), 1)
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from diffkit._errors import DiffkitError
from diffkit.accuracy import rho

__all__ = [
    "SEEDED_BUGS",
    "check_invariance",
    "collectives",
    "default_specs",
    "device_mesh",
    "place",
    "scaling",
    "scaling_text",
    "sharded_problems",
]

#: The mesh axis every helper here splits over.
AXIS = "data"

#: rho between the sharded and the unsharded derivative that counts as a difference: the
#: sum of a sharded reduction runs in another order, which moves the last digits only.
INVARIANCE_TOL = {"float64": 1e-10, "float32": 1e-4}


def device_mesh(devices: int | Mesh, axis: str = AXIS) -> Mesh:
    """A one-axis mesh over the first ``devices`` devices (a Mesh is returned as it is).

    Example:
        >>> dict(device_mesh(1).shape)
        {'data': 1}
    """
    if isinstance(devices, Mesh):
        return devices
    if not isinstance(devices, int) or devices < 1:
        raise DiffkitError(f"devices must be a positive int or a jax Mesh, got {devices!r}")
    have = jax.devices()
    if devices > len(have):
        raise DiffkitError(
            f"{devices} devices asked for, {len(have)} {have[0].platform} device(s) present; on "
            f"a CPU set XLA_FLAGS=--xla_force_host_platform_device_count={devices} before "
            "JAX starts (the diffkit command does this for --devices)"
        )
    return Mesh(np.array(have[:devices]), (axis,), axis_types=(AxisType.Auto,))


def default_specs(args: Any, mesh: Mesh) -> Any:
    """A PartitionSpec per array leaf: split along the leading dimension over every mesh axis
    when the device count divides it, else replicated.

    Example:
        >>> default_specs((jnp.ones(4), jnp.ones(3)), device_mesh(1)) == (P("data"), P("data"))
        True
    """
    size = mesh.size

    def spec(a: Any) -> P:
        shape = np.shape(a)
        return P(mesh.axis_names) if shape and shape[0] % size == 0 else P()

    return jax.tree_util.tree_map(spec, args)


def place(args: Any, mesh: Mesh, specs: Any = None) -> Any:
    """``args`` put on ``mesh`` with ``specs`` (default: :func:`default_specs`).

    Example:
        >>> x = place(jnp.ones(4), device_mesh(1))
        >>> x.sharding.spec == P("data")
        True
    """
    specs = default_specs(args, mesh) if specs is None else specs
    return jax.tree_util.tree_map(
        lambda a, s: jax.device_put(a, NamedSharding(mesh, s)),
        args,
        specs,
        is_leaf=lambda s: isinstance(s, P),
    )


# ------------------------------------------------------------ the sharded MLP problem


def sharded_problems() -> list[Any]:
    """The problem families over several devices (``problems.py`` registers them).

    Example:
        >>> [p.name for p in sharded_problems()]
        ['mlp-sharded']
    """
    from diffkit.harness.problems import Problem, _mlp  # lazy: problems.py imports this module

    def mlp_sharded(size, dtype, rng, devices, depth, activation, batch, inputs):
        mesh = device_mesh(devices)
        if batch % mesh.size:
            raise DiffkitError(
                f"mlp-sharded: batch {batch} is not divisible by {mesh.size} devices; choose a "
                "batch that is (batch=...)"
            )
        loss, (theta, x, y) = _mlp(size, dtype, rng, depth, activation, batch, inputs)
        theta = np.concatenate([theta, np.zeros(-theta.size % mesh.size, theta.dtype)])
        specs = (P(AXIS), P(AXIS, None), P(AXIS))
        shardings = tuple(NamedSharding(mesh, s) for s in specs)

        def sharded(theta, x, y):  # the layout stated in the program too, as FSDP code does
            theta, x, y = (
                lax.with_sharding_constraint(a, s)
                for a, s in zip((theta, x, y), shardings, strict=True)
            )
            return loss(theta, x, y)

        fun = jax.jit(sharded, in_shardings=shardings, out_shardings=NamedSharding(mesh, P()))
        return fun, place((theta, x, y), mesh, specs)

    return [
        Problem(
            "mlp-sharded",
            "the mlp loss with parameters and batch split over `devices` devices (NamedSharding)",
            "requested n (width chosen)",
            (10, 100, 1_000, 10_000, 100_000),
            mlp_sharded,
            {"devices": 1, "depth": 2, "activation": "tanh", "batch": 32, "inputs": 4},
        )
    ]


# ------------------------------------------------------------ invariance


def _derivative(method: str | None, fun: Callable, argnums: int) -> Callable:
    if method is None:
        return jax.grad(fun, argnums=argnums)
    from diffkit import get

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
    from diffkit.testing import GradCheckError  # lazy: check_grads(mesh=) calls this function

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


# ------------------------------------------------------------ compiled programs

_COLLECTIVE = re.compile(
    r"=\s*(\S+)\s+(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
    r"(?:-start)?\("
)


def collectives(compiled: Any) -> list[tuple[str, str]]:
    """``(op, result shape)`` of each collective in a compiled program (or its HLO text),
    e.g. ``("all-gather", "f32[1024]{0}")``.

    Example:
        >>> collectives(jax.jit(jnp.sin).lower(1.0).compile())
        []
    """
    text = compiled if isinstance(compiled, str) else compiled.as_text()
    return [(op, shape) for shape, op in _COLLECTIVE.findall(text)]


def full_gathers(compiled: Any, n: int) -> int:
    """How many all-gathers in ``compiled`` produce an array of ``n`` or more entries (the
    whole parameter vector, gathered).

    Example:
        >>> full_gathers("%a = f32[12]{0} all-gather(f32[3]{0} %p)", 12)
        1
    """
    count = 0
    for op, shape in collectives(compiled):
        dims = re.findall(r"\[([\d,]*)\]", shape)
        entries = math.prod(int(d) for d in dims[0].split(",") if d) if dims else 0
        count += op == "all-gather" and entries >= n
    return count


# ------------------------------------------------------------ scaling


def scaling(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, dtype, size and device count of ``mlp-sharded``-like records (problem
    option ``devices``): median time, XLA's memory per device, the strong-scaling efficiency
    ``t(1) / (d t(d))`` at the same size and the weak-scaling efficiency ``t(s, 1) / t(d s, d)``
    where the size ``d s`` was measured on ``d`` devices.

    Example:
        >>> recs = [{"method": "tape", "dtype": "float32", "size": 100, "outcome": "ok",
        ...          "problem_options": {"devices": d}, "time_median": t, "xla_bytes": 8}
        ...         for d, t in ((1, 4.0), (2, 2.5))]
        >>> [round(r["strong_efficiency"], 2) for r in scaling(recs)]
        [1.0, 0.8]
    """
    ok = [r for r in records if r.get("outcome") == "ok" and "devices" in r["problem_options"]]
    time = {
        (r["method"], r["dtype"], r["size"], r["problem_options"]["devices"]): r["time_median"]
        for r in ok
    }
    rows = []
    for (method, dtype, size, d), t in sorted(time.items()):
        one = time.get((method, dtype, size, 1))
        base = time.get((method, dtype, size // d, 1)) if size % d == 0 else None
        rec = next(
            r
            for r in ok
            if (r["method"], r["dtype"], r["size"], r["problem_options"]["devices"])
            == (method, dtype, size, d)
        )
        rows.append(
            {
                "method": method,
                "dtype": dtype,
                "size": size,
                "devices": d,
                "time_median": t,
                "bytes_per_device": rec.get("xla_bytes"),
                "strong_efficiency": one / (d * t) if one else None,
                "weak_efficiency": base / t if base else None,
            }
        )
    return rows


def scaling_text(records: Iterable[dict[str, Any]]) -> str:
    """:func:`scaling` as a plain-text table (what ``diffkit compare --devices`` prints).

    Example:
        >>> recs = [{"method": "tape", "dtype": "float32", "size": 100, "outcome": "ok",
        ...          "problem_options": {"devices": 1}, "time_median": 4e-3, "xla_bytes": 8}]
        >>> print(scaling_text(recs).splitlines()[1])
        tape     float32    100       1     4.00 ms         8      1.00    1.00
    """
    lines = [
        f"{'method':8} {'dtype':7} {'size':>6} {'devices':>7} {'time':>11} {'B/device':>9} "
        f"{'strong':>9} {'weak':>7}"
    ]
    for r in scaling(records):
        eff = [
            f"{e:.2f}" if e is not None else "-"
            for e in (r["strong_efficiency"], r["weak_efficiency"])
        ]
        lines.append(
            f"{r['method']:8} {r['dtype']:7} {r['size']:>6} {r['devices']:>7} "
            f"{r['time_median'] * 1e3:>8.2f} ms {r['bytes_per_device'] or '-':>9} "
            f"{eff[0]:>9} {eff[1]:>7}"
        )
    return "\n".join(lines)
