"""Estimators judged as estimators, and trained at matched cost.

:func:`quality` measures a stochastic differentiator (``mode="stochastic"``) against the exact
derivative over ``R`` independent keys: the mean cosine similarity, the relative error of the
mean (the bias) with its standard error, and the second moment ``E||g_hat||^2 / ||g||^2``
beside its theoretical value. :func:`run_case <diffkit.harness.measure.run_case>` records
these for stochastic methods and calls such a case accurate when its bias is within
:data:`BIAS_Z` standard errors (``rho`` stays the measure of the exact methods).

:func:`train` runs full-batch training on a small task (``mlp-regression``,
``logistic-regression``) with several differentiators, the same optimiser and a step size
tuned per method, and reports the loss against forward-pass equivalents and wall time.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from diffkit._core.errors import DiffkitError
from diffkit._core.interface import Differentiator
from diffkit._core.registry import resolve

if TYPE_CHECKING:
    from diffkit.differentiators.stochastic import Stochastic

__all__ = ["BIAS_Z", "REPEATS", "TASKS", "Training", "quality", "train"]

#: A stochastic case is accurate when the relative error of its mean over the repeats is at
#: most this many standard errors.
BIAS_Z = 3.0
#: Independent estimates per stochastic case in the harness.
REPEATS = 100
#: Bytes of estimates one vectorised chunk of repeats may hold.
CHUNK_BYTES = 64 * 2**20


def quality(
    d: Differentiator,
    fun: Callable[..., Any],
    args: Sequence[Any],
    exact: Any,
    *,
    repeats: int = REPEATS,
    seed: int = 0,
) -> dict[str, float | int]:
    """How good an estimator of the derivative of ``fun`` at ``args`` (with respect to
    ``args[0]``; the gradient of a scalar, else the Jacobian) is, over ``repeats`` keys.

    ``exact`` is the true derivative (any array or pytree with the same numbers). Returns
    ``cosine`` (mean cosine similarity) and ``cosine_se``; ``bias`` (``||mean - exact|| /
    ||exact||``) and ``bias_se`` (its standard error, ``sqrt(sum_i var_i / R) / ||exact||``:
    an unbiased estimator has ``bias`` about ``bias_se``); ``second_moment`` (mean of
    ``||g_hat||^2 / ||exact||^2``), ``second_moment_se`` and ``second_moment_theory``;
    ``passes`` (directional derivatives per estimate) and ``repeats``.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> from diffkit.harness.estimators import quality
        >>> x = jnp.arange(1.0, 5.0)
        >>> q = quality(dk.get("forward-grad", tangents=2), lambda x: x @ x, (x,), 2 * x)
        >>> q["bias"] < 3 * q["bias_se"], q["second_moment_theory"]
        (True, 3.5)
    """
    if getattr(d, "mode", None) != "stochastic":
        raise DiffkitError(f"quality: {d.name} is not a stochastic estimator; use accuracy.rho")
    if not isinstance(repeats, int) or repeats < 2:
        raise DiffkitError(f"quality: repeats must be an int >= 2, got {repeats!r}")
    g = np.asarray(ravel_pytree(exact)[0], np.float64)
    scalar = jnp.shape(jax.eval_shape(fun, *args)) == ()
    derivative = (lambda e: e.grad(fun)) if scalar else (lambda e: e.jacobian(fun))

    def one(key: jax.Array) -> jax.Array:
        return ravel_pytree(derivative(cast("Stochastic", d).with_key(key))(*args))[0]

    batch = max(1, min(repeats, CHUNK_BYTES // max(1, 8 * g.size * d.passes("grad", g.size))))
    chunks = -(-repeats // batch)
    keys = jax.random.split(jax.random.key(seed), chunks * batch).reshape(chunks, batch)
    g_dev = jnp.asarray(g, ravel_pytree(args[0])[0].dtype)
    norm = float(np.linalg.norm(g)) or 1.0

    def chunk(carry: tuple, ks: jax.Array) -> tuple[tuple, None]:
        est = jax.vmap(one)(ks).astype(g_dev.dtype)  # (batch, size)
        sq = jnp.sum(est * est, axis=1)
        cos = est @ g_dev / (jnp.sqrt(sq) * norm + jnp.finfo(g_dev.dtype).tiny)
        add = (est.sum(0), (est * est).sum(0), sq.sum(), (sq * sq).sum(), cos.sum(), cos @ cos)
        return tuple(a + b for a, b in zip(carry, add, strict=True)), None

    zeros = (jnp.zeros_like(g_dev), jnp.zeros_like(g_dev), *[jnp.zeros((), g_dev.dtype)] * 4)
    sums = jax.jit(lambda ks: jax.lax.scan(chunk, zeros, ks)[0])(keys)
    s1, s2, m2, m4, c1, c2 = (np.asarray(s, np.float64) for s in sums)
    r = chunks * batch
    mean = s1 / r
    var = np.maximum(s2 / r - mean**2, 0.0) * r / (r - 1)
    sq_mean, cos_mean = float(m2) / r, float(c1) / r
    return {
        "cosine": cos_mean,
        "cosine_se": math.sqrt(max(float(c2) / r - cos_mean**2, 0.0) / (r - 1)),
        "bias": float(np.linalg.norm(mean - g)) / norm,
        "bias_se": math.sqrt(float(var.sum()) / r) / norm,
        "second_moment": sq_mean / norm**2,
        "second_moment_se": math.sqrt(max(float(m4) / r - sq_mean**2, 0.0) / (r - 1)) / norm**2,
        "second_moment_theory": float(d.second_moment(g.size)),  # type: ignore[attr-defined]
        "passes": d.passes("grad", g.size),
        "repeats": r,
    }


# ------------------------------------------------------------------------- training


def _mlp_regression(n: int, rng: np.random.Generator) -> tuple[Callable, np.ndarray, Any]:
    """A tanh MLP (4 inputs, one hidden layer of ``~n/6`` units) fitting a teacher of the
    same shape on 256 points."""
    width = max(1, round((n - 1) / 6))
    shapes = [(4, width), (width,), (width,), ()]  # W1, b1, w2, b2

    def unpack(theta: jax.Array) -> list[jax.Array]:
        out, start = [], 0
        for s in shapes:
            size = math.prod(s)
            out.append(theta[start : start + size].reshape(s))
            start += size
        return out

    def predict(theta: jax.Array, x: jax.Array) -> jax.Array:
        w1, b1, w2, b2 = unpack(theta)
        return jnp.tanh(x @ w1 + b1) @ w2 / math.sqrt(width) + b2

    size = sum(math.prod(s) for s in shapes)
    x = rng.standard_normal((256, 4))
    y = np.asarray(predict(jnp.asarray(rng.standard_normal(size)), jnp.asarray(x)))

    def loss(theta: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((predict(theta, x) - y) ** 2)

    return loss, 0.5 * rng.standard_normal(size), (x, y)


def _logistic_regression(n: int, rng: np.random.Generator) -> tuple[Callable, np.ndarray, Any]:
    """Logistic regression with ``n`` weights on 512 points labelled by a random plane."""
    x = rng.standard_normal((512, n)) / math.sqrt(n)
    y = (x @ rng.standard_normal(n) > 0).astype(np.float64)

    def loss(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        z = x @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    return loss, np.zeros(n), (x, y)


#: Training tasks: name -> builder ``(n, rng) -> (loss(theta, *data), theta0, data)``.
TASKS: dict[str, Callable[[int, np.random.Generator], tuple[Callable, np.ndarray, Any]]] = {
    "mlp-regression": _mlp_regression,
    "logistic-regression": _logistic_regression,
}

LEARNING_RATES = tuple(10.0 ** (k / 2) for k in range(-8, 5))  # 1e-4 .. 100, half decades


@dataclass
class Training:
    """One method's tuned run: the step size chosen, the measured cost of a step (seconds,
    and forward-pass equivalents: step time / loss time, each the least over interleaved
    rounds of compiled loops) and the loss curve, as rows ``(step, forward_passes, seconds,
    loss)`` (seconds: the training loop's own wall time)."""

    method: str
    lr: float
    step_s: float
    forward_passes: float
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        """The loss after the last step."""
        return self.curve[-1][3]

    def loss_at(self, budget: float, by: str = "forward_passes") -> float:
        """The loss reached within ``budget`` forward-pass equivalents (``by="seconds"``:
        seconds); the initial loss where not even one step fits."""
        col = 1 if by == "forward_passes" else 2
        return min((row[3] for row in self.curve if row[col] <= budget), default=self.curve[0][3])


def train(
    task: str = "mlp-regression",
    methods: Sequence[str | tuple[str, dict[str, Any]]] = ("jax-rev", "forward-grad", "spsa"),
    *,
    n: int = 100,
    budget: float = 2000.0,
    by: str = "forward_passes",
    optimizer: str = "sgd",
    lrs: Sequence[float] = LEARNING_RATES,
    points: int = 20,
    seed: int = 0,
) -> dict[str, Training]:
    """Train ``task`` (a name of :data:`TASKS`, ``n`` parameters) with each method for the
    same ``budget`` -- forward-pass equivalents (``by="forward_passes"``, or ``"flops"``: the
    measured ratio of a step's time to the loss's time) or seconds (``by="seconds"``) -- with
    the same ``optimizer`` (``"sgd"`` or ``"adam"``), full batch, the step size tuned per
    method over ``lrs`` (lowest final loss; runs that diverge lose). Stochastic methods draw fresh
    directions each step (key ``fold_in(seed, step)``). Returns ``{method: Training}``, with
    ``points`` rows per curve.

    Example:
        >>> from diffkit.harness.estimators import train
        >>> runs = train("logistic-regression", ["jax-rev", "forward-grad"], n=10, budget=200,
        ...              lrs=(0.3, 3.0), points=4)
        >>> runs["jax-rev"].final_loss < runs["jax-rev"].curve[0][3]
        True
    """
    if task not in TASKS:
        raise DiffkitError(f"train: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    by = "forward_passes" if by == "flops" else by
    if by not in ("forward_passes", "seconds"):
        raise DiffkitError(f"train: by must be 'forward_passes' or 'seconds', got {by!r}")
    if optimizer not in ("sgd", "adam"):
        raise DiffkitError(f"train: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if not (isinstance(n, int) and n >= 1) or not budget > 0:
        raise DiffkitError(
            f"train: n must be a positive int and budget positive, got {n}, {budget}"
        )
    loss, theta_start, data = TASKS[task](n, np.random.default_rng(seed))
    theta0 = jnp.asarray(theta_start, jnp.float32)
    data = tuple(jnp.asarray(a, jnp.float32) for a in data)
    primal = jax.jit(loss)
    specs = [(spec, {}) if isinstance(spec, str) else spec for spec in methods]
    advances = {
        name: _advance(_step_fn(resolve(name, **options), loss, optimizer))
        for name, options in specs
    }
    state = (theta0, jnp.zeros_like(theta0), jnp.zeros_like(theta0))
    key, lr0 = jax.random.key(seed), jnp.asarray(1e-3, theta0.dtype)
    repeat = _repeat_loss(loss)
    timed = {"loss": lambda k: repeat(k, theta0, data)} | {
        name: lambda k, a=advance: a(0, k, state, data, key, lr0)
        for name, advance in advances.items()
    }
    per_call = _interleaved_times(timed)
    runs = {}
    for name, advance in advances.items():
        step_s = per_call[name]
        per_step = step_s / per_call["loss"]
        steps = max(1, int(budget / (per_step if by == "forward_passes" else step_s)))
        best = min(
            (_run(advance, primal, theta0, data, seed, lr, steps, points) for lr in lrs),
            key=lambda run: run[1][-1][1] if np.isfinite(run[1][-1][1]) else np.inf,
        )
        lr, losses, seconds = best
        curve = [(s, s * per_step, t, value) for (s, value), t in zip(losses, seconds, strict=True)]
        runs[name] = Training(name, lr, step_s, per_step, curve)
    return runs


def _step_fn(d: Differentiator, loss: Callable, optimizer: str) -> Callable:
    """The optimiser's step ``(t, state, data, key, lr) -> state`` (not compiled)."""
    stochastic = d.mode == "stochastic"

    def step(t: jax.Array, state: tuple, data: tuple, key: jax.Array, lr: float) -> tuple:
        theta, m, v = state
        est = d.with_key(jax.random.fold_in(key, t)) if stochastic else d  # type: ignore[attr-defined]
        g = est.grad(loss)(theta, *data)
        if optimizer == "sgd":
            return theta - lr * g, m, v
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        t1 = (t + 1).astype(theta.dtype)
        m_hat, v_hat = m / (1 - 0.9**t1), v / (1 - 0.999**t1)
        return theta - lr * m_hat / (jnp.sqrt(v_hat) + 1e-8), m, v

    return step


def _run(
    advance: Callable,
    primal: Callable,
    theta0: jax.Array,
    data: tuple,
    seed: int,
    lr: float,
    steps: int,
    points: int,
) -> tuple[float, list[tuple[int, float]], list[float]]:
    """Train for ``steps`` steps (compiled loops between about ``points`` checkpoints),
    recording ``(step, loss)`` and the training seconds spent (loss evaluations untimed)."""
    state = (theta0, jnp.zeros_like(theta0), jnp.zeros_like(theta0))
    key, lr_in_dtype = jax.random.key(seed), jnp.asarray(lr, theta0.dtype)
    marks = sorted({0, *np.linspace(0, steps, points).round().astype(int).tolist()})
    losses, seconds, spent = [(0, float(primal(theta0, *data)))], [0.0], 0.0
    jax.block_until_ready(advance(0, 0, state, data, key, lr_in_dtype))  # compile
    for start, stop in itertools.pairwise(marks):
        t0 = time.perf_counter()
        state = jax.block_until_ready(advance(start, stop, state, data, key, lr_in_dtype))
        spent += time.perf_counter() - t0
        value = float(primal(state[0], *data))
        losses.append((stop, value if np.isfinite(value) else np.inf))
        seconds.append(spent)
        if not np.isfinite(value):
            break
    return float(lr_in_dtype), losses, seconds


def _advance(step: Callable) -> Callable:
    """``step`` from ``start`` to ``stop`` in one compiled loop."""

    def advance(start, stop, state, data, key, lr):  # type: ignore[no-untyped-def]
        body = lambda t, s: step(t, s, data, key, lr)  # noqa: E731
        return jax.lax.fori_loop(start, stop, body, state)

    return jax.jit(advance)


#: Steps (or loss evaluations) per timed call: compiled loops, so that dispatch stays out.
TIMED_LOOP = 32


def _repeat_loss(loss: Callable) -> Callable:
    """``k`` evaluations of ``loss`` in one compiled loop; each depends on the last (by a
    change far below rounding), so the compiler cannot hoist it out of the loop."""

    def repeat(k: int, theta: jax.Array, data: tuple) -> jax.Array:
        body = lambda i, c: loss(theta + 1e-30 * c, *data).astype(theta.dtype)  # noqa: E731
        return jax.lax.fori_loop(0, k, body, jnp.zeros((), theta.dtype))

    return jax.jit(repeat)


def _interleaved_times(fns: dict[str, Callable[[int], Any]], rounds: int = 9) -> dict[str, float]:
    """Least seconds per iteration of each ``fn(TIMED_LOOP)`` over alternating rounds (the
    least: other processes on a shared machine only ever add time), after a warm-up call."""
    for fn in fns.values():
        jax.block_until_ready(fn(1))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(TIMED_LOOP))
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) / TIMED_LOOP for name, t in times.items()}
