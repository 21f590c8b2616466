"""Nested derivatives, outer method x inner method: GradBench's ``particle`` and ``saddle``
solved end to end.

GradBench's two nested evals run a gradient-descent solver (its ``gd.hpp``: step ``eta``
from 1e-5, doubled after 10 accepted steps, halved after a rejected one, stopped when the
gradient or the step falls to 1e-5) whose gradient is taken by one method (the *outer*)
of a function that itself takes gradients by another (the *inner*). :func:`particle` and
:func:`saddle` do this for any pair of diffkit methods and return GradBench's outputs, so
each pair can be checked against the eval's expected answer.

The saddle's outer gradient goes through the inner solver's loop, whose length depends on
the values. As a tape does, it is the derivative of the path taken: the inner solve runs
once on numbers, its accepted steps are recorded, and the outer method differentiates the
replay of those steps (:func:`argmin` with ``record=True``).

Example:
    >>> from diffkit.harness.gradbench import nested
    >>> nested.pairs(["jax-rev", "dual"])
    [('jax-rev', 'jax-rev'), ('jax-rev', 'dual'), ('dual', 'jax-rev'), ('dual', 'dual')]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import DiffkitError
from diffkit._core.registry import resolve
from diffkit.harness.gradbench import particle_miss

__all__ = ["argmin", "pairs", "particle", "saddle"]

#: GradBench's published answers (``evals/particle/run.py``, ``evals/saddle/run.py``).
PARTICLE_EXPECTED = 0.2071918746486116  # w from w0 = 0
SADDLE_EXPECTED = 8.246324826140356e-06  # each of the four numbers, from start (1, 1)


def pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """Every (outer, inner) pair of ``methods``, outer first.

    Example:
        >>> from diffkit.harness.gradbench.nested import pairs
        >>> len(pairs(["fd", "tape", "jax-fwd"]))
        9
    """
    return [(outer, inner) for outer in methods for inner in methods]


def argmin(
    f: Callable[[np.ndarray], float],
    grad: Callable[[np.ndarray], np.ndarray],
    x0: Any,
    record: bool = False,
    max_steps: int = 100_000,
) -> Any:
    """GradBench's gradient-descent solver (``gd.hpp``) on numbers: the minimiser of ``f``
    from ``x0``; with ``record``, also the step sizes of the accepted steps (``x <- x - eta
    grad(x)`` in this order), from which the path can be replayed differentiably.

    Example:
        >>> import numpy as np
        >>> from diffkit.harness.gradbench.nested import argmin
        >>> x = argmin(lambda x: float(np.sum((x - 3) ** 2)), lambda x: 2 * (x - 3), [0.0])
        >>> bool(abs(x[0] - 3) < 1e-5)
        True
    """
    x = np.asarray(x0, np.float64)
    fx, gx = f(x), np.asarray(grad(x))
    eta, i, etas = 1e-5, 0, []
    for _ in range(max_steps):
        if np.sqrt(np.sum(gx * gx)) <= 1e-5:
            break
        if i == 10:
            eta, i = 2 * eta, 0
            continue
        x_new = x - eta * gx
        if np.sqrt(np.sum((x - x_new) ** 2)) <= 1e-5:
            break
        f_new = f(x_new)
        if f_new < fx:
            x, fx, gx, i = x_new, f_new, np.asarray(grad(x_new)), i + 1
            etas.append(eta)
        else:
            eta, i = eta / 2, 0
    else:
        raise DiffkitError(f"argmin: no convergence in {max_steps} steps; check the gradient")
    return (x, np.asarray(etas)) if record else x


def _float(fun: Callable[..., Any]) -> Callable[..., float]:
    compiled = jax.jit(fun)
    return lambda *a: float(compiled(*a))


def particle(w0: float = 0.0, outer: str = "jax-rev", inner: str = "jax-rev") -> float:
    """GradBench's ``particle``: the control w minimising the miss distance, by the solver
    with ``outer``'s gradient of an objective that integrates with ``inner``'s gradient.

    Example:
        >>> import jax
        >>> from diffkit.harness.gradbench.nested import particle, PARTICLE_EXPECTED
        >>> with jax.enable_x64(True):
        ...     w = particle(0.0, "jax-fwd", "tape")
        >>> bool(abs(w - PARTICLE_EXPECTED) < 1e-6)
        True
    """
    with jax.enable_x64(True):

        def miss(w: jax.Array) -> jax.Array:
            return particle_miss(w, inner)[0]

        grad = jax.jit(resolve(outer).grad(miss))
        return float(argmin(_float(miss), grad, [w0])[0])


def _saddle_f(p1: jax.Array, p2: jax.Array) -> jax.Array:
    return jnp.sum(p1 * p1) - jnp.sum(p2 * p2)


def _replay(p1: jax.Array, start: jax.Array, etas: jax.Array, inner: Any) -> jax.Array:
    """max over p2 of f(p1, p2) along the recorded ascent: p2 <- p2 + eta grad_p2 f."""
    ascend = inner.grad(_saddle_f, argnums=1)

    def step(p2: jax.Array, eta: jax.Array) -> tuple[jax.Array, None]:
        return p2 + eta * ascend(p1, p2), None

    p2, _ = jax.lax.scan(step, start, etas)
    return _saddle_f(p1, p2)


def saddle(start: Sequence[float] = (1.0, 1.0), outer: str = "jax-rev",
           inner: str = "jax-rev") -> np.ndarray:  # fmt: skip
    """GradBench's ``saddle``: ``r1 = argmin_p1 max_p2 f(p1, p2)`` and ``r2 = argmax_p2
    f(r1, p2)``, every solve from ``start``; the argmin's gradient by ``outer`` through the
    inner argmax, whose gradient is ``inner``'s. Returns ``[r1, r2]`` flat (4 numbers).

    Example:
        >>> import jax
        >>> from diffkit.harness.gradbench.nested import saddle, SADDLE_EXPECTED
        >>> with jax.enable_x64(True):
        ...     out = saddle((1.0, 1.0), "dual", "jax-rev")
        >>> bool(abs(out - SADDLE_EXPECTED).max() < 1e-12)
        True
    """
    with jax.enable_x64(True):
        s, inner_d = np.asarray(start, np.float64), resolve(inner)
        ascend = jax.jit(inner_d.grad(_saddle_f, argnums=1))
        neg = _float(lambda p1, p2: -_saddle_f(p1, p2))
        outer_grad = jax.jit(resolve(outer).grad(_replay), static_argnums=3)

        solved: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # cost and gradient share

        def inner_solve(p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if p1.tobytes() not in solved:
                solved[p1.tobytes()] = argmin(
                    lambda p2: neg(p1, p2), lambda p2: -ascend(p1, p2), s, record=True
                )
            return solved[p1.tobytes()]

        def cost(p1: np.ndarray) -> float:
            return -neg(p1, inner_solve(p1)[0])

        def cost_grad(p1: np.ndarray) -> np.ndarray:
            etas = inner_solve(p1)[1]
            padded = np.zeros(1 << max(len(etas), 1).bit_length())  # eta 0 leaves p2 as it is
            padded[: len(etas)] = etas
            return np.asarray(outer_grad(p1, s, padded, inner_d))

        r1 = argmin(cost, cost_grad, s)
        outer_p2 = jax.jit(resolve(outer).grad(_saddle_f, argnums=1))
        r2 = argmin(lambda p2: neg(r1, p2), lambda p2: -outer_p2(r1, p2), s)
        return np.concatenate([r1, r2])
