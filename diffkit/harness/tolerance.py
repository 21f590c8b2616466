"""Accuracy tolerances that follow the problem's conditioning.

The harness judges a derivative accurate when its rho against the float64 reference is
within a tolerance (``measure.TOLERANCE``: 1e-4 for exact methods in float32). Some problems
cannot be differentiated that accurately in float32 by anyone: the rounding of a long
computation (particle's 400 solver steps) is amplified, and every exact method then lands
at the same rho (3.6e-4 at n = 10). So where a result misses the fixed tolerance, the
problem's own sensitivity is measured once per size -- the rho of JAX's own derivative
(``jax.grad`` / ``jax.jacrev``) computed in the case's dtype, and the spread of JAX's two
modes in float64 (the reference's cross-check) -- and the tolerance becomes
``SPREAD_FACTOR`` times that, never below the fixed one nor above ``CEILING``. A method as
accurate as JAX itself in that dtype passes; a wrong derivative (an error of a few percent
or more) is still caught.

Example:
    >>> conditioned(1e-4, 5e-4)  # particle, n = 10, float32: JAX's own rho 3.6e-4
    0.005
    >>> conditioned(1e-4, 1e-8)  # a well-conditioned problem keeps the fixed tolerance
    0.0001
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, cast

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from diffkit.accuracy import rho
from diffkit.harness.families import Instance
from diffkit.harness.record import Record

__all__ = ["CEILING", "SPREAD_FACTOR", "conditioned", "jax_error", "rejudge"]

#: How far beyond JAX's own error in the case's dtype a result may land and pass.
SPREAD_FACTOR = 10.0
#: The widest tolerance conditioning can give: past it, nothing is judged accurate.
CEILING = 1e-2


def conditioned(
    base: float, spread: float, factor: float = SPREAD_FACTOR, ceiling: float = CEILING
) -> float:
    """The tolerance for a problem whose derivative shows rho ``spread`` when JAX computes
    it: ``factor * spread`` within ``[base, max(base, ceiling)]`` (see the module's example)."""
    return max(base, min(factor * spread, ceiling))


def jax_error(inst: Instance, reference: np.ndarray) -> float:
    """rho of JAX's own derivative of ``inst`` (``jax.grad``, or ``jax.jacrev`` for a
    Jacobian), computed in the instance's dtype, against the flat float64 ``reference``:
    the rounding error of this problem in this dtype, whoever differentiates it.

    Example:
        >>> import jax, numpy as np
        >>> from diffkit.harness.families import get_problem
        >>> inst = get_problem("lse").build(10, "float32")
        >>> with jax.enable_x64(True):
        ...     ref = np.asarray(jax.grad(inst.fun)(np.asarray(inst.args[0], np.float64)))
        >>> jax_error(inst, ref) < 1e-6
        True
    """
    rev = jax.grad if inst.quantity == "grad" else jax.jacrev
    with jax.enable_x64(inst.dtype == "float64"):
        got = jax.jit(rev(inst.fun))(*inst.args)
        flat = np.asarray(ravel_pytree(got)[0], dtype=np.float64)
    return rho(flat, reference) if flat.shape == reference.shape else float("inf")


def rejudge(record: Record, shared: MutableMapping[str, Any]) -> None:
    """Judge an exact method's record again with the problem's conditioning: where it missed
    its fixed tolerance, measure the problem's sensitivity (:func:`jax_error` and the
    reference's float64 cross-check; once per size, kept in ``shared``, the work
    ``measure.run_case`` shares across methods: ``inst`` and ``reference``) and widen
    ``tolerance`` to :func:`conditioned`; ``accurate`` and ``conditioning`` (that
    sensitivity) follow. Stochastic methods are judged as estimators elsewhere.

    Example (a wrong gradient of a well-conditioned problem stays inaccurate):
        >>> import jax, numpy as np
        >>> from diffkit.harness.families import get_problem
        >>> inst = get_problem("lse").build(10, "float32")
        >>> with jax.enable_x64(True):
        ...     ref = np.asarray(jax.grad(inst.fun)(np.asarray(inst.args[0], np.float64)))
        >>> rec = {"mode": "reverse", "rho_max": 0.05, "tolerance": 1e-4, "accurate": False}
        >>> rejudge(rec, {"inst": inst, "reference": (ref, 1e-16)})
        >>> rec["accurate"], rec["tolerance"], rec["conditioning"] < 1e-6
        (False, 0.0001, True)
    """
    rec = cast(dict[str, Any], record)  # adds "conditioning", a field of its own
    rho_max = rec.get("rho_max")
    if rec.get("accurate") is not False or rec.get("mode") == "stochastic" or rho_max is None:
        return
    reference, crosscheck = shared["reference"]
    if "jax_error" not in shared:
        shared["jax_error"] = max(jax_error(shared["inst"], reference), crosscheck)
    rec["conditioning"] = shared["jax_error"]
    rec["tolerance"] = conditioned(rec["tolerance"], shared["jax_error"])
    rec["accurate"] = bool(rho_max <= rec["tolerance"])
