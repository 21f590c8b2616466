"""What adding a rule or an interpreter needs, in one public place.

* a rule: a row of :data:`RULES` (primitive name -> :class:`Rule`), built by one of the row
  constructors :func:`elementwise`, :func:`linear`, :func:`zero`, :func:`reduction`,
  :func:`permutation`, :func:`cumulative`; :data:`REFUSED` names the primitives the
  hand-written interpreters refuse, and why;
* an interpreter: a subclass of :class:`Interpreter` (the per-equation dispatch), run by
  :func:`interpret` on the closed jaxpr that :func:`trace` makes; :func:`evaluate` evaluates
  one equation on plain arrays;
* a differentiator: a subclass of :class:`Differentiator`, named with :func:`register`.

A primitive with no row whose derivative JAX knows (a JVP rule in ``ad.primitive_jvps``, as
lineax and equinox register theirs) needs nothing here: ``dual`` and ``tape`` differentiate
it through JAX's rules. A row is for a primitive JAX cannot differentiate, or to give the
interpreters a derivative of their own.

Example: a new primitive ``my_cube`` (``x**3``) with an implementation and an abstract
evaluation but no derivative rule: JAX cannot differentiate it, nor can ``tape``; one row of
the rule table teaches ``dual`` and ``tape`` its derivative.

    >>> import jax, jax.numpy as jnp
    >>> import diffkit as dk
    >>> from jax.extend.core import Primitive
    >>> from diffkit import extend
    >>> cube_p = Primitive("my_cube")
    >>> _ = cube_p.def_impl(lambda x: x * x * x)
    >>> _ = cube_p.def_abstract_eval(lambda x: x)  # same shape and dtype
    >>> f = lambda x: jnp.sin(cube_p.bind(x))
    >>> dk.get("tape").grad(f)(0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    diffkit._core.errors.UnsupportedPrimitiveError: tape: no rule for primitive 'my_cube' ...
    >>> extend.RULES["my_cube"] = extend.elementwise(lambda out, x: 3.0 * x * x)
    >>> [round(float(dk.get(m).grad(f)(0.5)), 4) for m in ("dual", "tape")]  # 3x^2 cos(x^3)
    [0.7441, 0.7441]
    >>> del extend.RULES["my_cube"]  # leave the table as it was
"""

from __future__ import annotations

from diffkit._core.interface import Differentiator
from diffkit._core.jaxpr import Interpreter, evaluate, interpret, trace
from diffkit._core.registry import register
from diffkit.rules.kinds import (
    Rule,
    cumulative,
    elementwise,
    linear,
    permutation,
    reduction,
    zero,
)
from diffkit.rules.table import REFUSED, RULES

__all__ = [
    "REFUSED",
    "RULES",
    "Differentiator",
    "Interpreter",
    "Rule",
    "cumulative",
    "elementwise",
    "evaluate",
    "interpret",
    "linear",
    "permutation",
    "reduction",
    "register",
    "trace",
    "zero",
]
