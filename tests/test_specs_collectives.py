"""Spec rows for the collectives section of the rule table (:mod:`diffkit.rules.collectives`):
each row is a ``shard_map`` over a 4-device mesh, checked by the one check of the spec table
(``check_rows``: dual's JVP, tape's VJP and dual-over-tape against JAX's, float64 and float32).

Collectives need several devices, which the CPU backend simulates only when told before JAX
starts (``XLA_FLAGS=--xla_force_host_platform_device_count``): the rows run in a subprocess
(this file as a script), so the rest of the suite keeps its one device. Each row and dtype is
a test of its own (``test_collective_rows_match_jax[float64-ppermute]``); the rows selected in
a pytest process are checked by one subprocess, started by the first of them to run.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from _spec import DTYPES, Spec, check_rows, param_id, row_params
from jax import lax
from jax._src.lax.parallel import all_gather_invariant  # not public in jax.lax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

DEVICES = 4


def _specs() -> list[Spec]:
    def sm(body, in_specs, out_specs, check_vma=True):
        def f(*args):  # the mesh is made when called: importing needs one device only
            mesh = jax.make_mesh((DEVICES,), ("d",), axis_types=(AxisType.Auto,))
            return jax.shard_map(
                body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check_vma
            )(*args)

        return f

    ring = [(i, (i + 1) % DEVICES) for i in range(DEVICES)]
    X = (("real", (8, 3)),)
    XW = (("real", (8, 3)), ("real", (3,)))
    return [
        # psum of a varying value (typed: psum_invariant), replicated weights (pvary)
        Spec(
            "psum_invariant",
            sm(lambda x, w: lax.psum(jnp.sin(x) * w, "d"), (P("d"), P()), P()),
            XW,
        ),
        Spec("pvary", sm(lambda x, w: jnp.tanh(x * w), (P("d"), P()), P("d")), XW),
        # untyped (check_vma=False): psum transposes to psum, JAX's convention there
        Spec(
            "psum",
            sm(lambda x, w: lax.psum(jnp.sin(x) * w, "d"), (P("d"), P()), P(), False),
            XW,
            label="unchecked",
        ),
        Spec(
            "ppermute",
            sm(lambda x: jnp.cos(lax.ppermute(x**2, "d", perm=ring)), P("d"), P("d")),
            X,
        ),
        Spec(
            "all_gather",
            sm(lambda x: jnp.sin(lax.all_gather(x, "d", axis=0, tiled=True)) * 2, P("d"), P("d")),
            X,
        ),
        Spec(
            "all_gather",
            sm(lambda x: lax.all_gather(jnp.exp(x), "d", axis=1), P("d"), P("d")),
            X,
            label="stacked",
        ),
        Spec(
            "all_gather_invariant",
            sm(lambda x: all_gather_invariant(x**2, "d", axis=0, tiled=True), P("d"), P()),
            X,
        ),
        Spec(
            "reduce_scatter",
            sm(lambda x: lax.psum_scatter(x**3, "d", scatter_dimension=1, tiled=True), P(), P("d")),
            (("real", (2, 8)),),
        ),
        Spec(
            "all_to_all",
            sm(lambda x: jnp.sin(lax.all_to_all(x, "d", 1, 0, tiled=True)), P("d"), P("d")),
            (("real", (8, 4)),),
        ),
        Spec(
            "shard_map",
            sm(
                lambda x, w: (jnp.tanh(x @ w), lax.psum(jnp.sum(x), "d")),
                (P("d"), P()),
                (P("d"), P()),
            ),
            (("real", (8, 3)), ("real", (3, 2))),
            label="two-outputs",
        ),
    ]


SECTIONS: dict[str, list[Spec]] = {"collectives": _specs()}


def main(keys: list[str]) -> None:
    """Check the rows named ``dtype:id`` (every row in both dtypes when none is named); print
    one JSON object, each key's failures (empty when the row holds)."""
    assert jax.device_count() == DEVICES, jax.devices()
    rows = {param_id(spec): spec for spec in SECTIONS["collectives"]}
    keys = keys or [f"{d}:{r}" for d in ("float32", "float64") for r in rows]
    failures = {}
    for key in keys:
        dtype, row = key.split(":", 1)
        with jax.enable_x64(dtype == "float64"):
            failures[key] = check_rows([rows[row]], dtype)
    print(json.dumps(failures))


@functools.cache
def _check(keys: tuple[str, ...]) -> dict[str, list[str]]:
    here = Path(__file__).parent
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "  # the suite's (tests/conftest.py)
        f"--xla_force_host_platform_device_count={DEVICES}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)]),
    }
    out = subprocess.run(
        [sys.executable, str(Path(__file__)), *keys], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("spec", row_params(SECTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_collective_rows_match_jax(spec: Spec, dtype: str, request: pytest.FixtureRequest) -> None:
    """The row against jax.jvp / jax.vjp, first and second order, on 4 simulated devices."""
    selected = tuple(
        f"{item.callspec.params['dtype']}:{param_id(item.callspec.params['spec'])}"
        for item in request.session.items
        if getattr(item, "function", None) is test_collective_rows_match_jax
    )
    failures = _check(selected)[f"{dtype}:{param_id(spec)}"]
    assert not failures, "\n".join(failures)


if __name__ == "__main__":
    main(sys.argv[1:])
