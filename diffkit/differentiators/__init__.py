"""The built-in differentiators. Importing this package registers them."""

from diffkit.differentiators.jax_ad import JaxForward as JaxForward
from diffkit.differentiators.jax_ad import JaxReverse as JaxReverse
from diffkit.differentiators.symbolic import Symbolic as Symbolic
