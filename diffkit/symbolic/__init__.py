"""Symbolic differentiation with SymPy (or SymEngine): exact derivative expressions of a
JAX function, compiled back to JAX, with their swell measured.

* :mod:`~diffkit.symbolic.translate`: the translation table, jaxpr primitive -> SymPy
  expression (:data:`~diffkit.symbolic.translate.TRANSLATIONS`), and expression sizes;
* :mod:`~diffkit.symbolic.differentiator`: the ``symbolic`` differentiator (budgets, CSE,
  the generated JAX program, :meth:`Symbolic.swell`).

Example:
    >>> import diffkit as dk, jax.numpy as jnp
    >>> d = dk.get("symbolic")
    >>> float(d.grad(lambda x: jnp.sin(x) * x)(0.0))
    0.0
"""

from diffkit.symbolic.differentiator import BudgetExceeded as BudgetExceeded
from diffkit.symbolic.differentiator import Sizes as Sizes
from diffkit.symbolic.differentiator import SpotCheckError as SpotCheckError
from diffkit.symbolic.differentiator import Swell as Swell
from diffkit.symbolic.differentiator import Symbolic as Symbolic
from diffkit.symbolic.differentiator import SymbolicForm as SymbolicForm

__all__ = ["BudgetExceeded", "Sizes", "SpotCheckError", "Swell", "Symbolic", "SymbolicForm"]
