"""Differential operators, ``dk.operators``: the Laplacian (and weighted Hessian traces),
Hessian-vector products, the biharmonic and a general linear operator by its coefficients,
each by several methods -- nested reverse, forward over reverse, Taylor mode, collapsed
Taylor mode (the forward Laplacian), finite differences, and stochastic estimators
(Hutchinson, STDE) that report their variance.

* :mod:`~diffkit.operators.core` -- the operators and their methods;
* :mod:`~diffkit.operators.collapsed` -- collapsed Taylor mode.

Example:
    >>> import jax.numpy as jnp
    >>> import diffkit as dk
    >>> f = lambda x: jnp.sum(x**4)
    >>> float(dk.operators.laplacian(f, jnp.ones(3), method="taylor"))  # 12 x_i^2
    36.0
"""

from diffkit.operators.collapsed import collapsed as collapsed
from diffkit.operators.core import EXACT as EXACT
from diffkit.operators.core import STOCHASTIC as STOCHASTIC
from diffkit.operators.core import Estimate as Estimate
from diffkit.operators.core import biharmonic as biharmonic
from diffkit.operators.core import hessian_trace as hessian_trace
from diffkit.operators.core import hvp as hvp
from diffkit.operators.core import laplacian as laplacian
from diffkit.operators.core import linear_operator as linear_operator
from diffkit.operators.core import variance as variance

__all__ = [
    "EXACT",
    "STOCHASTIC",
    "Estimate",
    "biharmonic",
    "collapsed",
    "hessian_trace",
    "hvp",
    "laplacian",
    "linear_operator",
    "variance",
]
