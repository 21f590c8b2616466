"""Refusals of the array rows (diffkit/rules/array.py, and scatter's update function in
diffkit/rules/table.py): where JAX has no derivative, dual and tape raise a one-line
UnsupportedPrimitiveError saying what and why, instead of a silent wrong answer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import diffkit as dk
from diffkit._core.errors import UnsupportedPrimitiveError

X = jnp.arange(1.0, 13.0).reshape(3, 4) / 7


def _apply(x):
    return x.at[1].apply(jnp.sin) * x  # was: derivative 0 through the scattered entries


def _mul_repeated(x):
    return x.at[jnp.array([0, 0])].multiply(x[:2])


def _dilated_max_pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2), (1, 1), "VALID", window_dilation=(1, 2))


def _window_product(x):
    return lax.reduce_window(x, 1.0, lax.mul, (2, 2), (1, 1), "VALID")


def _dual(f):
    return dk.get("dual").jvp(f, (X,), (X,))


def _tape(f):
    return dk.get("tape").vjp(f, X)[1](f(X))


def _jax_fwd(f):
    return jax.jvp(f, (X,), (X,))


def _jax_rev(f):
    return jax.vjp(f, X)[1](f(X))


CASES = [  # (function, which diffkit derivative, JAX's derivative that refuses, words)
    (_apply, _dual, _jax_fwd, "x.at[i].apply(f)"),
    (_apply, _tape, _jax_rev, "x.at[i].apply(f)"),
    (_mul_repeated, _dual, _jax_fwd, "indices that may repeat"),
    (_mul_repeated, _tape, _jax_rev, "indices that may repeat"),
    (_dilated_max_pool, _tape, _jax_rev, "window_dilation=(1, 2)"),
    (_window_product, _tape, _jax_rev, "custom computation"),
]


@pytest.mark.parametrize(("f", "ours", "theirs", "words"), CASES)
def test_refuses_where_jax_does(f, ours, theirs, words) -> None:
    with pytest.raises((NotImplementedError, ValueError)):  # JAX has no such derivative
        theirs(f)
    with pytest.raises(UnsupportedPrimitiveError) as info:
        ours(f)
    message = str(info.value)
    assert words in message and "JAX has none either" in message
    assert "\n" not in message


def test_forward_where_jax_has_it() -> None:
    """The same functions JAX differentiates forward: dual agrees with jax.jvp."""
    for f in (_dilated_max_pool, _window_product):
        got, want = _dual(f), _jax_fwd(f)
        for a, b in zip(got, want, strict=True):
            assert jnp.allclose(a, b, rtol=1e-5), f.__name__
