"""Sharded functions and sharding-invariance checks (:mod:`diffkit.sharding`) on 8 simulated
CPU devices.

The checks that need several devices run in one subprocess (this file as a script, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before JAX starts), which prints
its measurements as JSON; the tests below assert on them, so the rest of the suite keeps its
one device. References are independent of the sharded code: the same function on one device
(``devices=1``), JAX's own ``jax.grad`` / ``jax.jvp``, and the compiled HLO of JAX's own
derivative.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

from diffkit import sharding
from diffkit.testing import SEEDED_BUGS, GradCheckError, check_grads, check_invariance

DEVICES = 8
SIZE = 300  # requested n of the sharded MLP (tiny: correctness only)
METHODS = ("jax-rev", "tape", "jax-fwd", "dual", "fd")


def _measure() -> dict:
    """Run in the subprocess: every measurement the tests assert on."""
    import jax
    import numpy as np

    import diffkit as dk
    from diffkit.accuracy import rho

    assert jax.device_count() == DEVICES, jax.devices()
    out: dict = {"mlp": {}, "bugs": {}, "check_grads": {}}
    prob = dk.harness.get_problem("mlp-sharded")
    with jax.enable_x64(True):
        sharded = prob.with_options(devices=DEVICES).build(SIZE, "float64")
        single = prob.with_options(devices=1).build(SIZE, "float64")
        for method in METHODS:
            d = dk.get(method)
            compiled = jax.jit(d.grad(sharded.fun)).lower(*sharded.args).compile()
            g = np.asarray(compiled(*sharded.args))
            g1 = np.asarray(jax.jit(d.grad(single.fun))(*single.args))
            out["mlp"][method] = {
                "rho": rho(g[: single.n], g1),
                "padding": float(np.abs(g[single.n :]).max(initial=0.0)),
                "full_gathers": sharding.full_gathers(compiled, sharded.n),
                "spec": str(compiled(*sharded.args).sharding.spec),
                "n": sharded.n,
            }
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            w = jnp.asarray(rng.normal(size=(3, 2)), dtype)
            x = jnp.asarray(rng.normal(size=(8, 3)), dtype)
            for name, (buggy, correct) in SEEDED_BUGS.items():
                for label, f in (("buggy", buggy), ("correct", correct)):
                    try:
                        check_invariance(f, (w, x), DEVICES, methods=["tape"])
                        found = None
                    except GradCheckError as e:
                        found = str(e)
                    out["bugs"][f"{dtype}|{name}|{label}"] = found
    mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jax.jit(  # the layout stated only by jit's shardings, which inlining must keep
        lambda v, z: jnp.sum(jnp.tanh(z * v) ** 2), in_shardings=(split, split), out_shardings=whole
    )
    v, z = jnp.linspace(-1.0, 1.0, 2 * DEVICES), jnp.ones(2 * DEVICES)
    out["jit"] = {}
    for method in ("jax-rev", "tape", "jax-fwd", "dual"):
        g = jax.jit(dk.get(method).grad(jitted))(v, z)
        ref = jax.grad(lambda v, z: jnp.sum(jnp.tanh(z * v) ** 2))(v, z)
        out["jit"][method] = {"spec": str(g.sharding.spec), "err": float(jnp.abs(g - ref).max())}
    buggy, correct = SEEDED_BUGS["sum instead of mean over the data axis"]
    with jax.enable_x64(True):
        for label, f in (("buggy", buggy), ("correct", correct)):
            try:
                check_grads(f, (w, x), mesh=mesh)
                out["check_grads"][label] = None
            except GradCheckError as e:
                out["check_grads"][label] = str(e)
    return out


@functools.cache
def measured() -> dict:
    here = Path(__file__).parent
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "  # the suite's (tests/conftest.py)
        f"--xla_force_host_platform_device_count={DEVICES}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)]),
    }
    run = subprocess.run(
        [sys.executable, str(Path(__file__))], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


#: The tests reading ``measured()`` share one subprocess on 8 simulated devices (~5 s on 2
#: cores, paid by the first of them): slow, run by the full suite.
EIGHT_DEVICES = pytest.mark.slow


@EIGHT_DEVICES
@pytest.mark.parametrize("method", ["jax-rev", "tape", "jax-fwd", "dual"])
def test_sharded_mlp_gradient_equals_the_unsharded_one(method: str) -> None:
    got = measured()["mlp"][method]
    assert got["rho"] <= 1e-12, got
    assert got["padding"] == 0.0  # the unused padding of the split vector gets no gradient


@EIGHT_DEVICES
def test_finite_differences_sharded_differ_only_by_rounding_over_the_step() -> None:
    # fd divides f(x + h v) - f(x - h v) by h: a reduction summed in another order on 8
    # devices moves f's last digits, amplified by 1/h; far below fd's own truncation error.
    assert measured()["mlp"]["fd"]["rho"] <= 1e-8


@EIGHT_DEVICES
def test_hand_written_gradients_gather_no_more_than_jax() -> None:
    mlp = measured()["mlp"]
    assert mlp["tape"]["full_gathers"] <= mlp["jax-rev"]["full_gathers"]
    assert mlp["dual"]["full_gathers"] <= mlp["jax-fwd"]["full_gathers"]
    # reverse mode leaves the gradient split over the devices as the parameters are
    assert mlp["tape"]["spec"] == mlp["jax-rev"]["spec"] == "P('data',)"


@EIGHT_DEVICES
def test_jit_shardings_reach_the_hand_written_derivatives() -> None:
    """A function jitted with in/out shardings: dual and tape inline its body, keeping the
    shardings as constraints, so their gradients are laid out as JAX's own are."""
    got = measured()["jit"]
    assert all(r["err"] <= 1e-6 for r in got.values()), got
    assert got["tape"]["spec"] == got["jax-rev"]["spec"] == "P('data',)"
    assert got["dual"]["spec"] == got["jax-fwd"]["spec"]


