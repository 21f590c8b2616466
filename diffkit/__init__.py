"""diffkit: differentiate one JAX function six ways, and measure what each way costs.

Example:
    >>> import diffkit as dk, jax.numpy as jnp
    >>> d = dk.get("jax-rev")
    >>> d.grad(lambda w: jnp.sum(w**2))(jnp.array([1.0, -2.0])).tolist()
    [2.0, -4.0]

Each name loads its module on first use (``dk.get`` above; the registry then loads the
built-in differentiators): ``import diffkit`` alone imports no JAX, so the ``diffkit``
command answers ``--help`` at once and can pick the JAX platform before JAX starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffkit._core.lazy import exports

__version__ = "0.1.0"

#: Public name -> the module that defines it ("" for a submodule of diffkit).
_EXPORTS = {
    "accuracy": "",
    "checkpoint": "",
    "differentiators": "",  # importing it registers the built-in differentiators
    "examples": "",
    "extend": "",
    "fd": "",
    "harness": "",
    "operators": "",
    "taylor": "",
    "sparse": "",
    "testing": "",
    "DiffkitError": "diffkit._core.errors",
    "GradCheckError": "diffkit._core.errors",
    "InputTypeError": "diffkit._core.errors",
    "UnknownDifferentiatorError": "diffkit._core.errors",
    "UnsupportedPrimitiveError": "diffkit._core.errors",
    "accumulate": "diffkit.checkpoint",
    "Differentiator": "diffkit._core.interface",
    "get": "diffkit._core.registry",
    "names": "diffkit._core.registry",
    "options": "diffkit._core.registry",
    "register": "diffkit._core.registry",
    "unregister": "diffkit._core.registry",
    "explain": "diffkit.html",  # the explorable backprop page of a small function
    "Dual": "diffkit.differentiators.dual",
    "BudgetExceeded": "diffkit.symbolic",
    "Diagnosis": "diffkit.diagnosis",
    "doctor": "diffkit.diagnosis",
    "check_grads": "diffkit.testing",
    "compare": "diffkit.harness",
    "jacobian_sparsity": "diffkit.sparse",
    "hessian_sparsity": "diffkit.sparse",
    "sweep": "diffkit.harness",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from diffkit import accuracy as accuracy
    from diffkit import checkpoint as checkpoint
    from diffkit import differentiators as differentiators
    from diffkit import examples as examples
    from diffkit import extend as extend
    from diffkit import fd as fd
    from diffkit import harness as harness
    from diffkit import operators as operators
    from diffkit import sparse as sparse
    from diffkit import taylor as taylor
    from diffkit import testing as testing
    from diffkit._core.errors import DiffkitError as DiffkitError
    from diffkit._core.errors import GradCheckError as GradCheckError
    from diffkit._core.errors import InputTypeError as InputTypeError
    from diffkit._core.errors import UnknownDifferentiatorError as UnknownDifferentiatorError
    from diffkit._core.errors import UnsupportedPrimitiveError as UnsupportedPrimitiveError
    from diffkit._core.interface import Differentiator as Differentiator
    from diffkit._core.registry import get as get
    from diffkit._core.registry import names as names
    from diffkit._core.registry import options as options
    from diffkit._core.registry import register as register
    from diffkit._core.registry import unregister as unregister
    from diffkit.checkpoint import accumulate as accumulate
    from diffkit.diagnosis import Diagnosis as Diagnosis
    from diffkit.diagnosis import doctor as doctor
    from diffkit.differentiators.dual import Dual as Dual
    from diffkit.harness import compare as compare
    from diffkit.harness import sweep as sweep
    from diffkit.html import explain as explain
    from diffkit.sparse import hessian_sparsity as hessian_sparsity
    from diffkit.sparse import jacobian_sparsity as jacobian_sparsity
    from diffkit.symbolic import BudgetExceeded as BudgetExceeded
    from diffkit.testing import check_grads as check_grads
