"""The gradient doctor: when a gradient is wrong, NaN or zero, name the equation and the
user's source line that made it so, say why, and suggest a fix.

:func:`doctor` walks the function's jaxpr once per precision (calls inlined, ``scan`` loops
of up to :data:`UNROLL` steps unrolled, custom rules kept whole, as they are part of the
program) and records, for every equation, its inputs, outputs and cotangents:

* in the function's own precision (float16, bfloat16, float32) and in a float64 reference run
  of the same program, aligned equation by equation;
* in float64, finite differences *of that equation alone* at its recorded inputs (central of
  orders 4 and 2, one-sided of order 2, five points, one batched evaluation) compared with
  the equation's own derivative rule (JAX's, the library's custom rule, or a diffkit
  differentiator's) by the dot-product test with the cotangent that really reached it.

The whole gradient is checked first (its value, NaN and inf, float64 against finite
differences, the own precision against float64, one-sided derivatives for kinks); findings
about single equations are *culprits* only when the whole gradient shows the symptom they
explain, otherwise they are *notes* (a kink of ``relu`` whose cotangent is zero is harmless).
Culprits come in the order the reverse sweep meets them (forward-value problems first).

Example:
    >>> import jax.numpy as jnp
    >>> import diffkit as dk
    >>> def loss(x):
    ...     return jnp.sum(jnp.where(x > 0, jnp.sqrt(x), 0.0))
    >>> report = dk.doctor(loss, jnp.array([4.0, -1.0]))
    >>> report.ok, report.culprits[0].kind, report.culprits[0].primitive
    (False, 'masked-nan', 'sqrt')
"""

from diffkit.diagnosis.analysis import RTOL as RTOL
from diffkit.diagnosis.analysis import RTOL_LOW as RTOL_LOW
from diffkit.diagnosis.analysis import SPREAD as SPREAD
from diffkit.diagnosis.entry import doctor as doctor
from diffkit.diagnosis.findings import Diagnosis as Diagnosis
from diffkit.diagnosis.findings import Finding as Finding
from diffkit.diagnosis.walk import UNROLL as UNROLL

__all__ = ["RTOL_LOW", "Diagnosis", "Finding", "doctor"]
