"""Checks of derivatives for test suites, right in float32 and float64.

* :func:`check_grads` (:mod:`~diffkit.testing.grads`): forward and reverse derivatives, JAX's
  own (custom rules included) or a diffkit differentiator's, against finite differences in
  float64 or the Taylor remainder; a failure ends with the gradient doctor's first culprit;
* :func:`check_invariance` (:mod:`~diffkit.testing.invariance`): the gradient sharded over a
  mesh against the gradient on one device (``check_grads(..., mesh=...)``), with
  :data:`~diffkit.testing.invariance.SEEDED_BUGS` that it must catch.

The pytest plugin (:mod:`diffkit.pytest_plugin`) wraps both as fixtures.

Example:
    >>> import jax.numpy as jnp
    >>> from diffkit.testing import check_grads
    >>> check_grads(lambda x: jnp.sum(jnp.sin(x) * x), (jnp.arange(3.0),), order=2)
"""

from diffkit._core.errors import GradCheckError as GradCheckError
from diffkit._core.errors import NonDifferentiableError as NonDifferentiableError
from diffkit.testing.grads import TaylorResult as TaylorResult
from diffkit.testing.grads import check_grads as check_grads
from diffkit.testing.grads import taylor_test as taylor_test
from diffkit.testing.invariance import SEEDED_BUGS as SEEDED_BUGS
from diffkit.testing.invariance import check_invariance as check_invariance

__all__ = [
    "SEEDED_BUGS",
    "GradCheckError",
    "NonDifferentiableError",
    "TaylorResult",
    "check_grads",
    "check_invariance",
    "taylor_test",
]
