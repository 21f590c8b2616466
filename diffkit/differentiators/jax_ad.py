"""The two JAX-backed differentiators: ``jax-fwd`` (``jax.jvp``) and ``jax-rev`` (``jax.vjp``).

They are the references the hand-written differentiators are checked against, and the
baselines they are timed against.
"""

from __future__ import annotations

import jax

from diffkit._interface import Differentiator
from diffkit._registry import register

__all__ = ["JaxForward", "JaxReverse"]


@register("jax-fwd")
class JaxForward(Differentiator):
    """Forward mode by :func:`jax.jvp`. A gradient of ``n`` parameters costs ``n`` JVPs,
    vectorised with ``jax.vmap`` in chunks that fit ``memory_budget``; a VJP goes through
    the Jacobian.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> dk.get("jax-fwd").jacobian(lambda x: jnp.sin(x))(jnp.zeros(2)).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    mode = "forward"
    native = frozenset({"jvp"})
    traced = True
    description = "jax.jvp; Jacobians and gradients by vmapped JVPs, chunked"

    def _jvp(self, fun, primals, tangents):
        return jax.jvp(fun, primals, tangents, has_aux=True)


@register("jax-rev")
class JaxReverse(Differentiator):
    """Reverse mode by :func:`jax.vjp`: a gradient costs one forward and one backward pass;
    a JVP goes through the Jacobian (``m`` VJPs).

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> float(dk.get("jax-rev").grad(lambda x: jnp.sum(jnp.exp(x)))(jnp.zeros(3))[0])
        1.0
    """

    mode = "reverse"
    native = frozenset({"vjp"})
    traced = True
    description = "jax.vjp; one backward pass per gradient"

    def _vjp(self, fun, primals):
        outs, vjp_fn, aux = jax.vjp(fun, *primals, has_aux=True)
        return outs, vjp_fn, aux
