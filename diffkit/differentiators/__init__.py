"""The built-in differentiators. Importing this package registers them."""

from diffkit.differentiators.dual import DualNumbers as DualNumbers
from diffkit.differentiators.finite_diff import FiniteDifferences as FiniteDifferences
from diffkit.differentiators.jax_ad import JaxForward as JaxForward
from diffkit.differentiators.jax_ad import JaxReverse as JaxReverse
from diffkit.differentiators.stochastic import SPSA as SPSA
from diffkit.differentiators.stochastic import ForwardGradient as ForwardGradient
from diffkit.differentiators.symbolic import Symbolic as Symbolic
from diffkit.differentiators.tape import TapeReverse as TapeReverse
