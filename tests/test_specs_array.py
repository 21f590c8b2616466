"""Spec rows for the array section of the rule table (diffkit/rules/array.py): convolutions,
windows (pooling), stacking and tiling, scatter variants; and rows for fixes to core rows
whose array parameters were ignored (reshape's ``dimensions``, ``reduce_prod`` over no axes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _spec import DTYPES, R34, R34_2, Spec, check_rows, row_params
from jax import lax


def conv(**kw):
    return lambda x, w: lax.conv_general_dilated(x, w, **kw)


def pool(init, op, dims, strides, padding, **kw):
    return lambda x: lax.reduce_window(x, init, op, dims, strides, padding, **kw)


MAXPOOL = pool(-jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")  # flax's max_pool
REP = jnp.array([0, 0, 2])  # two updates to row 0


def _ties(x):
    """x with each entry repeated along the second axis: windows of 2+ hold ties."""
    return jnp.repeat(x, 2, axis=1)


SECTIONS: dict[str, list[Spec]] = {
    "conv": [
        Spec(  # 1-D, NCH / OIH, strides, uneven padding, kernel dilation
            "conv_general_dilated",
            conv(window_strides=(2,), padding=[(1, 2)], rhs_dilation=(2,)),
            (("real", (2, 3, 9)), ("real", (4, 3, 3))),
            tol32=1e-4,
        ),
        Spec(  # 2-D, NHWC / HWIO, SAME, strides, 2 feature groups
            "conv_general_dilated",
            conv(
                window_strides=(2, 1),
                padding="SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=2,
            ),
            (("real", (2, 5, 6, 4)), ("real", (3, 2, 2, 6))),
            tol32=1e-4,
            label="2d NHWC groups",
        ),
        Spec(  # transposed convolution: input dilation, negative padding, odd layouts
            "conv_general_dilated",
            conv(
                window_strides=(1, 2),
                padding=[(2, -1), (1, 0)],
                lhs_dilation=(2, 2),
                rhs_dilation=(1, 2),
                dimension_numbers=("NCHW", "IOHW", "NHWC"),
            ),
            (("real", (2, 2, 4, 3)), ("real", (2, 3, 3, 2))),
            tol32=1e-4,
            label="2d lhs dilation",
        ),
        Spec(  # depthwise: one group per input feature
            "conv_general_dilated",
            conv(
                window_strides=(1,),
                padding="VALID",
                dimension_numbers=("NWC", "WIO", "NWC"),
                feature_group_count=3,
            ),
            (("real", (2, 7, 3)), ("real", (3, 1, 6))),
            tol32=1e-4,
            label="depthwise",
        ),
        Spec(  # batch groups (what JAX's own kernel gradient of a grouped conv builds)
            "conv_general_dilated",
            conv(window_strides=(2,), padding=[(1, 1)], batch_group_count=2),
            (("real", (4, 3, 6)), ("real", (4, 3, 2))),
            tol32=1e-4,
            label="batch groups",
        ),
        Spec(  # batch groups with spatial layout first and kernel dilation
            "conv_general_dilated",
            conv(
                window_strides=(1, 1),
                padding="SAME",
                rhs_dilation=(2, 1),
                dimension_numbers=("HWNC", "OHWI", "CHWN"),
                batch_group_count=3,
            ),
            (("real", (5, 4, 6, 2)), ("real", (3, 2, 2, 2))),
            tol32=1e-4,
            label="batch groups HWNC",
        ),
    ],
    "windows": [
        Spec(  # flax's avg_pool: a window sum divided by the window's size
            "reduce_window_sum",
            lambda x: pool(0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")(x) / 4,
            (("real", (2, 4, 5, 3)),),
        ),
        Spec(  # overlapping windows, padding, both dilations
            "reduce_window_sum",
            pool(
                0.0,
                lax.add,
                (2, 3),
                (1, 2),
                [(1, 0), (2, 1)],
                base_dilation=(2, 1),
                window_dilation=(1, 2),
            ),
            R34,
            label="dilated",
        ),
        Spec("reduce_window_max", MAXPOOL, (("real", (2, 5, 5, 2)),), label="flax max_pool"),
        Spec(  # overlapping windows holding ties: the first of the largest wins
            "reduce_window_max",
            lambda x: pool(-jnp.inf, lax.max, (2, 3), (1, 1), "SAME")(_ties(x)),
            R34,
            label="ties",
        ),
        Spec(
            "reduce_window_min",
            lambda x: pool(jnp.inf, lax.min, (2, 2), (1, 2), "VALID")(_ties(x)),
            R34,
            label="ties",
        ),
        Spec(  # base dilation: the holes never win
            "reduce_window_min",
            pool(jnp.inf, lax.min, (2, 3), (2, 1), [(0, 1), (1, 1)], base_dilation=(2, 1)),
            R34,
            label="base dilation",
        ),
        Spec(  # window dilation: JAX has no reverse rule, nor has tape (test_rules_array_errors)
            "reduce_window_max",
            pool(-jnp.inf, lax.max, (1, 2), (1, 1), "VALID", window_dilation=(1, 2)),
            R34,
            modes=("dual",),
            label="window dilation",
        ),
        Spec(  # a computation that is no monoid JAX knows: forward only, as in JAX
            "reduce_window",
            lambda x: pool(1.0, lax.mul, (2, 2), (1, 1), "VALID")(x),
            R34,
            modes=("dual",),
        ),
        Spec(
            "reduce_window",
            lambda x: pool(-jnp.inf, jnp.logaddexp, (3,), (2,), [(1, 1)])(x),
            (("real", (7,)),),
            modes=("dual",),
            label="logaddexp",
        ),
        Spec(  # JAX's own gradient of max pooling, with a source that depends on x
            "select_and_scatter_add",
            lambda x: jax.vjp(MAXPOOL, x)[1](jnp.sin(MAXPOOL(x)))[0],
            (("real", (1, 4, 5, 2)),),
        ),
        Spec(  # JAX's own tangent of max pooling
            "select_and_gather_add",
            lambda x: jax.jvp(MAXPOOL, (x,), (jnp.cos(x),))[1],
            (("real", (1, 4, 5, 2)),),
        ),
        Spec(
            "select_and_gather_add",
            lambda x: jax.jvp(
                pool(jnp.inf, lax.min, (2, 3), (2, 1), [(0, 1), (1, 1)], base_dilation=(2, 1)),
                (x,),
                (x * x,),
            )[1],
            R34,
            label="min, base dilation",
        ),
        Spec(  # a non-standard lax.reduce: JAX differentiates it as a tree of computations
            "reduce",
            lambda x: lax.reduce(x, 1.0, lambda a, b: a * b + jnp.sin(b), (1,)),
            (("real", (3, 5)),),
        ),
        Spec(  # variadic: each column's largest x, and y there (JAX fails on int operands)
            "reduce",
            lambda x, y: _argmax_pair(x, y),
            R34_2,
            label="variadic",
        ),
    ],
    "stacking": [
        Spec("stack", lambda x, y: jnp.stack([x, 2 * y, x * y], axis=1), R34_2),
        Spec("unstack", lambda x: (lambda a, b, c, d: a * b + d)(*jnp.unstack(x, axis=1)), R34),
        Spec("tile", lambda x: jnp.tile(x, (2, 3)), R34),
        Spec("tile", lambda x: jnp.tile(x, 3) * x[0], (("real", (4,)),), label="1d"),
        Spec(
            "optimization_barrier",
            lambda x: (lambda a, b, i: a * b + i)(*lax.optimization_barrier((x, 2 * x, 3))),
            R34,
        ),
    ],
    "scatter_variants": [
        Spec("scatter-sub", lambda x, u: x.at[REP].subtract(u * x), R34_2),
        Spec(
            "scatter-sub",
            lambda x, u: x.at[jnp.array([1, 7, -9])].subtract(u),
            R34_2,
            label="out of bounds",
        ),
        Spec("scatter-mul", lambda x, u: x.at[1].multiply(u[0]), R34_2),
        Spec(  # repeated indices: JAX differentiates in the operand only
            "scatter-mul",
            lambda x: x.at[REP].multiply(jnp.arange(1.0, 4.0)[:, None]),
            R34,
            label="repeated, operand",
        ),
        Spec("scatter-max", lambda x, u: x.at[REP].max(u), R34_2),
        Spec(  # ties among the operand and two updates: the derivative is split evenly
            "scatter-max",
            lambda x: x.at[REP].max(jnp.stack([x[0], x[0], x[1]]) * x[2]) + 0 * x,
            R34,
            label="ties",
        ),
        Spec(
            "scatter-min",
            lambda x: x.at[REP].min(jnp.stack([x[0] * x[1], x[0] * x[1], x[2]])),
            R34,
            label="ties",
        ),
        Spec(  # segment_max with two rows tying in segment 0
            "scatter-max",
            lambda x: jax.ops.segment_max(x[jnp.array([0, 1, 0, 2])], jnp.array([0, 1, 0, 1]), 2),
            R34,
            label="segment_max",
        ),
        Spec(
            "scatter-min",
            lambda x: jax.ops.segment_min(x, jnp.array([1, 3, 0]), 2),
            R34,
            label="segment_min out of bounds",
        ),
    ],
    "array_fixes": [
        Spec("reshape", lambda x: jnp.ravel(x, order="F") * jnp.arange(12.0), R34, label="F"),
        Spec(
            "reshape",
            lambda x: x.reshape(2, 3, 2, order="F") ** 2,
            (("real", (3, 2, 2)),),
            label="F 3d",
        ),
        Spec("reduce_prod", lambda x: jnp.prod(x, axis=()) * x, R34, label="no axes"),
    ],
}


def _argmax_pair(x, y):
    """Each column's entry of ``y`` where ``x`` is largest, times that value of ``x``."""

    def better(a, b):
        take = a[0] >= b[0]
        return jnp.where(take, a[0], b[0]), jnp.where(take, a[1], b[1])

    init = (jnp.array(-jnp.inf, x.dtype), jnp.array(0, x.dtype))
    value, at = lax.reduce((x, y), init, better, (0,))
    return value * at


@pytest.mark.parametrize("spec", row_params(SECTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_match_jax(spec: Spec, dtype: str) -> None:
    """The row against jax.jvp / jax.vjp, first and second order: rho <= 1e-12 in float64,
    the row's ``tol32`` in float32 (float32 is marked slow for time only; the full suite runs
    it)."""
    with jax.enable_x64(dtype == "float64"):
        failures = check_rows([spec], dtype)
    assert not failures, "\n".join(failures)
