"""The problem suite: JAX function families indexed by a size, with seeded inputs.

A :class:`Problem` builds an :class:`Instance` for a requested ``size``: the function, its
arguments (derivatives are taken with respect to the first), the actual parameter count ``n``
and output count ``m``, and the quantity to differentiate (the gradient of a scalar loss, or
the Jacobian of a wide output). Where the family is indexed by its parameter count, ``size``
is the *requested* n and the instance reports the n it really has.

Example:
    >>> import diffkit as dk
    >>> inst = dk.harness.get_problem("rosenbrock").build(5)
    >>> inst.n, inst.m, inst.quantity
    (5, 1, 'grad')
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp, multigammaln
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from diffkit._core.errors import DiffkitError
from diffkit.examples import tiny_network
from diffkit.sharding import AXIS, device_mesh, place

__all__ = ["Instance", "Problem", "get_problem", "problems", "register_problem", "user_problem"]

Builder = Callable[..., tuple[Callable[..., Any], tuple[Any, ...]]]


@dataclass(frozen=True)
class Instance:
    """One built member of a family: ``fun(*args)``, differentiated with respect to
    ``args[0]`` (``n`` numbers) and returning ``m`` numbers."""

    problem: str
    size: int
    dtype: str
    fun: Callable[..., Any] = field(repr=False)
    args: tuple[Any, ...] = field(repr=False)
    n: int
    m: int
    quantity: str  # "grad" (scalar loss) or "jacobian"


@dataclass(frozen=True)
class Problem:
    """A family of functions indexed by ``size``; ``options`` configure the family.

    ``build(size, dtype, seed)`` returns an :class:`Instance`; inputs come from
    ``numpy.random.default_rng(seed)``, so every backend sees the same numbers.
    """

    name: str
    description: str
    size_means: str
    sizes: tuple[int, ...]
    builder: Builder = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict)

    def with_options(self, **options: Any) -> Problem:
        """The same family with some options changed (unknown names are an error)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise DiffkitError(
                f"problem {self.name!r}: unknown option(s) {', '.join(unknown)}; "
                f"its options are: {', '.join(self.options) or '(none)'}"
            )
        return replace(self, options={**self.options, **options})

    def build(self, size: int | None = None, dtype: str = "float32", seed: int = 0) -> Instance:
        """Build the member of the family of this ``size`` (default: the smallest).

        Example:
            >>> import diffkit as dk
            >>> inst = dk.harness.get_problem("mlp").build(1000)
            >>> inst.n, inst.quantity
            (981, 'grad')
        """
        size = int(self.sizes[0] if size is None else size)
        if size < 1:
            raise DiffkitError(f"problem {self.name!r}: size must be a positive int, got {size}")
        if dtype not in ("float32", "float64"):
            raise DiffkitError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        rng = np.random.default_rng(seed)
        with jax.enable_x64(dtype == "float64"):
            fun, args = self.builder(size, np.dtype(dtype), rng, **self.options)
            args = jax.tree_util.tree_map(lambda a: _cast(a, dtype), args)
            out = jax.eval_shape(fun, *args)
        leaves = jax.tree_util.tree_leaves(out)
        m = sum(int(np.prod(o.shape)) for o in leaves)
        n = sum(int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(args[0]))
        scalar = len(leaves) == 1 and leaves[0].shape == ()
        return Instance(self.name, size, dtype, fun, args, n, m, "grad" if scalar else "jacobian")


def _cast(a: Any, dtype: str) -> Any:
    """Floating (and Python float) leaves to ``dtype``; integer and boolean leaves as they are."""
    a = jnp.asarray(a)
    return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a


_PROBLEMS: dict[str, Problem] = {}

#: Modules that register more families when imported, loaded by name on the first lookup (as
#: the differentiator registry loads its built-ins): GradBench's evals, the memory study's.
FAMILIES = (
    "diffkit.harness.gradbench",
    "diffkit.harness.memory",
    "diffkit.harness.sparse_families",
    "diffkit.harness.operator_families",
)
_loaded = [False]


