"""Checkpointing: trade recomputation for memory in reverse mode, by a schedule.

Reverse mode needs, for every step of a loop, the state that entered it. *Store-all* keeps
every one of them: memory grows with the number of steps ``L``. A *schedule* keeps only some
states (snapshots) and recomputes the others from the nearest snapshot while the backward
sweep runs:

* ``every(k)``: a snapshot every ``k`` steps; the steps of one segment are recomputed (once)
  when the sweep reaches it: about ``L/k + k`` states, one extra forward;
* ``"sqrt"``: ``every(ceil(sqrt(L)))``, about ``2 sqrt(L)`` states;
* ``revolve(c)``: Griewank's binomial schedule with ``c`` snapshots, the fewest step
  evaluations possible with ``c`` snapshots: ``t = r L - binom(c + r, r - 1)``, where ``r``
  (the repetition number) is the least ``r`` with ``binom(c + r, c) >= L``
  (Griewank and Walther, ACM TOMS 26, 2000).

A schedule applies to each ``lax.scan`` of the function, its steps being the scan's steps
(the tape: ``dk.get("tape", checkpoint=...)``; ``jax-rev`` runs ``every(k)``/``"sqrt"`` as nested
scans under ``jax.checkpoint``). :meth:`Schedule.plan` writes the schedule out as actions,
and its counts are what the tape executes: ``advances`` (step evaluations without
recording, over both sweeps), ``recomputed`` (those of the backward sweep), ``slots``
(snapshots held at once).

:func:`accumulate` is the other memory lever: the gradient of a batch as a ``scan`` over
micro-batches, so only one micro-batch's activations are alive at a time.

Example:
    >>> import diffkit as dk
    >>> plan = dk.checkpoint.revolve(3).plan(10)
    >>> plan.slots, plan.advances, dk.checkpoint.revolve_steps(10, 3)
    (3, 15, 15)
    >>> dk.checkpoint.parse("sqrt").plan(16).recomputed  # 3 segments of 4 steps: 3 steps each
    9
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from diffkit._core.errors import DiffkitError

#: The public schedule API. The executors that the tape and ``jax-rev`` call
#: (``run_forward``, ``mover``, ``working``, ``scan_rewriter``, ``has_scan``) are not in it.
__all__ = [
    "ADVANCE",
    "RESTORE",
    "SNAP",
    "TAPE",
    "Plan",
    "Schedule",
    "accumulate",
    "beta",
    "every",
    "micro_batches",
    "parse",
    "policy",
    "repetitions",
    "revolve",
    "revolve_steps",
]

#: Actions of a plan: advance the working state over step ``j``; store it in slot ``s``;
#: load slot ``s`` into it; record step ``j`` from it and sweep that step back.
ADVANCE, SNAP, RESTORE, TAPE = 0, 1, 2, 3


def beta(s: int, r: int) -> int:
    """``binom(s + r, s)``: the most steps ``s`` snapshots reverse with ``r`` repetitions.

    Example:
        >>> beta(2, 3)
        10
    """
    return math.comb(s + r, s) if s >= 0 and r >= 0 else 0


def repetitions(length: int, snapshots: int) -> int:
    """The repetition number ``r``: the least ``r`` with ``beta(snapshots, r) >= length``.

    Example:
        >>> repetitions(10, 3), repetitions(1, 1)
        (2, 0)
    """
    r = 0
    while beta(snapshots, r) < length:
        r += 1
    return r


def revolve_steps(length: int, snapshots: int) -> int:
    """Griewank's minimum number of step evaluations (advances, not counting the recording
    of each step) that reverse ``length`` steps with ``snapshots`` snapshots, the first
    holding the initial state: ``r L - beta(snapshots + 1, r - 1)``.

    Example:
        >>> revolve_steps(10, 1), revolve_steps(10, 10)  # L(L-1)/2 and L - 1
        (45, 9)
    """
    r = repetitions(length, snapshots)
    return r * length - beta(snapshots + 1, r - 1)


@dataclass(frozen=True)
class Plan:
    """A schedule written out for ``length`` steps: ``forward`` holds, for each step ``j``,
    the slot its entering state is stored in during the first sweep (-1: none); ``actions``
    the backward sweep as ``(kind, arg)`` pairs (:data:`ADVANCE`, :data:`SNAP`,
    :data:`RESTORE`, :data:`TAPE`), starting from the state entering the last step."""

    length: int
    slots: int
    forward: tuple[int, ...]
    actions: tuple[tuple[int, int], ...]

    @property
    def advances(self) -> int:
        """Step evaluations without recording, the first sweep's ``L - 1`` included (the
        count Griewank's bound is about)."""
        return self.length - 1 + self.recomputed

    @property
    def recomputed(self) -> int:
        """Step evaluations the backward sweep adds (a forward step recomputed)."""
        return sum(kind == ADVANCE for kind, _ in self.actions)


