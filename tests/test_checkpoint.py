"""Checkpointing schedules (diffkit.checkpoint) and gradient accumulation.

Plans are checked by simulating them and against Griewank's optimum computed here by brute
force; gradients of every schedule against store-all and jax.grad in float64; the tape's
step evaluations are counted while the compiled program runs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import diffkit as dk
from diffkit import checkpoint as ck
from diffkit.accuracy import rho_tree


@functools.cache
def optimum(length: int, snapshots: int) -> int:
    """Fewest advances reversing ``length`` steps from a stored start with ``snapshots``
    slots (the start's included), by exhaustive recursion over the first split."""
    if length == 1:
        return 0
    if snapshots == 1:
        return length - 1 + optimum(length - 1, 1)
    return min(
        m + optimum(length - m, snapshots - 1) + optimum(m, snapshots) for m in range(1, length)
    )


def simulate(plan: ck.Plan) -> None:
    """Run a plan on step numbers: every step is recorded once, last first, from its own
    state, and no slot outside the plan's is used."""
    slots = {s: j for j, s in enumerate(plan.forward) if s >= 0}
    assert all(0 <= s < plan.slots for s in slots)
    work, taped = plan.length - 1, []
    for kind, arg in plan.actions:
        if kind == ck.ADVANCE:
            assert work == arg
            work += 1
        elif kind == ck.SNAP:
            assert 0 <= arg < plan.slots
            slots[arg] = work
        elif kind == ck.RESTORE:
            work = slots[arg]
        else:
            assert work == arg
            taped.append(arg)
    assert taped == list(range(plan.length - 1, -1, -1))


@pytest.mark.parametrize("snapshots", [1, 2, 3, 5])
def test_revolve_is_the_binomial_optimum(snapshots):
    for length in range(1, 31):
        plan = ck.revolve(snapshots).plan(length)
        simulate(plan)
        assert plan.advances == optimum(length, snapshots) == ck.revolve_steps(length, snapshots)
        assert plan.slots == snapshots


def test_revolve_counts_at_depth():
    # t = r L - beta(c + 1, r - 1); for L = 1000, c = 10: r = 3 (beta(10, 3) = 286 < 1000 <=
    # beta(10, 4) = 1001), t = 4 * 1000 - binom(14, 3) = 3636
    plan = ck.revolve(10).plan(1000)
    assert (plan.advances, plan.recomputed) == (3636, 2637)
    assert ck.repetitions(1000, 10) == 4


@pytest.mark.parametrize("length", [1, 2, 7, 16, 37])
def test_segment_schedules(length):
    for k in (1, 2, 3, 8, 50):
        plan = ck.every(k).plan(length)
        simulate(plan)
        k_ = min(k, length)
        n_seg = -(-length // k_)
        assert plan.recomputed == (n_seg - 1) * (k_ - 1)  # each segment but the last, once
        assert plan.slots == max(1, n_seg + max(0, k_ - 2))
    sqrt = ck.parse("sqrt").plan(length)
    simulate(sqrt)
    assert sqrt.recomputed <= length - 1  # at most one extra forward
    assert ck.parse("store-all").plan(length).recomputed == 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(checkpoint="revolve"), "needs a budget"),
        (dict(checkpoint="revolve", budget=0), "positive int"),
        (dict(checkpoint="revolve(0)"), "budget >= 1"),
        (dict(checkpoint="every(0)"), "positive int"),
        (dict(checkpoint="every"), "needs its k"),
        (dict(checkpoint="fastest"), "unknown checkpoint schedule"),
        (dict(budget=3), "without a schedule"),
    ],
)
def test_bad_schedules_are_one_line_errors(bad, message):
    with pytest.raises(dk.DiffkitError, match=message) as info:
        dk.get("tape", **bad)
    assert "\n" not in str(info.value)


def test_impossible_budget_is_refused_not_a_wrong_gradient():
    f = lambda x: lax.scan(lambda c, _: (jnp.sin(c), None), x, length=100)[0]  # noqa: E731
    with pytest.raises(dk.DiffkitError, match=r"needs 18 snapshots .* over budget=5") as info:
        dk.get("tape", checkpoint="sqrt", budget=5).grad(f)(1.0)
    assert "\n" not in str(info.value)
    with pytest.raises(dk.DiffkitError, match=r"'store-all' needs 100 snapshots"):
        dk.get("tape", checkpoint="store-all", budget=99).grad(f)(1.0)
    with pytest.raises(dk.DiffkitError, match="tape's own schedule"):
        dk.get("jax-rev", checkpoint="revolve(4)")
    with pytest.raises(dk.DiffkitError, match=r"unknown jax\.checkpoint policy"):
        dk.get("jax-rev", policy="save_everything_please")


