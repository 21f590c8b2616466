"""Differential operators, each by several methods: the Laplacian (and weighted Hessian
traces), Hessian-vector products, the biharmonic, and a general linear operator given by its
coefficients.

Exact methods for a scalar ``f: R^d -> R`` at ``x`` (any shape; ``d = x.size``):

========================  ==============================================================
``"nested-reverse"``      the Hessian by reverse over reverse (``jacrev(grad f)``), then
                          its trace: ``d`` reverse passes over a reverse pass
``"hvp"``                 forward over reverse: one HVP ``H e_i`` per basis direction
                          (``jvp(grad f)``), vmapped; ``sum_i e_i . H e_i``
``"taylor"``              Taylor mode (:mod:`diffkit.taylor`): one 2-jet per direction,
                          ``d^2/dt^2 f(x + t e_i)``, vmapped
``"collapsed"``           collapsed Taylor mode (:mod:`diffkit.operators.collapsed`): the
                          ``d`` first-order coefficients, one summed second-order one
``"forward-laplacian"``   the forward Laplacian (Li et al. 2023); it *is* collapsed Taylor
                          mode of order 2 (Dangel et al. 2025), and runs that code
``"jet"``                 ``jax.experimental.jet`` 2-jets, vmapped (JAX's own Taylor mode)
``"fd"``                  central second differences, ``2d + 1`` evaluations of ``f``
========================  ==============================================================

Stochastic methods return an :class:`Estimate` (mean, standard error, sample variance):
``"hutchinson"`` (``E[v^T H v] = tr H`` for Rademacher or Gaussian probes ``v``, each
``v^T H v`` one 2-jet) and ``"stde"`` (the Stochastic Taylor Derivative Estimator of Shi et
al. 2024 in its sparse form: ``d`` times the mean of ``f_ii`` over coordinates ``i`` drawn
uniformly, one 2-jet along ``e_i`` each). :func:`variance` gives each one's theoretical
per-sample variance from the Hessian.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import InputTypeError
from diffkit.operators.collapsed import collapsed
from diffkit.taylor.differentiator import jet

__all__ = [
    "EXACT",
    "STOCHASTIC",
    "Estimate",
    "biharmonic",
    "hessian_trace",
    "hvp",
    "laplacian",
    "linear_operator",
    "variance",
]

#: The exact methods of :func:`laplacian` / :func:`hessian_trace`.
EXACT = (
    "nested-reverse",
    "hvp",
    "taylor",
    "collapsed",
    "forward-laplacian",
    "jet",
    "fd",
)
#: The stochastic methods, which return an :class:`Estimate`.
STOCHASTIC = ("hutchinson", "stde")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Estimate:
    """A stochastic estimate: the mean of ``samples`` one-probe estimates, its standard
    error, and the samples' variance (compare with :func:`variance`).

    Example:
        >>> import jax.numpy as jnp
        >>> e = Estimate.of(jnp.array([1.0, 3.0]))
        >>> float(e.value), float(e.variance), e.samples
        (2.0, 2.0, 2)
    """

    value: Any
    std_error: Any
    variance: Any
    samples: int = field(metadata={"static": True})

    @staticmethod
    def of(draws: Any) -> Estimate:
        n = draws.shape[0]
        var = jnp.var(draws, axis=0, ddof=1) if n > 1 else jnp.zeros_like(draws[0])
        return Estimate(jnp.mean(draws, axis=0), jnp.sqrt(var / n), var, n)


def _scalar(f: Callable, x: Any, where: str) -> tuple[Callable, Any, int]:
    """``f`` as a function of the flat vector ``x.ravel()``; checks the arguments."""
    if not callable(f):
        raise InputTypeError(f"{where}: f must be a function R^d -> R, got {type(f).__name__}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise InputTypeError(f"{where}: x must be floating point, got {x.dtype}")
    out = jax.eval_shape(f, x)
    if getattr(out, "shape", None) != ():
        raise InputTypeError(
            f"{where}: f must return a scalar, got shape {getattr(out, 'shape', type(out))}; "
            "apply the operator to each output (jax.vmap) or sum them"
        )
    shape = x.shape

    def flat(z: Any) -> Any:
        return f(z.reshape(shape))

    return flat, x.ravel(), x.size


def _second(fun: Callable, x: Any, v: Any) -> Any:
    """``d^2/dt^2 fun(x + t v)`` at 0: one 2-jet (Taylor mode)."""
    _, (_, y2) = jet(fun, (x,), ((v, jnp.zeros_like(v)),))
    return y2


def hessian_trace(
    f: Callable,
    x: Any,
    method: str = "collapsed",
    *,
    sigma: Any = None,
    key: Any = None,
    samples: int = 64,
    probe: str = "rademacher",
    step: float | None = None,
) -> Any:
    """``tr(sigma^T H sigma) = sum_r sigma_r^T H sigma_r`` (``H`` the Hessian of ``f`` at
    ``x``; ``sigma`` of shape ``(d, R)``, the identity by default: the Laplacian), by
    ``method`` (module docstring). Stochastic methods take ``key``, ``samples`` and
    ``probe`` (``"rademacher"`` or ``"gaussian"``) and return an :class:`Estimate`.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: jnp.sum(x**2) + x[0] * x[1]
        >>> float(hessian_trace(f, jnp.ones(2), sigma=jnp.array([[1.0], [1.0]])))  # 1 H 1
        6.0
    """
    where = "hessian_trace"
    fun, x, d = _scalar(f, x, where)
    dirs = jnp.eye(d, dtype=x.dtype) if sigma is None else jnp.asarray(sigma, x.dtype).T
    if dirs.ndim != 2 or dirs.shape[1] != d:
        raise InputTypeError(
            f"{where}: sigma must have shape (d, R) = ({d}, R), got {jnp.shape(sigma)}"
        )
    if method in STOCHASTIC:
        return _stochastic(fun, x, dirs, method, key, samples, probe, where)
    if method == "nested-reverse":
        hess = jax.jacrev(jax.grad(fun))(x)
        return jnp.sum((dirs @ hess) * dirs)
    if method == "hvp":
        return jnp.sum(jax.vmap(lambda v: v @ jax.jvp(jax.grad(fun), (x,), (v,))[1])(dirs))
    if method == "taylor":
        return jnp.sum(jax.vmap(lambda v: _second(fun, x, v))(dirs))
    if method in ("collapsed", "forward-laplacian"):
        return 2 * collapsed(fun, x, dirs, order=2)
    if method == "jet":
        from jax.experimental.jet import jet as jax_jet

        def one(v: Any) -> Any:
            return jax_jet(fun, (x,), ((v, jnp.zeros_like(v)),))[1][1]

        return jnp.sum(jax.vmap(one)(dirs))
    if method == "fd":
        h = step if step is not None else float(np.finfo(x.dtype).eps) ** 0.25
        h = h * jnp.maximum(1.0, jnp.max(jnp.abs(x)))
        f0 = fun(x)

        def one(v: Any) -> Any:
            return (fun(x + h * v) - 2 * f0 + fun(x - h * v)) / (h * h)

        return jnp.sum(jax.vmap(one)(dirs))
    raise InputTypeError(
        f"{where}: unknown method {method!r}; choose one of {', '.join(EXACT + STOCHASTIC)}"
    )


def laplacian(f: Callable, x: Any, method: str = "collapsed", **options: Any) -> Any:
    """The Laplacian ``sum_i d^2 f / d x_i^2`` of a scalar ``f`` at ``x``, by ``method``
    (:data:`EXACT`, or :data:`STOCHASTIC` with ``key``, ``samples``, ``probe``).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: jnp.sum(jnp.sin(x))
        >>> x = jnp.array([0.1, 0.2, 0.3])
        >>> bool(jnp.allclose(laplacian(f, x), -jnp.sum(jnp.sin(x))))
        True
    """
    if "sigma" in options:
        raise InputTypeError("laplacian: takes no sigma; use hessian_trace(f, x, sigma=...)")
    return hessian_trace(f, x, method, **options)


def _probes(key: Any, n: int, d: int, probe: str, dtype: Any, where: str) -> Any:
    if probe == "rademacher":
        return jax.random.rademacher(key, (n, d), dtype=dtype)
    if probe == "gaussian":
        return jax.random.normal(key, (n, d), dtype=dtype)
    raise InputTypeError(f"{where}: probe must be 'rademacher' or 'gaussian', got {probe!r}")


def _stochastic(
    fun: Callable,
    x: Any,
    dirs: Any,
    method: str,
    key: Any,
    samples: int,
    probe: str,
    where: str,
) -> Estimate:
    if key is None:
        raise InputTypeError(
            f"{where}: method {method!r} is stochastic and needs key=jax.random.key(seed)"
        )
    if not isinstance(samples, int) or samples < 1:
        raise InputTypeError(f"{where}: samples must be a positive int, got {samples!r}")
    R = dirs.shape[0]
    if method == "hutchinson":  # v = sigma z, E[z z^T] = I: E[v^T H v] = tr(sigma^T H sigma)
        z = _probes(key, samples, R, probe, x.dtype, where)
        vs = z @ dirs
        draws = jax.vmap(lambda v: _second(fun, x, v))(vs)
    else:  # stde: R times f along one direction drawn uniformly
        idx = jax.random.randint(key, (samples,), 0, R)
        draws = R * jax.vmap(lambda v: _second(fun, x, v))(dirs[idx])
    return Estimate.of(draws)


def variance(hessian: Any, method: str, probe: str = "rademacher") -> Any:
    """The per-sample variance of a stochastic estimate of ``tr H`` (``Estimate.variance``
    estimates it): Hutchinson ``2 (||H||_F^2 - sum_i H_ii^2)`` with Rademacher probes and
    ``2 ||H||_F^2`` with Gaussian ones; STDE ``d sum_i H_ii^2 - (tr H)^2``.

    Example:
        >>> import jax.numpy as jnp
        >>> H = jnp.array([[2.0, 1.0], [1.0, 4.0]])
        >>> float(variance(H, "hutchinson")), float(variance(H, "stde"))
        (4.0, 4.0)
    """
    H = jnp.asarray(hessian)
    H = (H + H.T) / 2
    diag = jnp.diag(H)
    if method == "hutchinson":
        if probe == "gaussian":
            return 2 * jnp.sum(H * H)
        return 2 * (jnp.sum(H * H) - jnp.sum(diag * diag))
    if method == "stde":
        return H.shape[0] * jnp.sum(diag * diag) - jnp.sum(diag) ** 2
    raise InputTypeError(f"variance: method must be one of {', '.join(STOCHASTIC)}")


def hvp(f: Callable, x: Any, v: Any, method: str = "forward-over-reverse") -> Any:
    """The Hessian-vector product ``H v`` of a scalar ``f`` at ``x`` (``v`` shaped like
    ``x``): ``"forward-over-reverse"`` (``jvp`` of ``grad``), ``"reverse-over-reverse"``
    (``vjp`` of ``grad``), ``"reverse-over-forward"`` (``grad`` of ``v . grad f`` by a
    JVP), ``"taylor-over-reverse"`` (diffkit's Taylor mode of order 1 over ``jax.grad``).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: x[0] ** 2 * x[1]
        >>> hvp(f, jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])).tolist()  # H e_0
        [4.0, 2.0]
    """
    fun, xf, _ = _scalar(f, x, "hvp")
    shape = jnp.shape(x)
    vf = jnp.asarray(v, xf.dtype)
    if vf.shape != shape:
        raise InputTypeError(f"hvp: v must have x's shape {shape}, got {vf.shape}")
    vf = vf.ravel()
    if method == "forward-over-reverse":
        out = jax.jvp(jax.grad(fun), (xf,), (vf,))[1]
    elif method == "reverse-over-reverse":
        out = jax.vjp(jax.grad(fun), xf)[1](vf)[0]
    elif method == "reverse-over-forward":
        out = jax.grad(lambda z: jax.jvp(fun, (z,), (vf,))[1])(xf)
    elif method == "taylor-over-reverse":
        _, (out,) = jet(jax.grad(fun), (xf,), ((vf,),))
    else:
        raise InputTypeError(
            f"hvp: unknown method {method!r}; choose forward-over-reverse, "
            "reverse-over-reverse, reverse-over-forward or taylor-over-reverse"
        )
    return out.reshape(shape)


def _biharmonic_directions(d: int, dtype: Any) -> tuple[Any, Any]:
    """Directions and weights with ``Delta^2 f = sum_r w_r D^4 f[v_r]^4`` (polarisation:
    ``f_iijj = (D4[e_i + e_j] + D4[e_i - e_j] - 2 D4[e_i] - 2 D4[e_j]) / 12``)."""
    eye = np.eye(d)
    dirs = [eye[i] for i in range(d)]
    weights = [1.0 - (d - 1) / 3.0] * d
    for i, j in itertools.combinations(range(d), 2):
        dirs += [eye[i] + eye[j], eye[i] - eye[j]]
        weights += [1.0 / 6.0, 1.0 / 6.0]
    return jnp.asarray(np.array(dirs), dtype), jnp.asarray(np.array(weights), dtype)


def _fourth(fun: Callable, x: Any, v: Any) -> Any:
    z = jnp.zeros_like(v)
    return jet(fun, (x,), ((v, z, z, z),))[1][3]


def biharmonic(f: Callable, x: Any, method: str = "collapsed") -> Any:
    """The biharmonic ``Delta^2 f = sum_ij d^4 f / dx_i^2 dx_j^2`` of a scalar ``f`` at
    ``x``: ``"nested"`` (the Laplacian, by forward-over-reverse HVPs, of the Laplacian),
    ``"taylor"`` (one 4-jet per direction of the polarisation identity, ``d^2`` of them),
    ``"collapsed"`` (the same directions, collapsed Taylor mode of order 4: one summed
    fourth-order coefficient).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: jnp.sum(x**2) ** 2  # |x|^4: Delta^2 = 8 d (d + 2)
        >>> round(float(biharmonic(f, jnp.ones(3))), 6)
        120.0
    """
    fun, xf, d = _scalar(f, x, "biharmonic")
    if method == "nested":

        def lap(z: Any) -> Any:
            return hessian_trace(fun, z, "hvp")

        return hessian_trace(lap, xf, "hvp")
    dirs, w = _biharmonic_directions(d, xf.dtype)
    if method == "taylor":
        return jnp.sum(w * jax.vmap(lambda v: _fourth(fun, xf, v))(dirs))
    if method == "collapsed":
        return 24 * collapsed(fun, xf, dirs, order=4, weights=w)
    raise InputTypeError(
        f"biharmonic: unknown method {method!r}; choose nested, taylor or collapsed"
    )


def _along(h: Callable, e: Any) -> Callable:
    """``z -> d/dt h(z + t e)`` at 0 (one ``jax.jvp``)."""
    return lambda z: jax.jvp(h, (z,), (e,))[1]


def _polarise(index: Sequence[int], d: int) -> tuple[list[np.ndarray], list[float]]:
    """``d_{i1} .. d_{im} f = 1/(m! 2^m) sum_eps (prod eps) D^m f[sum_j eps_j e_ij]^m``."""
    m = len(index)
    dirs, weights = [], []
    for eps in itertools.product((1.0, -1.0), repeat=m):
        v = np.zeros(d)
        for e, i in zip(eps, index, strict=True):
            v[i] += e
        dirs.append(v)
        weights.append(float(np.prod(eps)) / (math.factorial(m) * 2**m))
    return dirs, weights


def linear_operator(
    f: Callable,
    x: Any,
    coefficients: Mapping[tuple[int, ...], float],
    method: str = "taylor",
) -> Any:
    """``sum_alpha c_alpha d^alpha f`` at ``x``: ``coefficients`` maps a tuple of (flat)
    coordinate indices ``(i1, .., im)``, the mixed partial ``d_i1 .. d_im`` (``()`` is ``f``
    itself), to its weight. ``"taylor"``: each partial by polarisation, ``2^m`` m-jets;
    ``"collapsed"``: the same directions, one collapsed jet per order;
    ``"nested"``: nested ``jax.jvp`` along the basis vectors.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: x[0] ** 2 * x[1] ** 3
        >>> x = jnp.array([1.0, 2.0])
        >>> float(linear_operator(f, x, {(0, 0): 1.0, (0, 1, 1): 2.0}))  # 2 x1^3 + 24 x0 x1
        64.0
    """
    fun, xf, d = _scalar(f, x, "linear_operator")
    total = jnp.zeros((), xf.dtype)
    by_order: dict[int, tuple[list[np.ndarray], list[float]]] = {}
    for index, c in coefficients.items():
        index = tuple(index)
        if any(not isinstance(i, int | np.integer) or not 0 <= i < d for i in index):
            raise InputTypeError(
                f"linear_operator: index {index} must hold coordinates in 0..{d - 1}"
            )
        if not index:
            total = total + c * fun(xf)
            continue
        if method == "nested":
            g = fun
            for i in index:
                g = _along(g, jnp.zeros(d, xf.dtype).at[i].set(1.0))
            total = total + c * g(xf)
            continue
        dirs, weights = _polarise(index, d)
        got = by_order.setdefault(len(index), ([], []))
        got[0].extend(dirs)
        got[1].extend(c * w for w in weights)
    if method not in ("taylor", "collapsed", "nested"):
        raise InputTypeError(
            f"linear_operator: unknown method {method!r}; choose taylor, collapsed or nested"
        )
    for m, (dirs, weights) in by_order.items():
        v = jnp.asarray(np.array(dirs), xf.dtype)
        w = jnp.asarray(np.array(weights), xf.dtype)
        if method == "collapsed" and m >= 2:
            total = total + math.factorial(m) * collapsed(fun, xf, v, order=m, weights=w)
            continue

        def one(u: Any, m: int = m) -> Any:
            z = jnp.zeros_like(u)
            return jet(fun, (xf,), ((u,) + (z,) * (m - 1),))[1][m - 1]

        total = total + jnp.sum(w * jax.vmap(one)(v))
    return total
