"""diffkit: differentiate one JAX function six ways, and measure what each way costs.

Example:
    >>> import diffkit as dk, jax.numpy as jnp
    >>> d = dk.get("jax-rev")
    >>> d.grad(lambda w: jnp.sum(w**2))(jnp.array([1.0, -2.0])).tolist()
    [2.0, -4.0]
"""

from diffkit import accuracy as accuracy
from diffkit import differentiators as differentiators  # registers the built-in ones
from diffkit import examples as examples
from diffkit import fd as fd
from diffkit import harness as harness
from diffkit._errors import DiffkitError as DiffkitError
from diffkit._errors import InputTypeError as InputTypeError
from diffkit._errors import UnknownDifferentiatorError as UnknownDifferentiatorError
from diffkit._errors import UnsupportedPrimitiveError as UnsupportedPrimitiveError
from diffkit._interface import Differentiator as Differentiator
from diffkit._interface import get as get
from diffkit._interface import names as names
from diffkit._interface import options as options
from diffkit._interface import register as register
from diffkit._interface import unregister as unregister
from diffkit.differentiators.dual import Dual as Dual

__version__ = "0.1.0"