@EIGHT_DEVICES
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bug", list(SEEDED_BUGS))
def test_seeded_sharding_bugs_are_caught_and_correct_code_passes(bug: str, dtype: str) -> None:
    bugs = measured()["bugs"]
    caught = bugs[f"{dtype}|{bug}|buggy"]
    assert caught is not None and "args[0]" in caught and "sharded over" in caught
    assert bugs[f"{dtype}|{bug}|correct"] is None


@EIGHT_DEVICES
def test_check_grads_with_a_mesh_catches_and_passes() -> None:
    found = measured()["check_grads"]
    assert found["buggy"] is not None and found["buggy"].startswith("jax.grad:")
    assert found["correct"] is None


def test_one_device_mesh_and_bad_input() -> None:
    f = lambda w, x: jnp.mean(jnp.tanh(x @ w))  # noqa: E731
    check_grads(f, (jnp.ones(3), jnp.ones((4, 3))), mesh=1, methods=["tape"])
    with pytest.raises(Exception, match="XLA_FLAGS=--xla_force_host_platform_device_count=64"):
        sharding.device_mesh(64)
    with pytest.raises(Exception, match="positive int or a jax Mesh"):
        sharding.device_mesh(0)


def test_scaling_efficiencies() -> None:
    recs = [
        {"method": "tape", "dtype": "float32", "size": s, "outcome": "ok", "xla_bytes": 1,
         "problem_options": {"devices": d}, "time_median": t}
        for s, d, t in ((100, 1, 4.0), (200, 1, 8.0), (200, 2, 5.0), (100, 2, 2.5))
    ]  # fmt: skip
    rows = {(r["size"], r["devices"]): r for r in sharding.scaling(recs)}
    assert rows[(200, 2)]["strong_efficiency"] == pytest.approx(8.0 / (2 * 5.0))
    assert rows[(200, 2)]["weak_efficiency"] == pytest.approx(4.0 / 5.0)
    assert rows[(100, 1)]["strong_efficiency"] == 1.0


if __name__ == "__main__":
    print(json.dumps(_measure()))


def test_pytest_option_sets_the_mesh() -> None:
    from types import SimpleNamespace

    from diffkit.pytest_plugin import gradcheck_options

    ini = {"diffkit_gradcheck_mesh": "8"}
    config = SimpleNamespace(getini=lambda name: ini.get(name))
    node = SimpleNamespace(iter_markers=lambda name: iter(()))
    assert gradcheck_options(config, node) == {"mesh": 8}
