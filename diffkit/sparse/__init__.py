"""Sparse Jacobians and Hessians: sparsity detected from the jaxpr, colouring, and
compressed derivatives for every method (docs/sparse.md).

* :func:`jacobian_sparsity`, :func:`hessian_sparsity` -- the pattern, a boolean
  ``scipy.sparse.csr_array`` (:mod:`diffkit.sparse.detect`, :mod:`diffkit.sparse.rules`);
* :func:`colour_columns`, :func:`colour_rows`, :func:`colour_star` -- greedy colourings
  (:mod:`diffkit.sparse.colouring`);
* ``dk.get(m).jacobian(f, sparsity="auto")``, ``.hessian(f, sparsity="auto")`` -- one pass
  per colour, a BCOO; :func:`prepare_jacobian`, :func:`prepare_hessian`,
  :func:`plan_jacobian` -- the plan alone (:mod:`diffkit.sparse.compressed`);
* ``diffkit compare --sparse`` (methods named ``name+sparse`` in the harness) -- dense against
  compressed per method and size, with the pattern's nonzeros, colours, detection and
  colouring times (the sparse families are in :mod:`diffkit.harness.sparse_families`).

Example:
    >>> import diffkit as dk, jax.numpy as jnp
    >>> p = dk.jacobian_sparsity(lambda x: jnp.sin(x) * 2.0, jnp.ones(3))
    >>> p.nnz, dk.sparse.colour_columns(p).n_colours
    (3, 1)
"""

from diffkit.sparse.colouring import Colouring as Colouring
from diffkit.sparse.colouring import check_colouring as check_colouring
from diffkit.sparse.colouring import colour_columns as colour_columns
from diffkit.sparse.colouring import colour_rows as colour_rows
from diffkit.sparse.colouring import colour_star as colour_star
from diffkit.sparse.compressed import Plan as Plan
from diffkit.sparse.compressed import plan_jacobian as plan_jacobian
from diffkit.sparse.compressed import prepare_hessian as prepare_hessian
from diffkit.sparse.compressed import prepare_jacobian as prepare_jacobian
from diffkit.sparse.detect import hessian_sparsity as hessian_sparsity
from diffkit.sparse.detect import jacobian_sparsity as jacobian_sparsity

__all__ = [
    "Colouring",
    "Plan",
    "check_colouring",
    "colour_columns",
    "colour_rows",
    "colour_star",
    "hessian_sparsity",
    "jacobian_sparsity",
    "plan_jacobian",
    "prepare_hessian",
    "prepare_jacobian",
]
