"""The type aliases shared by the whole package, defined once.

``Array`` is any array a derivative sees: a ``jax.Array``, a tracer standing for one while
JAX traces (``jit``, ``vmap``, ``jvp``, a jaxpr's evaluation), or a NumPy array (a rule's
constants, a measurement's reference). No one class covers them all (a NumPy array is no
``jax.Array``), so the alias is ``Any``: it documents what a value is without promising the
type checker a class. ``PyTree`` is a nest of tuples, lists, dicts and registered nodes whose
leaves are arrays.
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Array", "PyTree"]

#: A JAX array, a tracer of one, or a NumPy array (see the module's docstring).
Array: TypeAlias = Any
#: A pytree of arrays.
PyTree: TypeAlias = Any
