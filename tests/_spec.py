"""The spec-table vocabulary shared by ``tests/test_rules.py`` and the section modules
``tests/specs_*.py``: input domains, :class:`Spec`, and shorthands for common rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

# Input domains: name -> sampler(rng, shape)
DOMAINS: dict[str, Callable] = {
    "real": lambda r, s: r.normal(size=s),
    "pos": lambda r, s: r.uniform(0.5, 2.0, size=s),
    "unit": lambda r, s: r.uniform(-0.9, 0.9, size=s),
    "gt1": lambda r, s: r.uniform(1.2, 3.0, size=s),
    # normal, with exact zeros at every fifth entry (rules must not divide by x)
    "zeros": lambda r, s: np.where(
        np.arange(np.prod(s)).reshape(s) % 5 == 1, 0.0, r.normal(size=s)
    ),
    # the kinks of piecewise rules: 0, -0, halves, +-1 (ties, bounds, round-half points)
    "kinks": lambda r, s: r.choice([-1.0, -0.5, -0.0, 0.0, 0.5, 1.0], size=s),
}


@dataclass(frozen=True)
class Spec:
    prim: str  # the primitive the row exercises (must appear in the function's jaxpr)
    fun: Callable
    args: tuple[tuple[str, tuple[int, ...]], ...]  # (domain, shape) per float input
    tol32: float = 2e-5
    modes: tuple[str, ...] = ("dual", "tape")
    label: str = ""
    ref: Callable | None = None  # what jax.jvp / jax.vjp differentiate, if not ``fun``
    order2: bool = True  # also check the second order: dual's JVP of tape's VJP


R3, R34 = (("real", (3,)),), (("real", (3, 4)),)
R34_2 = (("real", (3, 4)), ("real", (3, 4)))  # two (3, 4) inputs
IDX = jnp.array([2, 0, 2])
OUT = jnp.array([1, 7, -9])  # out of bounds for 3 rows after the second


def ew(prim: str, f: Callable, *domains: str, tol32: float = 2e-5) -> Spec:
    """An elementwise row on (3, 4) inputs."""
    return Spec(prim, f, tuple((d, (3, 4)) for d in domains), tol32)


def custom_vjp_square():
    @jax.custom_vjp
    def f(x):
        return x * x

    f.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))
    return f
