"""Small worked examples that ship with diffkit.

The 9-parameter network is the running example of the notebooks, the CLI and the tests:
2 inputs, 2 ReLU hidden units, 1 sigmoid output, binary cross-entropy loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["Example", "tiny_network", "tiny_scalar_network"]

#: Parameter names of the tiny network, in the order of the worked example.
TINY_NAMES = ("w11", "w12", "b1", "w21", "w22", "b2", "v1", "v2", "b3")


@dataclass(frozen=True)
class Example:
    """A function with the arguments to evaluate it at.

    ``fun(*args)`` is the primal; derivatives are taken with respect to ``args[0]``.
    ``names(tree)`` maps a pytree shaped like ``args[0]`` (parameters or their gradient) to
    a dict of named floats, for display.
    """

    fun: Callable[..., Any]
    args: tuple[Any, ...]
    description: str
    names: Callable[[Any], dict[str, float]] = field(repr=False)


def _tiny_loss(params: dict[str, Any], x: Any, y: Any) -> Any:
    """Binary cross-entropy of a 2-2-1 network with ReLU hidden units and a sigmoid output."""
    z = params["W"] @ x + params["b"]  # hidden pre-activations
    h = jnp.maximum(z, 0.0)  # ReLU
    o = params["v"] @ h + params["b3"]  # output logit
    y_hat = 1.0 / (1.0 + jnp.exp(-o))  # sigmoid
    return -(y * jnp.log(y_hat) + (1.0 - y) * jnp.log(1.0 - y_hat))


def _tiny_names(tree: dict[str, Any]) -> dict[str, float]:
    W, b, v = (np.asarray(tree[k], dtype=float) for k in ("W", "b", "v"))
    values = (W[0, 0], W[0, 1], b[0], W[1, 0], W[1, 1], b[1], v[0], v[1], float(tree["b3"]))
    return {name: float(value) for name, value in zip(TINY_NAMES, values, strict=True)}


def tiny_network(dtype: Any = None) -> Example:
    """The 9-parameter worked example: ``loss(params, x, y)`` at its textbook values.

    Inputs x = (1.0, 0.5), target y = 1; hidden weights w11=0.3 w12=0.7 b1=0.1,
    w21=-0.2 w22=0.5 b2=0.0; output weights v1=0.6 v2=-0.4 b3=0.1. The loss is 0.46285...

    Example:
        >>> from diffkit.examples import tiny_network
        >>> ex = tiny_network()
        >>> round(float(ex.fun(*ex.args)), 5)
        0.46286
        >>> import diffkit as dk
        >>> grads = ex.names(dk.get("jax-rev").grad(ex.fun)(*ex.args))
        >>> round(grads["w11"], 4), round(grads["b3"], 4)
        (-0.2223, -0.3705)
    """
    dtype = dtype or jnp.result_type(float)
    arr = lambda v: jnp.asarray(v, dtype=dtype)  # noqa: E731
    params = {
        "W": arr([[0.3, 0.7], [-0.2, 0.5]]),
        "b": arr([0.1, 0.0]),
        "v": arr([0.6, -0.4]),
        "b3": arr(0.1),
    }
    return Example(
        fun=_tiny_loss,
        args=(params, arr([1.0, 0.5]), arr(1.0)),
        description="2-2-1 network, ReLU hidden, sigmoid output, binary cross-entropy (9 params)",
        names=_tiny_names,
    )


def tiny_scalar_network() -> tuple[Callable[..., Any], dict[str, float]]:
    """The 9-parameter worked example written with one scalar per parameter (so every tape
    node is a scalar, as ``diffkit explain`` shows them), and its parameter values, taken
    from :func:`tiny_network`.

    Example:
        >>> f, at = tiny_scalar_network()
        >>> round(float(f(**at)), 5)
        0.46286
    """
    ex = tiny_network()
    values = ex.names(ex.args[0])
    x1, x2 = (float(v) for v in ex.args[1])
    y = float(ex.args[2])

    def loss(w11, w12, b1, w21, w22, b2, v1, v2, b3):  # type: ignore[no-untyped-def]
        h1 = jnp.maximum(w11 * x1 + w12 * x2 + b1, 0.0)  # hidden unit 1 (ReLU)
        h2 = jnp.maximum(w21 * x1 + w22 * x2 + b2, 0.0)  # hidden unit 2
        y_hat = 1.0 / (1.0 + jnp.exp(-(v1 * h1 + v2 * h2 + b3)))  # sigmoid output
        return -(y * jnp.log(y_hat) + (1.0 - y) * jnp.log(1.0 - y_hat))  # cross-entropy

    return loss, values