@dataclass(frozen=True)
class Schedule:
    """A checkpointing schedule: ``kind`` is ``"store-all"``, ``"every"`` (``k`` steps per
    segment), ``"sqrt"`` or ``"revolve"``; ``budget`` caps the snapshots it may hold (revolve
    uses exactly that many). Make one with :func:`parse`, :func:`every` or :func:`revolve`.

    Example:
        >>> every(4).spec, revolve(8).spec, parse("sqrt", budget=40).spec
        ('every(4)', 'revolve(8)', 'sqrt')
    """

    kind: str
    k: int | None = None
    budget: int | None = None

    @property
    def spec(self) -> str:
        """The schedule as the string :func:`parse` reads back."""
        if self.kind == "every":
            return f"every({self.k})"
        if self.kind == "revolve":
            return f"revolve({self.budget})"
        return self.kind

    def segment(self, length: int) -> int:
        """Steps per segment of ``every(k)`` / ``"sqrt"`` for a loop of ``length`` steps."""
        if self.kind == "sqrt":
            return max(1, math.isqrt(length - 1) + 1) if length > 1 else 1
        if self.kind == "every":
            return min(int(self.k or 1), length)
        raise DiffkitError(f"checkpoint {self.spec!r} has no segments")

    def plan(self, length: int) -> Plan:
        """The schedule for a loop of ``length`` steps, as actions; an impossible budget is a
        one-line error.

        Example:
            >>> p = every(2).plan(4)
            >>> p.forward, p.slots, p.recomputed
            ((0, -1, 1, -1), 2, 1)
        """
        if length < 1:
            raise DiffkitError(f"checkpoint: a loop needs at least one step, got {length}")
        if self.kind == "revolve":
            return _revolve_plan(length, int(self.budget or 0))
        if self.kind == "store-all":
            plan = _store_all(length)
        else:
            plan = _segments_plan(length, self.segment(length))
        if self.budget is not None and plan.slots > self.budget:
            raise DiffkitError(
                f"checkpoint {self.spec!r} needs {plan.slots} snapshots for a loop of {length} "
                f"steps, over budget={self.budget}: raise the budget, or use "
                f"checkpoint='revolve', which works with any budget >= 1"
            )
        return plan


def every(k: int) -> Schedule:
    """A snapshot every ``k`` steps; each segment is recomputed once in the backward sweep.

    Example:
        >>> every(10).plan(100).recomputed  # 9 segments before the last, 9 steps each
        81
    """
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise DiffkitError(f"checkpoint every(k): k must be a positive int, got {k!r}")
    return Schedule("every", k=int(k))


def revolve(budget: int) -> Schedule:
    """Griewank's binomial schedule with ``budget`` snapshots (the initial state's included).

    Example:
        >>> revolve(2).plan(6).advances == revolve_steps(6, 2)
        True
    """
    if not isinstance(budget, int | np.integer) or isinstance(budget, bool) or budget < 1:
        raise DiffkitError(
            f"checkpoint 'revolve' needs budget >= 1 snapshots (the initial state takes one), "
            f"got budget={budget!r}"
        )
    return Schedule("revolve", budget=int(budget))


