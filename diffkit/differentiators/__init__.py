"""The built-in differentiators. Importing this package registers them.

The families whose machinery spans several modules are packages of their own:
:mod:`diffkit.fd` (stencils, steps and the ``fd`` differentiator) and
:mod:`diffkit.symbolic` (the SymPy translation and the ``symbolic`` differentiator).
"""

from diffkit.differentiators.dual import DualNumbers as DualNumbers
from diffkit.differentiators.jax_ad import JaxForward as JaxForward
from diffkit.differentiators.jax_ad import JaxReverse as JaxReverse
from diffkit.differentiators.stochastic import SPSA as SPSA
from diffkit.differentiators.stochastic import ForwardGradient as ForwardGradient
from diffkit.differentiators.tape import TapeReverse as TapeReverse
from diffkit.fd.differentiator import FiniteDifferences as FiniteDifferences
from diffkit.symbolic.differentiator import Symbolic as Symbolic
from diffkit.taylor.differentiator import TaylorMode as TaylorMode
