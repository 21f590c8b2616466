"""Taylor mode by hand: truncated Taylor polynomials of any order through the jaxpr.

* :mod:`~diffkit.taylor.series` -- arithmetic on coefficient lists (Cauchy products, the
  elementwise functions' ODE recurrences);
* :mod:`~diffkit.taylor.jets` -- :class:`Jet`, the value Taylor mode carries;
* :mod:`~diffkit.taylor.rules` -- the Taylor column of the rule table, keyed by primitive,
  generic per kind of row; :func:`how` names each primitive's rule or refuses it;
* :mod:`~diffkit.taylor.interpreter` -- the interpreter (control flow, custom rules);
* :mod:`~diffkit.taylor.differentiator` -- ``dk.get("taylor")``, :func:`jet` (as
  :func:`jax.experimental.jet.jet`), :func:`directional`, :func:`derivatives`.

Example:
    >>> import jax.numpy as jnp
    >>> from diffkit.taylor import directional
    >>> float(directional(jnp.exp, 0.0, 2.0, 3))  # d^3/dt^3 exp(2t) at 0
    8.0
"""

from diffkit.taylor.differentiator import TaylorMode as TaylorMode
from diffkit.taylor.differentiator import derivatives as derivatives
from diffkit.taylor.differentiator import directional as directional
from diffkit.taylor.differentiator import jet as jet
from diffkit.taylor.jets import Jet as Jet
from diffkit.taylor.rules import how as how

__all__ = ["Jet", "TaylorMode", "derivatives", "directional", "how", "jet"]
