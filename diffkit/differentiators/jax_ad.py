"""The two JAX-backed differentiators: ``jax-fwd`` (``jax.jvp``) and ``jax-rev`` (``jax.vjp``).

They are the references the hand-written differentiators are checked against, and the
baselines they are timed against.
"""

from __future__ import annotations

from typing import Any

import jax

from diffkit import checkpoint as _checkpoint
from diffkit._core.interface import Differentiator
from diffkit._core.jaxpr import interpret
from diffkit._core.registry import register

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

    Options: ``policy`` names a ``jax.checkpoint`` policy (:func:`diffkit.checkpoint.policy`:
    ``"nothing_saveable"``, ``"dots_saveable"``, ``"dots_with_no_batch_dims_saveable"``,
    ``"save_only(name,...)"``, ``"offload_dot_with_no_batch_dims"``, ...) applied to each
    ``lax.scan`` step (to the whole function where it has no scan); ``checkpoint``
    (``"every(k)"``, ``"sqrt"``) runs each scan as nested scans whose segments are
    checkpointed, as the tape's schedules of the same names.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> float(dk.get("jax-rev").grad(lambda x: jnp.sum(jnp.exp(x)))(jnp.zeros(3))[0])
        1.0
        >>> f = lambda x: jax.lax.scan(lambda c, _: (jnp.sin(c), None), x, length=9)[0]
        >>> d = dk.get("jax-rev", policy="nothing_saveable", checkpoint="sqrt")
        >>> bool(jnp.allclose(d.grad(f)(1.0), jax.grad(f)(1.0)))
        True
    """

    mode = "reverse"
    native = frozenset({"vjp"})
    traced = True
    description = "jax.vjp; one backward pass per gradient"

    def __init__(
        self,
        *,
        policy: str | None = None,
        checkpoint: str | _checkpoint.Schedule | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.policy = _checkpoint.policy(policy)
        self.handle = _checkpoint.scan_rewriter(self.policy, _checkpoint.parse(checkpoint))

    def _vjp(self, fun, primals):
        if self.handle is not None:
            fun = self._rewritten(fun)
        outs, vjp_fn, aux = jax.vjp(fun, *primals, has_aux=True)
        return outs, vjp_fn, aux

    def _rewritten(self, fun):
        """``fun`` (the traced record) with its scans checkpointed; the whole of it under
        ``jax.checkpoint(policy)`` where it has no scan."""
        closed, n = fun.closed, fun.n_outs

        def run(*primals):
            outs = interpret(closed, primals, self.handle)
            return tuple(outs[:n]), tuple(outs[n:])

        if self.policy is not None and not _checkpoint.has_scan(closed.jaxpr):
            return jax.checkpoint(run, policy=self.policy)
        return run
