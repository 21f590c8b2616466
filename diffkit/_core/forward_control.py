"""Control flow for the forward-mode interpreters (dual numbers, Taylor mode), written once.

A forward interpreter's values carry their derivative along (a dual number's tangent, a jet's
coefficients), so ``cond``, ``while_loop`` and ``scan`` run the inner jaxpr on those values
inside JAX's own ``lax.switch``, ``lax.while_loop`` and ``lax.scan``. What differs between
interpreters is only how a list of values crosses into the loop as a pytree of arrays and back:
that is the pair :meth:`ForwardInterpreter.pack` / :meth:`ForwardInterpreter.unpack`, given a
mask of the values that carry a derivative (a plain value under a set mask gets a zero one, so
that every iteration and branch has one pytree structure). Which carries are masked is
:func:`~diffkit._core.jaxpr.carry_mask`'s fixed point; which scan outputs are,
:func:`~diffkit._core.jaxpr.depends`. A batched predicate (a ``while_loop`` under
``jax.vmap``) steps only the lanes still running (:func:`~diffkit._core.jaxpr.where_lanes`).

Example (dual numbers through a ``while_loop``, against JAX's own forward mode):
    >>> import jax, jax.numpy as jnp
    >>> from diffkit import Dual
    >>> from diffkit.differentiators.dual import DUALS
    >>> f = lambda x: jax.lax.while_loop(lambda c: c < 10.0, lambda c: c * jnp.exp(c), x)
    >>> (eqn,) = jax.make_jaxpr(f)(1.0).jaxpr.eqns
    >>> (out,) = while_loop(DUALS, eqn, [Dual(1.0, 1.0)], None)
    >>> y, y_dot = jax.jvp(f, (1.0,), (1.0,))
    >>> bool(jnp.allclose(out.primal, y) and jnp.allclose(out.tangent, y_dot))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from diffkit._core.jaxpr import (
    Interpreter,
    carry_mask,
    depends,
    evaluate,
    interpret,
    is_float,
    where_lanes,
)

__all__ = ["CONTROL_FLOW", "ForwardInterpreter", "cond", "scan", "while_loop"]


class ForwardInterpreter(Interpreter):
    """An :class:`~diffkit._core.jaxpr.Interpreter` whose values cross JAX's control flow:
    :meth:`pack` and :meth:`unpack` on top of the dispatch. Its ``special`` table takes
    :data:`CONTROL_FLOW`'s handlers for ``cond``, ``while`` and ``scan``.

    Example (dual numbers pack into a pair of lists, primals and the masked tangents):
        >>> from diffkit import Dual
        >>> from diffkit.differentiators.dual import DUALS
        >>> packed = DUALS.pack([Dual(2.0, 1.0), 3.0], [True, True])  # 3.0: a zero tangent
        >>> DUALS.unpack(packed, [True, True])
        [Dual(primal=2.0, tangent=1.0), Dual(primal=3.0, tangent=0.0)]
    """

    def pack(self, values: Sequence[Any], mask: Sequence[bool]) -> Any:
        """``values`` as one pytree of arrays: those flagged in ``mask`` with their derivative
        (zero for a plain value), the others as their plain value."""
        raise NotImplementedError

    def unpack(self, tree: Any, mask: Sequence[bool]) -> list[Any]:
        """The values :meth:`pack` made ``tree`` from, under the same ``mask``: interpreter
        values where ``mask`` is set, plain values elsewhere."""
        raise NotImplementedError


def _active(fwd: ForwardInterpreter, values: Sequence[Any]) -> list[bool]:
    return [fwd.active(v) for v in values]


def cond(fwd: ForwardInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    """A ``cond`` equation (``lax.cond``, ``lax.switch``): a ``lax.switch`` over the branches'
    evaluations by ``fwd``; every floating-point output carries a derivative.

    Example (Taylor mode of order 2, against nested ``jax.jvp``):
        >>> import jax, jax.numpy as jnp
        >>> from diffkit.taylor.interpreter import at
        >>> from diffkit.taylor.jets import Jet
        >>> f = lambda x: jax.lax.cond(x > 0, jnp.sin, jnp.cos, x)
        >>> eqn = jax.make_jaxpr(f)(0.5).jaxpr.eqns[-1]  # after the predicate's equations
        >>> x = Jet(jnp.asarray(0.5), (jnp.asarray(1.0), jnp.asarray(0.0)))  # x(t) = 0.5 + t
        >>> (out,) = cond(at(2), eqn, [jnp.int32(1), x], None)  # branch 1: the true one
        >>> d2 = jax.jvp(lambda x: jax.jvp(f, (x,), (1.0,))[1], (0.5,), (1.0,))[1]
        >>> bool(jnp.allclose(out.coeffs[1], d2 / 2))  # coefficients are x^(k) / k!
        True
    """
    index, ops = fwd.primal(invals[0]), invals[1:]
    mask = _active(fwd, ops)
    out_float = [is_float(v.aval) for v in eqn.outvars]

    def branch(closed: Any) -> Callable[[Any], Any]:
        def run(packed: Any) -> Any:
            return fwd.pack(fwd.run(closed, fwd.unpack(packed, mask), site), out_float)

        return run

    branches = [branch(b) for b in eqn.params["branches"]]
    return fwd.unpack(lax.switch(index, branches, fwd.pack(ops, mask)), out_float)


def while_loop(fwd: ForwardInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    """A ``while`` equation: a ``lax.while_loop`` whose carry holds the derivatives of the
    carries :func:`~diffkit._core.jaxpr.carry_mask` finds active; the predicate sees primals.
    Under ``jax.vmap`` (a batched predicate) the loop runs while any lane does, and only the
    lanes still running take each step.

    Example (a vmapped loop, its predicate batched: each lane stops on its own):
        >>> import jax, jax.numpy as jnp
        >>> from diffkit import Dual
        >>> from diffkit.differentiators.dual import DUALS
        >>> f = lambda x: jax.lax.while_loop(lambda c: c < 10.0, lambda c: c * 3.0, x)
        >>> xs = jnp.array([1.0, 5.0])
        >>> (eqn,) = jax.make_jaxpr(jax.vmap(f))(xs).jaxpr.eqns
        >>> (out,) = while_loop(DUALS, eqn, [Dual(xs, jnp.ones(2))], None)
        >>> out.primal.tolist(), out.tangent.tolist()  # 1 -> 27 in 3 steps, 5 -> 15 in 1
        ([27.0, 15.0], [27.0, 3.0])
    """
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cconsts = [fwd.primal(v) for v in invals[:nc]]
    bconsts, init = invals[nc : nc + nb], invals[nc + nb :]
    body, test = p["body_jaxpr"], p["cond_jaxpr"]
    mask = carry_mask(body.jaxpr, _active(fwd, bconsts), _active(fwd, init))

    def pred(carry: Any) -> Any:
        primals = [fwd.primal(v) for v in fwd.unpack(carry, mask)]
        return interpret(test, [*cconsts, *primals], evaluate)[0]

    def step(carry: Any) -> Any:
        new = fwd.pack(fwd.run(body, [*bconsts, *fwd.unpack(carry, mask)], site), mask)
        if jnp.ndim(test.out_avals[0]) == 0:
            return new
        # a batched predicate (a vmapped loop): only the lanes still running take the step
        running = pred(carry)
        return jax.tree.map(lambda n, o: where_lanes(running, n, o), new, carry)

    return fwd.unpack(lax.while_loop(lambda c: jnp.any(pred(c)), step, fwd.pack(init, mask)), mask)


def scan(fwd: ForwardInterpreter, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    """A ``scan`` equation: a ``lax.scan`` (same length, direction and unrolling) whose carry,
    inputs and outputs hold the derivatives of the active ones (the carries by
    :func:`~diffkit._core.jaxpr.carry_mask`, the outputs by :func:`~diffkit._core.jaxpr.depends`).

    Example (dual numbers, a reversed scan, against ``jax.jvp``):
        >>> import jax, jax.numpy as jnp
        >>> from diffkit import Dual
        >>> from diffkit.differentiators.dual import DUALS
        >>> def f(xs):
        ...     step = lambda c, x: (c * x + 1.0, jnp.sin(c))
        ...     return jax.lax.scan(step, 1.0, xs, reverse=True)
        >>> xs, dxs = jnp.array([0.5, 2.0, -1.0]), jnp.ones(3)
        >>> (eqn,) = jax.make_jaxpr(f)(xs).jaxpr.eqns
        >>> carry, ys = scan(DUALS, eqn, [1.0, Dual(xs, dxs)], None)
        >>> _, (want_carry_dot, want_ys_dot) = jax.jvp(f, (xs,), (dxs,))
        >>> bool(jnp.allclose(carry.tangent, want_carry_dot))
        True
        >>> bool(jnp.allclose(ys.tangent, want_ys_dot))
        True
    """
    p = eqn.params
    nc, nk = p["num_consts"], p["num_carry"]
    consts, init, xs = invals[:nc], invals[nc : nc + nk], invals[nc + nk :]
    body = p["jaxpr"]
    cmask = carry_mask(body.jaxpr, _active(fwd, consts), _active(fwd, init), _active(fwd, xs))
    xmask = _active(fwd, xs)
    ymask = depends(body.jaxpr, [*_active(fwd, consts), *cmask, *xmask])[nk:]

    def step(carry: Any, x: Any) -> tuple[Any, Any]:
        args = [*consts, *fwd.unpack(carry, cmask), *fwd.unpack(x, xmask)]
        outs = fwd.run(body, args, site)
        return fwd.pack(outs[:nk], cmask), fwd.pack(outs[nk:], ymask)

    carry, ys = lax.scan(
        step,
        fwd.pack(init, cmask),
        fwd.pack(xs, xmask),
        length=p["length"],
        reverse=p["reverse"],
        unroll=p["unroll"],
    )
    return [*fwd.unpack(carry, cmask), *fwd.unpack(ys, ymask)]


#: The handlers a forward interpreter's ``special`` table takes, by primitive name.
CONTROL_FLOW = {"cond": cond, "while": while_loop, "scan": scan}
