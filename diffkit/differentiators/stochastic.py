"""Gradients without backpropagation: ``forward-grad`` and ``spsa`` (``mode="stochastic"``).

Both estimate the Jacobian from ``k`` random directions ``v_i`` with ``E[v v^T] = I``:

    J_hat = (1/k) sum_i (J v_i) v_i^T,        E[J_hat] = J,

and answer every product with that one estimate: a VJP is ``J_hat^T y_bar``, a JVP
``J_hat x_dot``, a gradient ``(1/k) sum_i (grad f . v_i) v_i``. They differ in how
``J v_i`` is obtained: ``forward-grad`` takes one JVP per direction (exact directional
derivatives, vmapped; Baydin et al. 2022, "Gradients without backpropagation"), ``spsa`` two
evaluations, ``(f(x + c v) - f(x - c v)) / 2c`` (Spall 1992; MeZO, Malladi et al. 2023).

Randomness is explicit: ``seed`` (an int) or ``key`` (a JAX PRNG key, traced values
welcome), and :meth:`Stochastic.with_key` returns the same estimator with another key,
inside ``jax.jit`` or ``jax.vmap`` too. One key gives one estimate, so results are
reproducible and a JVP, a VJP and a gradient taken with the same key agree. The second
moment ``E||g_hat||^2 / ||g||^2`` of a gradient estimate is :meth:`Stochastic.second_moment`
(``1 + (n + 1)/k`` for Gaussian directions, ``1 + (n - 1)/k`` for Rademacher, ``n/k`` for
orthogonalised ones).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from diffkit._core.errors import DiffkitError
from diffkit._core.interface import Differentiator, FlatFun, Mode
from diffkit._core.registry import register
from diffkit._core.trees import bytes_per_direction, unravel_like
from diffkit._core.types import Array

__all__ = ["SPSA", "ForwardGradient", "Stochastic"]

DISTRIBUTIONS = ("gaussian", "rademacher")


class Stochastic(Differentiator):
    """Shared base of the estimators: directions, the estimate ``J_hat`` and its products.

    Subclasses implement :meth:`_directional`: ``J v`` for a stack of directions.
    """

    mode: ClassVar[Mode] = "stochastic"
    native = frozenset({"jvp", "vjp"})
    traced = True
    #: Name of the option that sets ``k`` (``tangents`` or ``samples``).
    count_name = "k"

    def __init__(
        self,
        *,
        k: int = 1,
        seed: int | None = None,
        key: Array | None = None,
        distribution: str = "gaussian",
        orthogonal: bool = False,
        chunk_size: int | None = None,
        memory_budget: float = 2**30,
    ) -> None:
        super().__init__(chunk_size=chunk_size, memory_budget=memory_budget)
        where = f"{self.name}: {self.count_name}"
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DiffkitError(f"{where} must be a positive int, got {k!r}")
        if distribution not in DISTRIBUTIONS:
            raise DiffkitError(
                f"{self.name}: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                f"got {distribution!r}"
            )
        if orthogonal and distribution != "gaussian":
            raise DiffkitError(
                f"{self.name}: orthogonal directions are orthogonalised Gaussians; "
                "use distribution='gaussian' with orthogonal=True"
            )
        self.k, self.distribution, self.orthogonal = k, distribution, bool(orthogonal)
        self.key = _as_key(self.name, seed, key)

    def __repr__(self) -> str:
        how = f"{self.k} {self.distribution}{' orthogonal' if self.orthogonal else ''}"
        return f"<diffkit differentiator {self.name!r} (stochastic, {how})>"

    def with_key(self, key: Array | int) -> Stochastic:
        """The same estimator drawing its directions from ``key`` (a JAX PRNG key, possibly
        traced, or an int seed): fresh directions per training step, or a vmap over keys.

        Example:
            >>> import diffkit as dk, jax, jax.numpy as jnp
            >>> fg = dk.get("forward-grad", tangents=2)
            >>> f = lambda x: jnp.sum(x**2)
            >>> keys = jax.random.split(jax.random.key(0), 3)
            >>> jax.jit(jax.vmap(lambda k: fg.with_key(k).grad(f)(jnp.ones(4))))(keys).shape
            (3, 4)
        """
        other = copy.copy(self)
        seed, key = (key, None) if isinstance(key, int) else (None, key)
        other.key = _as_key(self.name, seed, key)
        return other

    # ------------------------------------------------------------------ costs
    def passes(self, op: str, n: int, m: int = 1) -> int:
        """Directional derivatives per estimate: ``k`` for every op (``n`` and ``m`` do not
        enter; a Jacobian or gradient is the same rank-``k`` estimate).

        Example:
            >>> import diffkit as dk
            >>> dk.get("forward-grad", tangents=4).passes("grad", n=10**6)
            4
        """
        super().passes("jvp" if op in ("grad", "jacobian") else op, n, m)  # checks op
        return self.k

    def second_moment(self, n: int) -> float:
        """Theory for ``E||g_hat||^2 / ||g||^2`` of one gradient estimate of ``n`` inputs:
        ``1 + (n + 1)/k`` (Gaussian), ``1 + (n - 1)/k`` (Rademacher), ``n/k`` (orthogonal);
        for SPSA the same as its directions, up to the O(step^2) difference quotient error.

        Example:
            >>> import diffkit as dk
            >>> dk.get("forward-grad").second_moment(100)  # n + 2 for one Gaussian tangent
            102.0
        """
        if self.orthogonal:
            return n / self.k
        extra = n + 1 if self.distribution == "gaussian" else n - 1
        return 1.0 + extra / self.k

    # ------------------------------------------------------------- directions
    def directions(self, n: int, dtype: Any) -> Array:
        """The ``(k, n)`` directions this estimator's key gives, with ``E[v v^T] = I``.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> v = dk.get("spsa", samples=3, seed=1).directions(5, jnp.float32)
            >>> v.shape, sorted(set(abs(v).ravel().tolist()))
            ((3, 5), [1.0])
        """
        if self.distribution == "rademacher":
            return _rademacher(self.key, self.k, n, dtype)
        v = jax.random.normal(self.key, (self.k, n), dtype)
        if not self.orthogonal:
            return v
        if self.k > n:
            raise DiffkitError(
                f"{self.name}: {self.k} orthogonal directions need at least as many inputs, "
                f"got n={n}; use tangents <= n or orthogonal=False"
            )
        q, _ = jnp.linalg.qr(v.T)  # (n, k); its span is uniform, so E[q q^T] = (k/n) I
        return math.sqrt(n) * q.T

    def _directional(self, fun: FlatFun, primals: tuple[Array, ...], v: Array) -> Array:
        """``J v_i`` for each row of ``v`` (k, n): a (k, m) array of flat outputs."""
        raise NotImplementedError

    def _estimate(self, fun: FlatFun, primals: tuple[Array, ...]):
        """``(outs, aux, v, jv)``: the directions (k, n) and ``J v_i`` (k, m)."""
        x, _ = ravel_pytree(primals)
        if jnp.iscomplexobj(x):
            raise DiffkitError(
                f"{self.name}: complex inputs are not supported; pass real and imaginary "
                "parts as separate real arrays"
            )
        outs, aux = fun(*primals)
        v = self.directions(x.size, x.dtype)
        jv = self._directional(fun, primals, v)
        return outs, aux, v, jv.astype(x.dtype)

    def _map_directions(self, fn: Callable[[Array], Array], v: Array, fun, primals) -> Array:
        """``fn`` over the rows of ``v``: vmapped, in chunks within the memory budget."""
        per_dir = bytes_per_direction(fun, primals)
        return self._map_basis(lambda i: fn(v[i]), v.shape[0], per_dir)

    # ------------------------------------------------------- the primitives
    def _jvp(self, fun: FlatFun, primals: tuple[Array, ...], tangents: tuple[Array, ...]):
        outs, aux, v, jv = self._estimate(fun, primals)
        x_dot, _ = ravel_pytree(tangents)
        y_dot = jv.T @ (v @ x_dot.astype(v.dtype)) / self.k
        return outs, _cast_like(outs, unravel_like(outs, y_dot)), aux

    def _vjp(self, fun: FlatFun, primals: tuple[Array, ...]):
        outs, aux, v, jv = self._estimate(fun, primals)

        def vjp_fn(out_bars: tuple[Array, ...]) -> tuple[Array, ...]:
            y_bar, _ = ravel_pytree(out_bars)
            x_bar = (jv @ y_bar.astype(jv.dtype)) @ v / self.k
            return _cast_like(primals, unravel_like(primals, x_bar))

        return outs, vjp_fn, aux

    def _cols(self, fun, primals, outs, split=False) -> Array:
        """``J_hat^T`` (n, m) from one estimate (not ``n`` products with it)."""
        _, _, v, jv = self._estimate(fun, primals)
        return v.T @ jv / self.k

    def _rows(self, fun, primals, vjp_fn, outs) -> Array:
        return self._cols(fun, primals, outs).T

    def hessian(
        self, f: Callable, argnums: int | Sequence[int] = 0, sparsity: Any = None
    ) -> Callable:
        """An unbiased Hessian estimate: the estimated Jacobian (one key) of the estimated
        gradient (an independent key). With one key for both, ``E[P H P] != H``. (No
        ``sparsity``: an estimate is not compressed; diffkit.sparse refuses it.)

        Example:
            >>> import diffkit as dk, jax, jax.numpy as jnp
            >>> h = dk.get("forward-grad", tangents=3, seed=0).hessian(lambda x: x @ x)
            >>> jax.jit(h)(jnp.ones(3)).shape
            (3, 3)
        """
        if sparsity is not None:
            from diffkit.sparse.compressed import sparse_hessian

            return sparse_hessian(self, f, argnums, sparsity)  # refuses in one line
        outer, inner = jax.random.split(self.key)
        return self.with_key(outer).jacobian(self.with_key(inner).grad(f, argnums), argnums)


@register("forward-grad")
class ForwardGradient(Stochastic):
    """The forward gradient: ``k`` JVPs along random tangents ``v_i`` (one vmapped pass),
    ``g_hat = (1/k) sum_i (grad f . v_i) v_i``; unbiased, with no backward pass.

    Options: ``tangents`` (k), ``seed`` or ``key``, ``distribution`` (``"gaussian"`` or
    ``"rademacher"``), ``orthogonal`` (QR-orthogonalised Gaussian tangents scaled to
    ``sqrt(n)``: second moment ``n/k``, exact at ``k = n``), ``chunk_size``, ``memory_budget``.

    Example:
        >>> import diffkit as dk, jax, jax.numpy as jnp
        >>> fg = dk.get("forward-grad", tangents=4, orthogonal=True, seed=0)
        >>> g = jax.jit(fg.grad(lambda x: x @ x))(jnp.arange(4.0))
        >>> [round(v, 5) + 0.0 for v in g.tolist()]
        [0.0, 2.0, 4.0, 6.0]
    """

    description = "forward gradient: k vmapped JVPs along random tangents (unbiased estimate)"
    count_name = "tangents"

    def __init__(
        self,
        *,
        tangents: int = 1,
        seed: int | None = None,
        key: Array | None = None,
        distribution: str = "gaussian",
        orthogonal: bool = False,
        chunk_size: int | None = None,
        memory_budget: float = 2**30,
    ) -> None:
        super().__init__(
            k=tangents, seed=seed, key=key, distribution=distribution, orthogonal=orthogonal,
            chunk_size=chunk_size, memory_budget=memory_budget,
        )  # fmt: skip

    def _directional(self, fun: FlatFun, primals: tuple[Array, ...], v: Array) -> Array:
        _, unravel = ravel_pytree(primals)

        def jv(v_i: Array) -> Array:
            _, y_dot, _ = jax.jvp(fun, primals, tuple(unravel(v_i)), has_aux=True)
            return ravel_pytree(y_dot)[0]

        return self._map_directions(jv, v, fun, primals)


@register("spsa")
class SPSA(Stochastic):
    """Simultaneous-perturbation stochastic approximation: two evaluations per sample,
    ``(f(x + c v) - f(x - c v)) / 2c`` along Rademacher ``v``, scaled back onto ``v``.

    Options: ``samples`` (k), ``step`` (c; default ``eps^(1/3) * max(1, rms(x))`` of the
    input dtype, the central difference's balance of truncation and rounding), ``seed`` or
    ``key``, ``distribution`` (``"rademacher"`` or ``"gaussian"``), ``chunk_size``,
    ``memory_budget``. Unbiased up to the difference quotient's ``O(c^2)`` error (exact for
    quadratics); only the function's values are needed, no derivative code.

    Example:
        >>> import diffkit as dk, jax, jax.numpy as jnp
        >>> sp = dk.get("spsa", samples=8, seed=0)
        >>> sp.evaluations("grad", n=10**6)
        16
        >>> jax.jit(sp.grad(lambda x: jnp.sum(x**2)))(jnp.ones(3)).shape
        (3,)
    """

    description = "SPSA: 2 evaluations per random +-1 direction (zeroth order, unbiased)"
    count_name = "samples"

    def __init__(
        self,
        *,
        samples: int = 1,
        step: float | None = None,
        seed: int | None = None,
        key: Array | None = None,
        distribution: str = "rademacher",
        chunk_size: int | None = None,
        memory_budget: float = 2**30,
    ) -> None:
        super().__init__(
            k=samples, seed=seed, key=key, distribution=distribution,
            chunk_size=chunk_size, memory_budget=memory_budget,
        )  # fmt: skip
        if step is not None and not (isinstance(step, int | float) and step > 0):
            raise DiffkitError(f"spsa: step must be a positive number or None, got {step!r}")
        self.step = step

    def evaluations(self, op: str, n: int, m: int = 1) -> int:
        """Calls of ``f`` per estimate: two per sample, whatever ``n`` (``f(x)`` itself is
        the primal and not counted).

        Example:
            >>> import diffkit as dk
            >>> dk.get("spsa", samples=3).evaluations("jacobian", n=50, m=4)
            6
        """
        return 2 * self.passes(op, n, m)

    def _directional(self, fun: FlatFun, primals: tuple[Array, ...], v: Array) -> Array:
        x, unravel = ravel_pytree(primals)
        if self.step is None:
            eps = float(jnp.finfo(x.dtype).eps)
            c = eps ** (1 / 3) * jnp.maximum(1.0, jnp.sqrt(jnp.mean(x * x)))
        else:
            c = jnp.asarray(self.step, x.dtype)
        f = lambda z: ravel_pytree(fun(*unravel(z))[0])[0]  # noqa: E731

        def quotient(v_i: Array) -> Array:
            return (f(x + c * v_i) - f(x - c * v_i)) / (2 * c)

        return self._map_directions(quotient, v, fun, primals)


# ---------------------------------------------------------------- helpers


def _as_key(name: str, seed: int | None, key: Any) -> Array:
    """A typed PRNG key from ``seed`` or ``key`` (not both; default seed 0)."""
    if seed is not None and key is not None:
        raise DiffkitError(f"{name}: give seed or key, not both")
    if key is None:
        if isinstance(seed, bool) or not isinstance(seed, int | type(None)):
            raise DiffkitError(f"{name}: seed must be an int, got {seed!r}")
        return jax.random.key(seed or 0)
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise DiffkitError(
                f"{name}: key must be one PRNG key, got shape {key.shape}; "
                "use jax.vmap over with_key for many"
            )
        return key
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)  # a raw jax.random.PRNGKey
    raise DiffkitError(
        f"{name}: key must be a JAX PRNG key (jax.random.key(0)), got {type(key).__name__}"
    )


def _rademacher(key: Array, k: int, n: int, dtype: Any) -> Array:
    """``(k, n)`` random signs, 32 from each random 32-bit word: on a CPU, drawing the bits
    (threefry) costs far more than the function's JVP, and ``jax.random.rademacher`` draws a
    word per sign."""
    words = jax.random.bits(key, (k, -(-n // 32)), jnp.uint32)
    bits = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return (2 * bits.reshape(k, -1)[:, :n].astype(dtype) - 1).astype(dtype)


def _cast_like(like: Sequence[Array], values: Sequence[Array]) -> tuple[Array, ...]:
    return tuple(v.astype(a.dtype) for a, v in zip(like, values, strict=True))