_FORMS = re.compile(r"^(store-all|sqrt|revolve|every|revolve\((\d+)\)|every\((\d+)\))$")


def parse(checkpoint: str | Schedule | None, budget: int | None = None) -> Schedule | None:
    """A schedule from ``"store-all"``, ``"sqrt"``, ``"every(k)"``, ``"revolve"`` (with
    ``budget``), ``"revolve(c)"`` or a :class:`Schedule`; ``None`` stays ``None``.

    Example:
        >>> parse("revolve", budget=4) == revolve(4), parse("every(3)") == every(3)
        (True, True)
    """
    if budget is not None and (
        not isinstance(budget, int | np.integer) or isinstance(budget, bool) or budget < 1
    ):
        raise DiffkitError(f"checkpoint budget must be a positive int, got {budget!r}")
    if checkpoint is None:
        if budget is not None:
            raise DiffkitError("checkpoint budget given without a schedule: add checkpoint=...")
        return None
    if isinstance(checkpoint, Schedule):
        sched = checkpoint
    else:
        found = _FORMS.match(str(checkpoint).replace(" ", ""))
        if not found:
            raise DiffkitError(
                f"unknown checkpoint schedule {checkpoint!r}; use 'store-all', 'sqrt', "
                "'every(k)', 'revolve' (with budget=c) or 'revolve(c)'"
            )
        text = found.group(1)
        if text == "every":
            raise DiffkitError("checkpoint 'every' needs its k: write 'every(10)'")
        if found.group(3):
            sched = every(int(found.group(3)))
        elif text.startswith("revolve"):
            c = int(found.group(2)) if found.group(2) else budget
            if c is None:
                raise DiffkitError("checkpoint 'revolve' needs a budget: budget=c snapshots")
            sched = revolve(c)
        else:
            sched = Schedule(text)
    if budget is not None and sched.kind != "revolve":
        sched = Schedule(sched.kind, sched.k, budget)
    elif budget is not None and budget != sched.budget:
        raise DiffkitError(f"checkpoint {sched.spec!r} and budget={budget} disagree")
    return sched


# ------------------------------------------------------------------ plans


def _phases(length: int, slots: int, actions: list[tuple[int, int]]) -> Plan:
    """Split a whole schedule at its first recorded step: before it, a first sweep that only
    advances and stores states (``Plan.forward``); from it on, the backward sweep."""
    forward, pos = [-1] * length, 0
    first = next(i for i, (kind, _) in enumerate(actions) if kind == TAPE)
    for kind, arg in actions[:first]:
        if kind == ADVANCE:
            pos = arg + 1
        elif kind == SNAP:
            forward[pos] = arg
        else:  # a first sweep that goes back is no first sweep
            raise AssertionError(f"plan: action {kind} before the first recorded step")
    assert pos == length - 1 and actions[first] == (TAPE, length - 1), "plan: bad first sweep"
    return Plan(length, slots, tuple(forward), tuple(actions[first:]))


def _store_all(length: int) -> Plan:
    actions = [(SNAP, 0)]
    for j in range(length - 1):
        actions += [(ADVANCE, j), (SNAP, j + 1)]
    for j in reversed(range(length)):
        actions += [(RESTORE, j), (TAPE, j)]
    del actions[-2 * length]  # the last state is the working state already
    return _phases(length, length, actions)