def _load() -> None:
    if not _loaded[0]:
        _loaded[0] = True
        for module in FAMILIES:
            importlib.import_module(module)


def register_problem(problem: Problem) -> Problem:
    """Add a family to the registry (a third party's too); returns it."""
    _PROBLEMS[problem.name] = problem
    return problem


def problems() -> list[str]:
    """Names of the registered problem families.

    Example:
        >>> import diffkit as dk
        >>> "mlp" in dk.harness.problems()
        True
    """
    _load()
    return list(_PROBLEMS)


def get_problem(name: str | Problem, **options: Any) -> Problem:
    """A family by name, with options (``user`` takes ``target`` and ``inputs``).

    Example:
        >>> import diffkit as dk
        >>> dk.harness.get_problem("mlp", depth=3, activation="relu").options["depth"]
        3
    """
    if isinstance(name, Problem):
        return name.with_options(**options) if options else name
    _load()
    if name not in _PROBLEMS:
        raise DiffkitError(f"unknown problem {name!r}; choose one of: {', '.join(_PROBLEMS)}")
    return _PROBLEMS[name].with_options(**options)


def _normal(rng: np.random.Generator, shape: Any, dtype: np.dtype, scale: float = 1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# --------------------------------------------------------------------------- families


def _tiny_net(size, dtype, rng):
    ex = tiny_network(dtype=jnp.dtype(dtype))
    return ex.fun, ex.args


_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


def mlp_layout(width: int, depth: int, inputs: int) -> list[tuple[int, int]]:
    """(fan-in, fan-out) of each dense layer of the ``mlp`` family: ``depth`` hidden layers of
    ``width`` units and one output."""
    dims = [inputs, *([width] * depth), 1]
    return list(itertools.pairwise(dims))


def _mlp_n(width: int, depth: int, inputs: int) -> int:
    return sum(a * b + b for a, b in mlp_layout(width, depth, inputs))


def _mlp(size, dtype, rng, depth, activation, batch, inputs):
    if activation not in _ACTIVATIONS:
        raise DiffkitError(f"mlp: activation must be one of {', '.join(_ACTIVATIONS)}")
    widths = range(1, 4 * math.isqrt(size) + 8)
    width = min(widths, key=lambda w: abs(math.log(_mlp_n(w, depth, inputs) / size)))
    layout = mlp_layout(width, depth, inputs)
    act = _ACTIVATIONS[activation]
    params = np.concatenate(
        [np.concatenate([_normal(rng, a * b, dtype, 1 / math.sqrt(a)), np.zeros(b, dtype)])
         for a, b in layout]
    )  # fmt: skip
    x, y = _normal(rng, (batch, inputs), dtype), _normal(rng, (batch,), dtype)

    def loss(theta, x, y):
        h, start = x, 0
        for i, (a, b) in enumerate(layout):
            W = theta[start : start + a * b].reshape(a, b)
            h = h @ W + theta[start + a * b : start + a * b + b]
            h = act(h) if i < len(layout) - 1 else h
            start += a * b + b
        return jnp.mean((h[:, 0] - y) ** 2)

    return loss, (params, x, y)


def _mlp_sharded(size, dtype, rng, devices, depth, activation, batch, inputs):
    """The ``mlp`` loss with its flat parameter vector split over ``devices`` devices (padded
    to a multiple of them; the padding is unused) and its batch split likewise, jitted with
    those ``NamedSharding`` inputs."""
    mesh = device_mesh(devices)
    if batch % mesh.size:
        raise DiffkitError(
            f"mlp-sharded: batch {batch} is not divisible by {mesh.size} devices; choose a "
            "batch that is (batch=...)"
        )
    loss, (theta, x, y) = _mlp(size, dtype, rng, depth, activation, batch, inputs)
    theta = np.concatenate([theta, np.zeros(-theta.size % mesh.size, theta.dtype)])
    specs = (P(AXIS), P(AXIS, None), P(AXIS))
    shardings = tuple(NamedSharding(mesh, s) for s in specs)

    def sharded(theta, x, y):  # the layout stated in the program too, as FSDP code does
        placed = zip((theta, x, y), shardings, strict=True)
        theta, x, y = (lax.with_sharding_constraint(a, s) for a, s in placed)
        return loss(theta, x, y)

    fun = jax.jit(sharded, in_shardings=shardings, out_shardings=NamedSharding(mesh, P()))
    return fun, place((theta, x, y), mesh, specs)


def _logistic_map(size, dtype, rng):
    def last(l0):
        l = l0
        for _ in range(size):
            l = 4.0 * l * (1.0 - l)
        return jnp.sum(l)

    return last, (np.asarray([0.3], dtype),)


def _sigmoid_chain(size, dtype, rng, width):
    w = width
    theta = np.concatenate(
        [np.concatenate([_normal(rng, w * w, dtype, 1 / math.sqrt(w)), np.zeros(w, dtype)])
         for _ in range(size)]
    )  # fmt: skip

    def chain(theta, h0):
        h = h0
        for k in range(size):
            layer = theta[k * (w * w + w) : (k + 1) * (w * w + w)]
            h = jax.nn.sigmoid(layer[: w * w].reshape(w, w) @ h + layer[w * w :])
        return jnp.sum(h)

    return chain, (theta, np.ones(w, dtype))


def _rosenbrock(size, dtype, rng):
    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    return rosen, (_normal(rng, max(size, 2), dtype, 0.5),)


def _lse(size, dtype, rng):
    def lse(x):
        x_max = lax.stop_gradient(jnp.max(x))
        return jnp.log(jnp.sum(jnp.exp(x - x_max))) + x_max

    return lse, (_normal(rng, size, dtype, 2.0),)


def _llsq(size, dtype, rng, points):
    t = (-1.0 + 2.0 * np.arange(points) / (points - 1)).astype(dtype)
    powers = np.stack([t**j for j in range(size)], axis=1)  # (points, n): t_i ** j

    def llsq(x, powers, target):
        return 0.5 * jnp.sum((target - powers @ x) ** 2)

    return llsq, (_normal(rng, size, dtype, 0.1), powers, np.sign(t))


def _gmm(size, dtype, rng, d, points, gamma, wishart_m):
    per_k = 1 + 2 * d + d * (d - 1) // 2
    k = max(1, round(size / per_k))
    params = {
        "alpha": _normal(rng, k, dtype),
        "mu": _normal(rng, (k, d), dtype),
        "q": _normal(rng, (k, d), dtype, 0.1),
        "l": _normal(rng, (k, d * (d - 1) // 2), dtype, 0.1),
    }
    x = _normal(rng, (points, d), dtype)
    rows, cols = np.tril_indices(d, -1)
    order = np.lexsort((rows, cols))  # GradBench fills the lower triangle column by column
    # int32 indices: NumPy's int64 ones meet JAX's int32 in float32 (x64 off) and fail.
    rows, cols = rows[order].astype(np.int32), cols[order].astype(np.int32)

    def gmm(p, x):
        q_diag = jnp.exp(p["q"])
        sum_q = jnp.sum(p["q"], axis=1)
        L = jnp.zeros((k, d, d), x.dtype).at[:, rows, cols].set(p["l"])
        xc = x[:, None, :] - p["mu"][None]  # (points, k, d)
        Lx = q_diag * xc + jnp.einsum("kij,nkj->nki", L, xc)
        inner = p["alpha"] + sum_q - 0.5 * jnp.sum(Lx**2, axis=2)
        dof = d + wishart_m + 1
        prior = -jnp.sum(
            0.5 * gamma**2 * (jnp.sum(q_diag**2, axis=1) + jnp.sum(p["l"] ** 2, axis=1))
            - wishart_m * sum_q
        ) + k * (dof * d * math.log(gamma / math.sqrt(2)) - multigammaln(0.5 * dof, d))
        return (
            -points * d * 0.5 * math.log(2 * math.pi)
            + jnp.sum(logsumexp(inner, axis=1))
            - points * logsumexp(p["alpha"])
            + prior
        )

    return gmm, (params, x)


def _ode(size, dtype, rng, steps, t_final):
    h = t_final / steps

    def ode(x):
        def f(y):  # y_0' = x_0, y_i' = x_i * y_{i-1}
            return x * jnp.concatenate([jnp.ones(1, y.dtype), y[:-1]])

        def rk4(y, _):
            k1 = f(y)
            k2 = f(y + h / 2 * k1)
            k3 = f(y + h / 2 * k2)
            k4 = f(y + h * k3)
            return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        y, _ = lax.scan(rk4, jnp.zeros_like(x), None, length=steps)
        return y[-1]

    return ode, (_normal(rng, size, dtype, 0.5) + 1.0,)


def _wide_output(size, dtype, rng, k):
    t = np.linspace(0.0, 10.0, size).astype(dtype)

    def response(knobs, t):  # k damped modes, each with its own frequency knob
        i = jnp.arange(1, knobs.size + 1, dtype=t.dtype)
        return jnp.sum(
            jnp.sin(i * knobs[None, :] * t[:, None]) * jnp.exp(-0.1 * knobs**2 * t[:, None]), 1
        )

    return response, (_normal(rng, k, dtype, 0.5) + 1.0, t)


_INPUT = re.compile(r"^(n|\d+)(x(n|\d+))*$")


def _user(size, dtype, rng, target, inputs):
    fun = resolve_target(target) if isinstance(target, str) else target
    if not callable(fun):
        raise DiffkitError(f"user problem: {target!r} is not a function")
    args = []
    for spec in str(inputs).replace(" ", "").split(","):
        if not _INPUT.match(spec):
            raise DiffkitError(
                f"user problem: input spec {spec!r} is not a shape like 'n', '100', '32xn' "
                "(dimensions joined by x; n is replaced by the size)"
            )
        shape = tuple(size if s == "n" else int(s) for s in spec.split("x"))
        args.append(_normal(rng, shape, dtype, 0.5))
    _check_arity(fun, inputs, len(args))
    return fun, tuple(args)


def _check_arity(fun: Callable[..., Any], inputs: str, given: int) -> None:
    """One line when ``--input`` gives a different number of shapes than ``fun`` takes."""
    try:
        sig = inspect.signature(fun)
        sig.bind(*range(given))
    except ValueError:  # no signature (a builtin): the call will tell
        return
    except TypeError:
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        need = [p for p in sig.parameters.values() if p.kind in kinds and p.default is p.empty]
        name = getattr(fun, "__name__", "the function")
        raise DiffkitError(
            f"user problem: {name}{sig} takes {len(need)} argument(s), but --input {inputs!r} "
            f"gives {given} shape(s); give one shape per argument, e.g. --input "
            f"{','.join(['n'] * max(len(need), 1))}"
        ) from None


def split_target(target: str) -> tuple[str, str, Path | None]:
    """``(module or file, function, the file's path or None)`` of a user target, or the
    one-line error of a malformed one or of a file that is not there (nothing imported).

    Example:
        >>> split_target("pkg.model:loss")
        ('pkg.model', 'loss', None)
    """
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise DiffkitError(
            f"user problem: {target!r} must look like 'module:function' or 'file.py:function'"
        )
    if not where.endswith(".py"):
        return where, attr, None
    path = Path(where).resolve()
    if not path.is_file():
        raise DiffkitError(
            f"user problem: cannot load {target!r}: file not found ({path}); check the "
            "path, relative to the working directory"
        )
    return where, attr, path


def resolve_target(target: str) -> Callable[..., Any]:
    """``"pkg.module:function"`` or ``"path/to/file.py:function"`` to the function."""
    where, attr, path = split_target(target)
    try:
        if path is not None:
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"{path} is not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(path.stem, module)
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.append(os.getcwd())  # a module in the working directory
            module = importlib.import_module(where)
    except ModuleNotFoundError as exc:
        raise DiffkitError(
            f"user problem: cannot load {target!r}: module {exc.name!r} not found (from the "
            "working directory or the installed packages); for a file write path/to/file.py:name"
        ) from None
    except ImportError as exc:
        raise DiffkitError(f"user problem: cannot load {target!r}: {exc}") from None
    if not hasattr(module, attr):
        raise DiffkitError(
            f"user problem: cannot load {target!r}: {where} has no {attr!r} (missing); "
            "check the name after the colon"
        )
    return getattr(module, attr)


def user_problem(target: str | Callable[..., Any], inputs: str = "n") -> Problem:
    """A family from the user's own function: ``target`` is ``"module:function"``,
    ``"file.py:function"`` or a function; ``inputs`` lists argument shapes such as
    ``"n,32xn"`` (``n`` becomes the size; derivatives are taken for the first argument).

    Example:
        >>> import diffkit as dk
        >>> inst = dk.harness.user_problem("jax.numpy:sum", "n").build(7)
        >>> inst.n, inst.m
        (7, 1)
    """
    return get_problem("user", target=target, inputs=inputs)


for _problem in [
    Problem("tiny-net", "the 9-parameter worked example", "ignored (fixed)", (9,), _tiny_net),
    Problem(
        "mlp",
        "MLP regression loss (batch 32, 4 inputs) on a flat parameter vector",
        "requested n (width chosen)",
        (10, 100, 1_000, 10_000, 100_000),
        _mlp,
        {"depth": 2, "activation": "tanh", "batch": 32, "inputs": 4},
    ),
    Problem(
        "logistic-map",
        "l_{k+1} = 4 l_k (1 - l_k) from l_0",
        "steps",
        (1, 2, 4, 8, 16),
        _logistic_map,
    ),
    Problem(
        "sigmoid-chain",
        "sum of the last of a chain of sigmoid layers (vanishing gradients)",
        "depth",
        (1, 4, 16, 64),
        _sigmoid_chain,
        {"width": 2},
    ),
    Problem(
        "rosenbrock",
        "extended (chained) Rosenbrock function",
        "n",
        (10, 100, 1_000, 10_000),
        _rosenbrock,
    ),
    Problem("lse", "log-sum-exp (GradBench lse)", "n", (10, 100, 1_000, 10_000), _lse),
    Problem(
        "llsq",
        "linear least squares: polynomial fit of sign(t) (GradBench llsq)",
        "n (coefficients)",
        (4, 16, 64, 256),
        _llsq,
        {"points": 256},
    ),
    Problem(
        "gmm",
        "Gaussian-mixture log-posterior with Wishart prior (GradBench gmm)",
        "requested n (components chosen)",
        (66, 660, 6_600),
        _gmm,
        {"d": 10, "points": 1000, "gamma": 1.0, "wishart_m": 0},
    ),
    Problem(
        "ode",
        "RK4 (lax.scan) of y_0' = x_0, y_i' = x_i y_{i-1}; last component (GradBench ode)",
        "n",
        (10, 100, 1_000, 10_000),
        _ode,
        {"steps": 10, "t_final": 2.0},
    ),
    Problem(
        "wide-output",
        "response of k damped modes at m times: R^k -> R^m (Jacobian)",
        "m (outputs)",
        (1, 4, 16, 64, 256, 1024),
        _wide_output,
        {"k": 4},
    ),
    Problem(
        "user",
        "the user's own function",
        "n in the input shapes",
        (10, 100, 1_000),
        _user,
        {"target": None, "inputs": "n"},
    ),
    Problem(
        "mlp-sharded",
        "the mlp loss with parameters and batch split over `devices` devices (NamedSharding)",
        "requested n (width chosen)",
        (10, 100, 1_000, 10_000, 100_000),
        _mlp_sharded,
        {"devices": 1, "depth": 2, "activation": "tanh", "batch": 32, "inputs": 4},
    ),
]:
    register_problem(_problem)