def _net(W, U, x0, reverse=False):
    """A scan with a matrix per step (xs), a shared matrix (const), an integer carry and a
    per-step output: every kind of input a step has."""

    def step(carry, w):
        h, i = carry
        h = jnp.tanh(h @ w + 0.1 * (h @ U) * i.astype(h.dtype))
        return (h, i + 1), jnp.sum(h**2)

    (h, _), ys = lax.scan(step, (x0, jnp.int32(0)), W, reverse=reverse)
    return jnp.sum(h**2) + jnp.sum(jnp.sin(ys))


@pytest.fixture(scope="module")
def net():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        W = jnp.asarray(rng.standard_normal((23, 6, 6)) / np.sqrt(6))
        U = jnp.asarray(rng.standard_normal((6, 6)) / np.sqrt(6))
        x0 = jnp.asarray(rng.standard_normal((3, 6)))
    return W, U, x0


@pytest.mark.parametrize(
    "reverse, schedules, policies",
    [
        (False, [ck.every(5), "revolve(3)"], [("dots_saveable", "sqrt")]),
        (True, ["revolve(1)"], []),
    ],
)
def test_every_schedule_equals_store_all(x64, net, reverse, schedules, policies):
    f = functools.partial(_net, reverse=reverse)
    grad = lambda d: jax.jit(d.grad(f, argnums=(0, 1, 2)))(*net)  # noqa: E731
    store_all = grad(dk.get("tape"))
    assert rho_tree(store_all, jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*net)) < 1e-13
    for schedule in schedules:
        assert rho_tree(grad(dk.get("tape", checkpoint=schedule)), store_all) <= 1e-12
    jax_store_all = grad(dk.get("jax-rev")) if policies else None
    for policy, schedule in policies:
        got = grad(dk.get("jax-rev", policy=policy, checkpoint=schedule))
        assert rho_tree(got, jax_store_all) <= 1e-12


def test_schedules_reach_scans_inside_a_jit():
    """A scan inside the user's own jax.jit is checkpointed too: less memory, same gradient."""

    @jax.jit
    def f(x, W):
        return jnp.sum(lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, W)[0] ** 2)

    x, W = jnp.ones((8, 16)), jnp.full((64, 16, 16), 0.05)

    def temp(d):
        compiled = jax.jit(d.grad(f)).lower(x, W).compile()
        return compiled.memory_analysis().temp_size_in_bytes, compiled(x, W)

    (full, g), (kept, g_policy) = (
        temp(dk.get("jax-rev")),
        temp(dk.get("jax-rev", policy="nothing_saveable")),
    )
    (tape, g_tape), (revolve, g_revolve) = (
        temp(dk.get("tape")),
        temp(dk.get("tape", checkpoint="revolve(2)")),
    )
    assert kept < 0.7 * full and revolve < 0.2 * tape
    assert rho_tree([g_policy, g_tape, g_revolve], [g, g, g]) < 1e-6


def test_recomputed_steps_are_counted_at_run_time(x64):
    """Each evaluation of the step body calls back into Python: the first sweep runs L steps,
    the backward sweep records L and recomputes the plan's ``recomputed``."""
    calls = []

    def f(x):
        def step(c, _):
            jax.debug.callback(lambda: calls.append(1))
            return jnp.sin(c) * 1.1, None

        return lax.scan(step, x, length=12)[0]

    for schedule, recomputed in [(None, 0), ("revolve(3)", ck.revolve_steps(12, 3) - 11)]:
        calls.clear()
        g = jax.jit(dk.get("tape", checkpoint=schedule).grad(f))(jnp.float64(0.3))
        jax.block_until_ready(g)
        jax.effects_barrier()
        assert len(calls) == 12 + 12 + recomputed
        assert float(g) == pytest.approx(float(jax.grad(f)(jnp.float64(0.3))), rel=1e-13)


def test_accumulate_equals_the_full_batch_gradient(x64):
    rng = np.random.default_rng(1)
    x, y = jnp.asarray(rng.standard_normal((24, 5))), jnp.asarray(rng.standard_normal(24))
    params = {"w": jnp.asarray(rng.standard_normal(5)), "b": jnp.float64(0.2)}

    def loss(p, batch):
        xb, yb = batch
        return jnp.mean((jnp.tanh(xb @ p["w"]) + p["b"] - yb) ** 2)

    full = jax.grad(loss)(params, (x, y))
    for size in (4, 24):
        got = dk.accumulate(jax.grad(loss), params, ck.micro_batches((x, y), size))
        assert rho_tree(got, full) < 1e-14
    summed = dk.accumulate(jax.grad(loss), params, ck.micro_batches((x, y), 6), reduce="sum")
    assert rho_tree(jax.tree.map(lambda g: g / 4, summed), full) < 1e-14
    with pytest.raises(dk.DiffkitError, match="divisible by size=5"):
        ck.micro_batches((x, y), 5)
    with pytest.raises(dk.DiffkitError, match="reduce must be"):
        dk.accumulate(jax.grad(loss), params, ck.micro_batches((x, y), 6), reduce="max")