def _segments_plan(length: int, k: int) -> Plan:
    """``every(k)``: the state entering each segment is kept (slots ``0..``); when the sweep
    reaches a segment, its other states are recomputed from its start into scratch slots
    (the last segment's are stored by the first sweep)."""
    starts = list(range(0, length, k))
    n_seg = len(starts)
    actions: list[tuple[int, int]] = []

    def scratch(s: int, j: int) -> int:
        return s if j == starts[s] else n_seg + (j - starts[s] - 1)

    def walk(s: int) -> None:  # from the segment's start to its last state, keeping each
        end = min(starts[s] + k, length)
        for j in range(starts[s], end - 1):
            if j > starts[s]:
                actions.append((SNAP, scratch(s, j)))
            actions.append((ADVANCE, j))

    def sweep_back(s: int) -> None:
        end = min(starts[s] + k, length)
        actions.append((TAPE, end - 1))
        for j in reversed(range(starts[s], end - 1)):
            actions.extend([(RESTORE, scratch(s, j)), (TAPE, j)])

    for s in range(n_seg):
        actions.append((SNAP, s))
        if s < n_seg - 1:
            actions += [(ADVANCE, j) for j in range(starts[s], starts[s + 1])]
    walk(n_seg - 1)
    sweep_back(n_seg - 1)
    for s in reversed(range(n_seg - 1)):
        actions.append((RESTORE, s))
        walk(s)
        sweep_back(s)
    return _phases(length, n_seg + max(0, min(k, length) - 2), actions)


def _revolve_plan(length: int, snapshots: int) -> Plan:
    """Binomial checkpointing: reverse ``[start, end)`` from the state in slot ``slot`` (the
    working state on entry) with the ``free`` slots: advance to the split point ``m``, keep
    its state, reverse ``[m, end)``, restore, and go on with ``[start, m)``, that slot free
    again. The split is the one the closed form says is optimal (``m + t(l - m, s - 1) +
    t(m, s)`` least), so the advances come to :func:`revolve_steps`."""
    actions: list[tuple[int, int]] = [(SNAP, 0)]

    def reverse(start: int, end: int, slot: int, free: list[int]) -> None:
        while True:
            if end - start == 1:
                actions.append((TAPE, start))
                return
            if free:
                m = start + _split(end - start, len(free) + 1)
                actions.extend((ADVANCE, j) for j in range(start, m))
                new = free.pop()
                actions.append((SNAP, new))
                reverse(m, end, new, free)
                free.append(new)
                end = m
            else:  # one snapshot: walk to the last step from the start
                actions.extend((ADVANCE, j) for j in range(start, end - 1))
                actions.append((TAPE, end - 1))
                end -= 1
            actions.append((RESTORE, slot))

    reverse(0, length, 0, list(range(snapshots - 1, 0, -1)))
    return _phases(length, snapshots, actions)


def _split(length: int, snapshots: int) -> int:
    """The first part's length ``m`` of an optimal binomial split of ``length`` steps."""
    best, best_m = None, 1
    for m in range(1, length):
        cost = m + revolve_steps(length - m, snapshots - 1) + revolve_steps(m, snapshots)
        if best is None or cost < best:
            best, best_m = cost, m
    return best_m


# --------------------------------------------------- running a plan (the tape)


def run_forward(
    plan: Plan,
    step: Callable[[list[Any], list[Any]], tuple[list[Any], list[Any]]],
    init: Sequence[Any],
    seq: Sequence[Any],
    reverse: bool = False,
) -> tuple[list[Any], list[Any], list[Any]]:
    """The first sweep: ``step(carry, x) -> (carry, y)`` over the loop, storing each state
    the plan keeps: ``(final carry, ys, snapshots)``; the snapshots have ``slots + 2`` rows
    (the last two: the state entering the last step, and a row for steps that keep none)."""
    rows = np.array(plan.forward, np.int32)
    rows = np.where(rows < 0, plan.slots + 1, rows)
    if reverse:
        rows = rows[::-1]
    snaps0 = [jnp.zeros((plan.slots + 2, *jnp.shape(c)), jnp.result_type(c)) for c in init]

    def body(state, inp):
        carry, snaps = state
        x, row = inp
        snaps = [s.at[row].set(c) for s, c in zip(snaps, carry, strict=True)]
        carry, y = step(carry, x)
        return (carry, snaps), y

    n = plan.length
    last = n - 1 if not reverse else 0  # the xs index of the last step run
    rows[last] = plan.slots if plan.forward[n - 1] < 0 else rows[last]
    (final, snaps), ys = lax.scan(body, (list(init), snaps0), (list(seq), rows), reverse=reverse)
    if plan.forward[n - 1] >= 0:  # that state is in a slot: copy it to the working row
        snaps = [s.at[plan.slots].set(s[plan.forward[n - 1]]) for s in snaps]
    return final, ys, snaps


