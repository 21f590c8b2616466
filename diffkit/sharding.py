"""Functions over many devices: meshes and layouts, the collectives of compiled programs, and
scaling with the device count. A leaf: it imports nothing else of diffkit but its errors.

* :func:`device_mesh` makes a one-axis mesh (``"data"``) over the first ``devices`` devices;
  :func:`place` lays arguments out on it (:func:`default_specs`: a leaf whose leading
  dimension the device count divides is split along it, the others replicated).
* :func:`collectives` lists the collectives of a compiled program (from its HLO text);
  :func:`full_gathers` counts the all-gathers of a whole parameter vector;
  :func:`scaling` turns sweep records over device counts into time and memory per device
  and strong/weak scaling efficiencies.

What uses these lives with its subsystem: the ``mlp-sharded`` problem in
:mod:`diffkit.harness.families`, and the sharding-invariance check with its seeded bugs in
:mod:`diffkit.testing.invariance` (``check_grads(..., mesh=...)``).

Several devices on a CPU are simulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
set before JAX starts.

Example:
    >>> from diffkit.sharding import device_mesh
    >>> dict(device_mesh(1).shape)
    {'data': 1}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from diffkit._core.errors import DiffkitError

__all__ = [
    "AXIS",
    "collectives",
    "default_specs",
    "device_mesh",
    "full_gathers",
    "place",
    "scaling",
    "scaling_text",
]

#: The mesh axis every helper here splits over.
AXIS = "data"


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
        >>> import jax.numpy as jnp
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
        >>> import jax.numpy as jnp
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


# ------------------------------------------------------------ compiled programs

_COLLECTIVE = re.compile(
    r"=\s*(\S+)\s+(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
    r"(?:-start)?\("
)


def collectives(compiled: Any) -> list[tuple[str, str]]:
    """``(op, result shape)`` of each collective in a compiled program (or its HLO text),
    e.g. ``("all-gather", "f32[1024]{0}")``.

    Example:
        >>> import jax, jax.numpy as jnp
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


def scaling(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
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


def scaling_text(records: Iterable[Mapping[str, Any]]) -> str:
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
