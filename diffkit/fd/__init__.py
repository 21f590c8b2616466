"""Finite differences, the parts users reach as ``dk.fd``: stencils, steps, results, sweeps.

* :func:`stencil` -- the points and weights of a rule, solved exactly (rational arithmetic) from
  the Vandermonde system for the requested accuracy order; zero-weight points are dropped;
* :func:`default_step` -- ``h_i = eps^(1/(p+1)) * max(1, |x_i|)`` for an order-``p`` rule, a
  tiny non-underflowing step for the complex step;
* :class:`FDResult` -- a gradient with its error estimate and evaluation count (returned by
  ``dk.get("fd").gradient(f)(x)``);
* :func:`step_sweep` -- error against a reference for each step: the U-shaped curve.

Example:
    >>> import diffkit as dk
    >>> s = dk.fd.stencil("central", 4)
    >>> s.offsets, [str(w) for w in s.exact_weights]
    ((-2.0, -1.0, 1.0, 2.0), ['1/12', '-2/3', '2/3', '-1/12'])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import DiffkitError
from diffkit._core.registry import get
from diffkit.accuracy import rho
from diffkit.fd.stencils import (
    MAX_ORDER,
    NON_ANALYTIC,
    SCHEMES,
    FDResult,
    Stencil,
    check_analytic,
    default_step,
    stencil,
    weights,
)

__all__ = [
    "MAX_ORDER",
    "NON_ANALYTIC",
    "SCHEMES",
    "FDResult",
    "Stencil",
    "StepSweep",
    "check_analytic",
    "default_step",
    "stencil",
    "step_sweep",
    "weights",
]


@dataclass(frozen=True)
class StepSweep:
    """Error of a rule against a reference for each step: falls like ``h^order`` (truncation)
    until rounding (``eps/h``) takes over. ``errors[k]`` is rho (max over coordinates) at
    ``steps[k]``; ``default_error`` is the error with the default per-coordinate step."""

    steps: np.ndarray
    errors: np.ndarray
    scheme: str
    order: int
    dtype: str
    default_error: float

    @property
    def optimal_step(self) -> float:
        """The swept step with the smallest error."""
        return float(self.steps[np.nanargmin(self.errors)])

    @property
    def optimal_error(self) -> float:
        return float(np.nanmin(self.errors))

    def _title(self) -> str:
        return f"step sweep: {self.scheme} order {self.order}, {self.dtype}"

    def _summary(self) -> str:
        return (
            f"optimal step {self.optimal_step:.1e} (error {self.optimal_error:.1e}); "
            f"default step rule: error {self.default_error:.1e}"
        )

    def __repr__(self) -> str:
        best = np.nanargmin(self.errors)
        rows = [
            f"  {h:9.1e}  {e:9.1e}{'  <- optimal' if k == best else ''}"
            for k, (h, e) in enumerate(zip(self.steps, self.errors, strict=True))
        ]
        return "\n".join([self._title(), "       step      error", *rows, self._summary()])

    def _repr_html_(self) -> str:
        """A log-log SVG plot of the U-shaped curve, for notebooks."""
        ok = np.isfinite(self.errors) & (self.errors > 0)
        if not ok.any():
            return f"<pre>{self!r}</pre>"
        lx, ly = np.log10(self.steps[ok]), np.log10(self.errors[ok])
        sx = lambda v: 40 + 340 * (v - lx.min()) / max(np.ptp(lx), 1e-9)  # noqa: E731
        sy = lambda v: 10 + 180 * (ly.max() - v) / max(np.ptp(ly), 1e-9)  # noqa: E731
        pts = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(lx, ly, strict=True))
        o = (np.log10(self.optimal_step), np.log10(self.optimal_error))
        return (
            f"<div><b>{self._title()}</b><br>"
            '<svg width="400" height="230" style="font:10px sans-serif">'
            f'<polyline points="{pts}" fill="none" stroke="steelblue" stroke-width="2"/>'
            f'<circle cx="{sx(o[0]):.1f}" cy="{sy(o[1]):.1f}" r="4" fill="crimson"/>'
            f'<text x="40" y="215">step 1e{lx.min():.0f}</text>'
            f'<text x="330" y="215">1e{lx.max():.0f}</text>'
            f'<text x="2" y="15">1e{ly.max():.0f}</text><text x="2" y="190">1e{ly.min():.0f}</text>'
            f"</svg><br>{self._summary()}</div>"
        )


def step_sweep(
    f: Callable[..., Any],
    x: Any,
    steps: Sequence[float] | np.ndarray | None = None,
    *,
    scheme: str = "central",
    order: int | None = None,
    reference: Any = None,
) -> StepSweep:
    """The error of ``dk.get("fd", scheme=scheme, order=order, step=h).grad(f)(x)`` (the
    ``jacobian`` where ``f`` is not scalar) for each ``h`` in ``steps`` (default: 1 down to
    eps/10, or eps^3 for the complex step), against ``reference`` (default: :func:`jax.grad`
    or :func:`jax.jacrev` in float64). One compilation serves every step.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> s = dk.fd.step_sweep(lambda x: jnp.sum(jnp.exp(x)), jnp.ones(3), steps=[1e-1, 1e-3])
        >>> s.optimal_step, bool(s.errors[0] > s.errors[1])
        (0.001, True)
    """
    rule = stencil(scheme, order)
    x = jax.tree_util.tree_map(jnp.asarray, x)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(x))
    eps = float(jnp.finfo(dtype).eps)
    if steps is None:
        low = 3 * np.log10(eps) if scheme == "complex" else np.log10(eps) - 1
        steps = np.logspace(0, low, int(-low * (1 if scheme == "complex" else 3)) + 1)
    steps = np.asarray(steps, dtype=np.float64)
    if steps.ndim != 1 or not steps.size or not np.all(steps > 0):
        raise DiffkitError("fd.step_sweep: steps must be a non-empty 1-d list of positive numbers")
    outs = jax.tree_util.tree_leaves(jax.eval_shape(f, x))
    scalar = len(outs) == 1 and outs[0].shape == ()
    if reference is None:
        with jax.enable_x64(True):
            x64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), x)
            ref = jax.grad(f) if scalar else jax.jacrev(f)
            reference = jax.jit(ref)(x64)  # jitted: one compile, not one per op
    want = np.concatenate([np.ravel(r) for r in jax.tree_util.tree_leaves(reference)])
    flat = lambda g: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(g)])  # noqa: E731

    def derivative(d: Any) -> Any:
        return d.grad(f) if scalar else d.jacobian(f)

    at_step = jax.jit(lambda h: derivative(get("fd", scheme=scheme, order=rule.order, step=h))(x))
    with np.errstate(invalid="ignore"):
        errors = np.array([rho(flat(at_step(jnp.asarray(h, dtype))), want) for h in steps])
    default = rho(flat(jax.jit(derivative(get("fd", scheme=scheme, order=rule.order)))(x)), want)
    return StepSweep(steps, errors, scheme, rule.order, str(dtype), default)