def _moves(plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The backward sweep's actions between recorded steps. Before step ``j`` is recorded,
    every plan restores one slot (``restore[j]``; -1 for the first recorded step, whose state
    is the working one) and then advances over consecutive steps, keeping some of the states
    reached: rows ``start[j]:end[j]`` of ``rows``, each ``(step advanced, slot that keeps
    the state after it, or -1)``."""
    rows: list[list[int]] = []
    restore = np.full(plan.length, -1, np.int32)
    start, end = np.zeros(plan.length, np.int32), np.zeros(plan.length, np.int32)
    first, slot = 0, -1
    for kind, arg in plan.actions:
        if kind == TAPE:
            restore[arg], start[arg], end[arg] = slot, first, len(rows)
            first, slot = len(rows), -1
        elif kind == RESTORE:
            assert slot == -1 and first == len(rows), "plan: one restore, first, per step"
            slot = arg
        elif kind == ADVANCE:
            rows.append([arg, -1])
        else:
            assert len(rows) > first and rows[-1][1] == -1, "plan: a snapshot after an advance"
            rows[-1][1] = arg
    table = np.array(rows or [[0, -1]], np.int32).reshape(-1, 2)
    return restore, table, start, end


def mover(
    plan: Plan, advance: Callable[[list[Any], Any], list[Any]]
) -> Callable[[list[Any], list[Any], Any], tuple[list[Any], list[Any]]]:
    """``move(work, snaps, j) -> (work, snaps)``: what the plan does before it records step
    ``j``: restore a slot, then advance (``advance(state, step)``) over the rows of
    :func:`_moves`, storing the states it keeps (the others go to a spare row). The working
    state of the first recorded step is the snapshots' row ``slots`` (:func:`working`)."""
    restore, rows, start, end = (jnp.asarray(a) for a in _moves(plan))
    spare = plan.slots + 1

    def row(a: Any, state: tuple[list[Any], list[Any]]) -> tuple[list[Any], list[Any]]:
        work, snaps = state
        work = advance(work, rows[a, 0])
        at = jnp.where(rows[a, 1] >= 0, rows[a, 1], spare)
        return work, [b.at[at].set(w) for b, w in zip(snaps, work, strict=True)]

    def move(work: list[Any], snaps: list[Any], j: Any) -> tuple[list[Any], list[Any]]:
        r = restore[j]
        work = [
            jnp.where(r >= 0, b[jnp.maximum(r, 0)], w) for b, w in zip(snaps, work, strict=True)
        ]
        return lax.fori_loop(start[j], end[j], row, (work, list(snaps)))

    return move


def working(plan: Plan, snaps: list[Any]) -> list[Any]:
    """The state entering the last step, where :func:`run_forward` left it."""
    return [s[plan.slots] for s in snaps]


# --------------------------------------------- jax.checkpoint for jax-rev


def policy(name: str | None) -> Callable[..., Any] | None:
    """A ``jax.checkpoint`` policy by name: any of ``jax.checkpoint_policies`` that is a
    policy (``nothing_saveable``, ``dots_saveable``, ``dots_with_no_batch_dims_saveable``,
    ...), ``save_only(a,b)`` (values named with ``jax.ad_checkpoint.checkpoint_name``), or
    ``offload_dot_with_no_batch_dims`` (saved dots go to pinned host memory where the
    backend has it).

    Example:
        >>> policy("nothing_saveable") is jax.checkpoint_policies.nothing_saveable
        True
    """
    if name is None:
        return None
    pols = jax.checkpoint_policies
    found = re.fullmatch(r"save_only\(([\w,]*)\)", str(name).replace(" ", ""))
    if found:
        return pols.save_only_these_names(*[n for n in found.group(1).split(",") if n])
    if name == "offload_dot_with_no_batch_dims":
        kinds = {m.kind for m in jax.devices()[0].addressable_memories()}
        if "pinned_host" not in kinds:
            raise DiffkitError(
                f"policy {name!r} needs pinned host memory, which the "
                f"{jax.default_backend()} backend lacks: choose another policy"
            )
        return pols.offload_dot_with_no_batch_dims("device", "pinned_host")
    plain = [
        n
        for n in ("nothing_saveable", "everything_saveable", "dots_saveable",
                  "dots_with_no_batch_dims_saveable", "checkpoint_dots",
                  "checkpoint_dots_with_no_batch_dims")
        if hasattr(pols, n)
    ]  # fmt: skip
    if name not in plain:
        raise DiffkitError(
            f"unknown jax.checkpoint policy {name!r}; choose one of: {', '.join(plain)}, "
            "save_only(name,...), offload_dot_with_no_batch_dims"
        )
    return getattr(pols, name)


def scan_rewriter(
    pol: Callable[..., Any] | None, schedule: Schedule | None
) -> Callable[[Any, list[Any]], list[Any]] | None:
    """An equation handler for :func:`diffkit._core.jaxpr.interpret` that runs each ``scan``
    with its step under ``jax.checkpoint(policy)`` and, for ``every(k)``/``"sqrt"``, as
    nested scans whose segments are checkpointed (``None`` when neither is asked for)."""
    from diffkit._core.jaxpr import evaluate, inner_jaxpr, interpret

    if pol is None and schedule is None:
        return None
    if schedule is not None and schedule.kind not in ("every", "sqrt", "store-all"):
        raise DiffkitError(
            f"jax-rev: checkpoint {schedule.spec!r} is the tape's own schedule; jax-rev runs "
            "'store-all', 'every(k)' and 'sqrt' (as nested scans): use dk.get('tape', ...)"
        )

    def handle(eqn: Any, invals: list[Any]) -> list[Any]:
        if eqn.primitive.name == "scan":
            return _scan_remat(eqn, invals, pol, schedule)
        inner = inner_jaxpr(eqn)  # a jit or other call: its scans too
        if inner is not None and has_scan(inner.jaxpr):
            return interpret(inner, invals, handle)
        return evaluate(eqn, invals)

    return handle


def has_scan(jaxpr: Any) -> bool:
    """Whether ``jaxpr`` runs a ``scan``, at its top level or inside a call (``jit``, ...).

    Example:
        >>> import jax
        >>> f = jax.jit(lambda x: jax.lax.scan(lambda c, _: (c * 2.0, None), x, length=3)[0])
        >>> g = jax.jit(abs)
        >>> has_scan(jax.make_jaxpr(f)(1.0).jaxpr), has_scan(jax.make_jaxpr(g)(1.0).jaxpr)
        (True, False)
    """
    from diffkit._core.jaxpr import inner_jaxpr

    for eqn in jaxpr.eqns:
        inner = inner_jaxpr(eqn)
        if eqn.primitive.name == "scan" or (inner is not None and has_scan(inner.jaxpr)):
            return True
    return False


def _scan_remat(eqn: Any, xs: list[Any], pol: Any, schedule: Schedule | None) -> list[Any]:
    p = eqn.params
    nc, nk, n = p["num_consts"], p["num_carry"], p["length"]
    consts, init, seq = xs[:nc], list(xs[nc : nc + nk]), list(xs[nc + nk :])
    body = p["jaxpr"]

    def step(carry, x):
        outs = jax.core.eval_jaxpr(body.jaxpr, body.consts, *consts, *carry, *x)
        return list(outs[:nk]), list(outs[nk:])

    if pol is not None:
        step = jax.checkpoint(step, policy=pol, prevent_cse=False)
    if schedule is None or schedule.kind == "store-all":
        final, ys = lax.scan(step, init, seq, length=n, reverse=p["reverse"])
        return [*final, *ys]
    if p["reverse"]:
        seq = [jnp.flip(x, 0) for x in seq]
    k = schedule.segment(n)
    full = (n // k) * k

    @jax.checkpoint
    def segment(carry, s):  # slices the steps it runs: reshaping all of xs would copy them
        xseg = [lax.dynamic_slice_in_dim(x, s * k, k) for x in seq]
        return lax.scan(step, carry, xseg, length=k)

    carry, ys = lax.scan(segment, init, jnp.arange(n // k))
    ys = [y.reshape(full, *y.shape[2:]) for y in ys]
    if full < n:
        carry, tail = lax.scan(step, carry, [x[full:] for x in seq], length=n - full)
        ys = [jnp.concatenate([a, b]) for a, b in zip(ys, tail, strict=True)]
    if p["reverse"]:
        ys = [jnp.flip(y, 0) for y in ys]
    return [*carry, *ys]


# ------------------------------------------------------ gradient accumulation


def micro_batches(data: Any, size: int) -> Any:
    """Split every leaf's leading (batch) axis into micro-batches of ``size``: a leaf
    ``(B, ...)`` becomes ``(B // size, size, ...)``; ``B`` must be a multiple of ``size``.

    Example:
        >>> import jax.numpy as jnp
        >>> micro_batches(jnp.zeros((8, 3)), 2).shape
        (4, 2, 3)
    """
    leaves = jax.tree.leaves(data)
    sizes = {int(jnp.shape(x)[0]) for x in leaves if jnp.ndim(x) > 0}
    if not isinstance(size, int) or size < 1 or len(sizes) != 1 or next(iter(sizes)) % size:
        raise DiffkitError(
            f"micro_batches: every leaf needs one leading batch size divisible by size={size!r};"
            f" got batch sizes {sorted(sizes)}"
        )
    return jax.tree.map(lambda x: jnp.reshape(x, (x.shape[0] // size, size, *x.shape[1:])), data)


def accumulate(
    grad_fn: Callable[..., Any], params: Any, batches: Any, *, reduce: str = "mean"
) -> Any:
    """The gradient over all ``batches`` by a ``lax.scan`` that adds ``grad_fn(params, batch)``
    one micro-batch at a time (``batches``: a pytree whose leaves stack the micro-batches on a
    leading axis, e.g. from :func:`micro_batches`). ``reduce="mean"`` averages: for a mean
    loss over equal micro-batches that is the full batch's gradient; ``"sum"`` adds them.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> loss = lambda w, xb: jnp.mean((xb @ w) ** 2)
        >>> x, w = jnp.arange(8.0).reshape(4, 2), jnp.ones(2)
        >>> g = accumulate(jax.grad(loss), w, micro_batches(x, 2))
        >>> bool(jnp.allclose(g, jax.grad(loss)(w, x)))
        True
    """
    if reduce not in ("mean", "sum"):
        raise DiffkitError(f"accumulate: reduce must be 'mean' or 'sum', got {reduce!r}")
    counts = {int(jnp.shape(x)[0]) for x in jax.tree.leaves(batches)}
    if len(counts) != 1:
        raise DiffkitError(
            "accumulate: batches' leaves must stack the micro-batches on one leading axis of "
            f"one length; got lengths {sorted(counts)} (use micro_batches(data, size))"
        )
    zeros = jax.tree.map(jnp.zeros_like, params)

    def add(total, batch):
        return jax.tree.map(jnp.add, total, grad_fn(params, batch)), None

    total, _ = lax.scan(add, zeros, batches)
    count = next(iter(counts))
    return total if reduce == "sum" else jax.tree.map(lambda g: g / count, total)
