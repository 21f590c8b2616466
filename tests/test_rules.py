"""The spec table: every row of the rule table checked against JAX's own derivatives.

One row per primitive (several for primitives with many forms, such as ``dot_general`` and
``gather``): a function that uses it, the domain of each input, and the float32 tolerance.
Each row runs in float32 and float64; ``dual``'s JVP is compared with :func:`jax.jvp` and
``tape``'s VJP with :func:`jax.vjp`, on random inputs, tangents and cotangents. In float64 the
hand-written derivatives must agree to rho <= 1e-12. Adding a primitive to the table means
adding a row here or in a family module ``tests/test_specs_*.py`` (``test_every_rule_has_a_spec``
checks it).
"""

from __future__ import annotations

import importlib
import pathlib
import zlib

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import pytest
from _spec import (
    DTYPES,
    IDX,
    OUT,
    R3,
    R34,
    R34_2,
    Spec,
    check_rows,
    custom_vjp_square,
    ew,
    inputs_of,
    row_id,
    row_params,
)
from jax import lax
from jax._src.ad_util import add_jaxvals
from jax.experimental.layout import Layout, with_layout_constraint

import diffkit as dk
from diffkit.accuracy import rho_tree
from diffkit.rules.table import REFUSED, RULES

_ONE_DEVICE = jax.sharding.SingleDeviceSharding(jax.devices()[0])

SECTIONS: dict[str, list[Spec]] = {
    "arithmetic": [
        ew("add", lax.add, "real", "real"),
        ew("add_any", add_jaxvals, "real", "real"),
        ew("sub", lax.sub, "real", "real"),
        ew("neg", lax.neg, "real"),
        ew("mul", lax.mul, "real", "real"),
        Spec("mul", lambda x, y: x * y, (("real", (2, 3)), ("real", (1, 3))), label="broadcast"),
        Spec("mul", lambda x: 2.0 * x, R34, label="literal"),
        ew("div", lax.div, "real", "pos"),
        ew("rem", lax.rem, "real", "pos"),
        ew("pow", lax.pow, "pos", "real"),
        Spec(
            "integer_pow",
            lambda x: lax.integer_pow(x, 3) + lax.integer_pow(x, -2),
            (("pos", (5,)),),
        ),
        ew("square", lax.square, "real"),
        ew("sqrt", lax.sqrt, "pos"),
        ew("rsqrt", lax.rsqrt, "pos"),
        ew("cbrt", lax.cbrt, "pos"),
        ew("abs", lax.abs, "real"),
        ew("max", lax.max, "real", "real"),
        ew("min", lax.min, "real", "real"),
        Spec(
            "clamp",
            lambda lo, x, hi: lax.clamp(lo - 1.0, x, hi + 1.0),
            (("unit", (20,)), ("real", (20,)), ("unit", (20,))),
        ),
        Spec("clamp", lambda x: lax.clamp(-0.5, x, 0.5), (("real", (20,)),), label="scalar bounds"),
    ],
    "exp_log": [
        ew("exp", lax.exp, "real"),
        ew("exp2", lax.exp2, "real"),
        ew("expm1", lax.expm1, "real"),
        ew("log", lax.log, "pos"),
        ew("log1p", lax.log1p, "pos"),
        ew("logistic", lax.logistic, "real"),
    ],
    "trig": [
        ew("sin", lax.sin, "real"),
        ew("cos", lax.cos, "real"),
        ew("tan", lax.tan, "unit"),
        ew("asin", lax.asin, "unit"),
        ew("acos", lax.acos, "unit"),
        ew("atan", lax.atan, "real"),
        ew("atan2", lax.atan2, "real", "real"),
        ew("sinh", lax.sinh, "real"),
        ew("cosh", lax.cosh, "real"),
        ew("tanh", lax.tanh, "real"),
        ew("asinh", lax.asinh, "real"),
        ew("acosh", lax.acosh, "gt1"),
        ew("atanh", lax.atanh, "unit"),
    ],
    "special": [
        ew("erf", lax.erf, "real"),
        ew("erfc", lax.erfc, "real"),
        ew("erf_inv", lax.erf_inv, "unit", tol32=1e-4),
        ew("lgamma", lax.lgamma, "pos", tol32=1e-4),
        ew("digamma", lax.digamma, "pos", tol32=1e-4),
    ],
    "no_derivative": [
        ew("sign", lambda x: lax.sign(x) * x, "real"),
        ew("floor", lambda x: lax.floor(x) + x, "real"),
        ew("ceil", lambda x: lax.ceil(x) + x, "real"),
        ew("round", lambda x: lax.round(x) + x, "real"),
        ew("stop_gradient", lambda x: lax.stop_gradient(x) * x, "real"),
    ],
    "int_outputs": [
        ew("gt", lambda x, y: jnp.where(x > y, x * y, x - y), "real", "real"),
        Spec("argmax", lambda x: x * jnp.argmax(x, axis=1)[:, None], R34),
        Spec("argmin", lambda x: x[jnp.argmin(x)], R3),
        Spec("iota", lambda x: x * jnp.arange(3.0), R3),
    ],
    "reductions": [
        Spec("reduce_sum", lambda x: jnp.sum(x, axis=1), R34),
        Spec("reduce_max", lambda x: jnp.max(x, axis=0), R34),
        Spec("reduce_max", lambda x: jnp.max(jnp.round(x)), R34, label="ties"),
        Spec("reduce_min", lambda x: jnp.min(x, axis=(0, 1)), R34),
        Spec("reduce_prod", lambda x: (jnp.prod(x, axis=1), jnp.prod(x[:, :2], axis=0)), R34),
        Spec(  # exact zeros in x: the partials are the others' product, not prod / x
            "reduce_prod",
            lambda x: (jnp.prod(x, axis=0), jnp.prod(x[:, 1:], axis=1), jnp.prod(x)),
            (("zeros", (3, 4)),),
            label="zeros",
        ),
        Spec("cumsum", lambda x: lax.cumsum(x, axis=1) + lax.cumsum(x, axis=0, reverse=True), R34),
    ],
    # one call each (their associative scans are slow to compile); reverse=True for one row of
    # each form of the recurrence (plain and log multipliers)
    "running": [
        Spec("cumprod", lambda x: jnp.cumprod(x, axis=1), (("zeros", (3, 5)),)),  # no x / x
        Spec("cummax", lambda x: lax.cummax(x, 0, reverse=True), R34),
        Spec("cummin", lambda x: lax.cummin(x, axis=1), R34),
        Spec("cumlogsumexp", lambda x: lax.cumlogsumexp(3 * x, 0, reverse=True), R34),
    ],
    "contraction": [
        Spec("dot_general", lambda a, b: a @ b, (("real", (3, 4)), ("real", (4, 2)))),
        Spec("dot_general", jnp.dot, (("real", (4,)), ("real", (4,))), label="inner"),
        Spec(
            "dot_general",
            lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
            (("real", (2, 3, 4)), ("real", (2, 4, 5))),
            label="batched",
        ),
        Spec(
            "dot_general",
            lambda a, b: jnp.einsum("ijk,kbj->bi", a, b),
            (("real", (3, 4, 2)), ("real", (2, 5, 4))),
            label="einsum",
        ),
        Spec(
            "dot_general",
            lambda a, b: lax.dot_general(a, b, (((2, 0), (0, 3)), ((1,), (2,)))),
            (("real", (3, 5, 2)), ("real", (2, 4, 5, 3))),
            label="any dims",
        ),
    ],
    "types": [
        Spec("convert_element_type", lambda x: x.astype(jnp.float16).astype(x.dtype) + x, R3),
        Spec("copy", lambda x: lax.copy_p.bind(x), R3),
        Spec("reduce_precision", lambda x: lax.reduce_precision(x, 8, 23), R3),
        Spec("device_put", lambda x, y: jax.device_put((x, y))[1] * x, R34_2),
        Spec(
            "sharding_constraint",
            lambda x: jax.lax.with_sharding_constraint(x, _ONE_DEVICE) * x,
            R3,
        ),
        Spec(
            "layout_constraint",
            lambda x: with_layout_constraint(x, Layout(major_to_minor=(0, 1))) * x,
            R34,
        ),
    ],
    "shape": [
        Spec(
            "broadcast_in_dim",
            lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (1, 2)),
            (("real", (3, 1)),),
        ),
        Spec("reshape", lambda x: x.reshape(4, 3), R34),
        Spec("squeeze", lambda x: jnp.squeeze(x, 1), (("real", (3, 1, 2)),)),
        Spec("broadcast_in_dim", lambda x: jnp.expand_dims(x, (0, 2)), R34, label="expand_dims"),
        Spec("transpose", lambda x: jnp.transpose(x, (2, 0, 1)), (("real", (2, 3, 4)),)),
        Spec("rev", lambda x: x[::-1], R34),
        Spec(
            "concatenate",
            lambda a, b: jnp.concatenate([a, b, a], axis=1),
            (("real", (3, 2)), ("real", (3, 4))),
        ),
        Spec("split", lambda x: jnp.split(x, [1, 3], axis=1)[1] * 2, R34),
        Spec(
            "pad",
            lambda x, v: lax.pad(x, v, [(1, -1, 1), (0, 2, 0)]),
            (("real", (3, 4)), ("real", ())),
        ),
    ],
    "indexing": [
        Spec("slice", lambda x: x[1:, ::2], R34),
        Spec("slice", lambda x: lax.slice(x, (0, 1), (3, 4), (2, 2)), R34, label="strided"),
        Spec(
            "dynamic_slice", lambda x: lax.dynamic_slice(x, (1, jnp.argmax(x[0]) % 3), (2, 2)), R34
        ),
        Spec(
            "dynamic_update_slice",
            lambda x, u: lax.dynamic_update_slice(x, u, (1, 1)),
            (("real", (3, 4)), ("real", (2, 2))),
        ),
        Spec("gather", lambda x: x[IDX], R34),
        Spec("gather", lambda x: x[IDX, 1], R34, label="x[idx, 1]"),
        Spec("gather", lambda x: x[:, IDX], R34, label="x[:, idx]"),
        Spec(
            "gather",
            lambda x: jnp.take_along_axis(x, jnp.array([[0], [3], [1]]), axis=1),
            R34,
            label="take_along_axis",
        ),
        Spec(
            "scatter-add",
            lambda x, u: x.at[IDX].add(u),
            R34_2,
        ),
        Spec("scatter-add", lambda x: x.at[1, 2].add(x[0, 0]), R34, label="x.at[i, j]"),
        Spec(
            "scatter-add",
            lambda x, u: x.at[OUT].add(u),
            R34_2,
            label="out of bounds: dropped",
        ),
        Spec(
            "gather",
            lambda x: x.at[OUT].get(mode="fill", fill_value=0.0),
            R34,
            label="out of bounds: filled",
        ),
        Spec(
            "scatter",
            lambda x, u: x.at[IDX].set(u),
            R34_2,
            label="repeated index",
        ),
        Spec("scatter", lambda x: x.at[1, 2].set(x[0, 0] * 3), R34, label="x.at[i, j]"),
        Spec(
            "scatter",
            lambda x, u: x.at[OUT].set(u * x),
            R34_2,
            label="out of bounds: dropped",
        ),
        Spec(
            "select_n",
            lambda x, y: lax.select_n(x > 0, x, y),
            R34_2,
        ),
        Spec(
            "select_n",
            lambda x, y: lax.select_n(jnp.arange(12).reshape(3, 4) % 3, x, y, x * y),
            R34_2,
            label="3 cases",
        ),
    ],
    "sorting": [
        Spec("sort", lambda x: jnp.sort(x, axis=0), R34),
        Spec(
            "sort",
            lambda x, y: lax.sort([x, y], dimension=1, num_keys=1)[1] * x,
            R34_2,
            label="two operands",
        ),
        Spec("sort", lambda x: jnp.median(x, axis=1), R34, label="median"),
        Spec("sort", lambda x: x[jnp.argsort(x[:, 0])], R34, label="argsort"),
        Spec("top_k", lambda x: lax.top_k(x, 2)[0], R34),
        Spec("approx_top_k", lambda x: lax.approx_max_k(x, 2)[0] * 2, R34),
    ],
    "control": [
        Spec("jit", lambda x: jax.jit(lambda z: jnp.sin(z) * z)(x), R3),
        Spec("custom_jvp_call", lambda x: jax.nn.softplus(x) + jax.nn.relu(x), R34),
        Spec(  # forward mode refuses a custom_vjp function, as JAX does; dual over tape works
            "custom_vjp_call",
            lambda x: custom_vjp_square()(x),
            R3,
            modes=("tape",),
            ref=lambda x: x * x,
        ),
        Spec("cond", lambda x: lax.cond(x[0] > 0, jnp.sin, lambda z: z * z[1], x), R3),
        Spec(
            "cond",
            lambda x, y: lax.switch(1, [lambda a, b: a, lambda a, b: a * b, lambda a, b: b], x, y),
            (("real", (3,)), ("real", (3,))),
            label="switch, two operands",
        ),
        Spec(
            "scan",
            lambda w, h0, xs: lax.scan(lambda h, x: (jnp.tanh(w @ h + x), h.sum()), h0, xs),
            (("real", (3, 3)), ("real", (3,)), ("real", (4, 3))),
        ),
        Spec(
            "scan",
            lambda x: lax.fori_loop(0, 3, lambda i, c: c * jnp.cos(c) + i, x),
            R3,
            label="fori_loop",
        ),
        Spec(
            "while",
            lambda x: lax.while_loop(
                lambda c: c[1] < 3, lambda c: (jnp.sin(c[0]) * 1.5, c[1] + 1), (x, 0)
            )[0],
            R3,
            modes=("dual",),
        ),
        Spec(  # vmap makes the predicate batched: the loop runs while any lane does
            "while",
            lambda x: jax.vmap(
                lambda a: lax.while_loop(
                    lambda c: c[1] < a, lambda c: (c[0] * a, c[1] + 0.5), (a, 0.0)
                )
            )(jnp.abs(x) + 0.5)[0],
            R3,
            modes=("dual",),
            label="batched predicate",
        ),
        Spec("remat2", lambda x: jax.checkpoint(lambda z: jnp.sin(z) * z)(x), R3),
        Spec(
            "custom_linear_solve",
            lambda a, b: jnp.linalg.solve(a + 4 * jnp.eye(3, dtype=a.dtype), b),
            (("real", (3, 3)), ("real", (3,))),
        ),
    ],
}
# Every row, with those of the sections kept in their own test modules
# (tests/test_specs_*.py, each defining SECTIONS and running them).
FAMILIES = sorted(pathlib.Path(__file__).parent.glob("test_specs_*.py"))
ALL_SECTIONS = {**SECTIONS}
for _path in FAMILIES:
    ALL_SECTIONS.update(importlib.import_module(_path.stem).SECTIONS)
SPECS = [spec for specs in ALL_SECTIONS.values() for spec in specs]


@pytest.mark.parametrize("spec", row_params(SECTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_match_jax(spec: Spec, dtype: str) -> None:
    """The row against jax.jvp / jax.vjp, first and second order: rho <= 1e-12 in float64,
    the row's ``tol32`` in float32 (float32 is marked slow for time only; the full suite runs
    it)."""
    with jax.enable_x64(dtype == "float64"):
        failures = check_rows([spec], dtype)
    assert not failures, "\n".join(failures)


def test_every_rule_has_a_spec() -> None:
    assert set(RULES) <= {s.prim for s in SPECS}


def test_scipy_special(x64: None) -> None:
    """jax.scipy.special functions lower to table rows (and custom_jvp calls)."""
    funs = [jsp.gammaln, jsp.digamma, jsp.erf, jsp.erfc, jsp.ndtr, jsp.logit, jsp.expit]
    funs += [jsp.log_ndtr, jsp.xlogy, jsp.xlog1py, jsp.entr]
    x = jnp.linspace(0.1, 0.9, 5)

    def f(x):
        two = lambda fun: fun.__name__.startswith("xlog")  # noqa: E731
        return sum(jnp.sum(fun(x, x) if two(fun) else fun(x) * x) for fun in funs)

    @jax.jit
    def grads(x):
        return jax.grad(f)(x), [dk.get(name).grad(f)(x) for name in ("dual", "tape")]

    want, got = grads(x)
    for g in got:
        assert rho_tree(g, want) <= 1e-12


def _small(spec: Spec) -> Spec:
    """An elementwise row on 2-entry inputs (symbolic builds one expression per entry)."""
    return Spec(spec.prim, spec.fun, tuple((d, (2,)) for d, _ in spec.args), label=spec.label)


ELEMENTWISE_SPECS = [
    _small(s)
    for s in SPECS
    if RULES.get(s.prim) is not None
    and RULES[s.prim].kind in ("elementwise", "zero")
    and all(shape == (3, 4) for _, shape in s.args)
]


def _fits(spec: Spec) -> bool:
    """Whether the row's function takes its 2-entry inputs (some are written for (3, 4))."""
    try:
        jax.eval_shape(spec.fun, *(jax.ShapeDtypeStruct(s, jnp.float32) for _, s in spec.args))
    except TypeError:
        return False
    return True


SYMBOLIC_SPECS = [spec for spec in ELEMENTWISE_SPECS if _fits(spec)]


def test_symbolic_is_checked_on_most_elementwise_rows() -> None:
    assert len(SYMBOLIC_SPECS) > 40, [row_id(s) for s in SYMBOLIC_SPECS]


@pytest.mark.parametrize("spec", row_params({"elementwise": SYMBOLIC_SPECS}))
def test_symbolic_matches_jax_on_elementwise_rows(spec: Spec, x64: None) -> None:
    """symbolic as a mode of the spec table: an elementwise row it translates agrees with
    jax.jvp / jax.vjp to rho <= 1e-12 in float64; one it does not is refused with a reason."""
    from diffkit.symbolic.translate import REFUSED as SYMBOLIC_REFUSED

    xs, ts, rng = inputs_of(spec, zlib.crc32(row_id(spec).encode()), "float64")
    out = jax.eval_shape(spec.fun, *xs)
    ct = jax.tree.map(lambda o, r=rng: jnp.asarray(r.normal(size=o.shape), o.dtype), out)
    symbolic = dk.get("symbolic")
    try:
        got = symbolic.jvp(spec.fun, xs, ts)[1], symbolic.vjp(spec.fun, *xs)[1](ct)
    except dk.UnsupportedPrimitiveError as error:
        reasons = {*REFUSED.values(), *SYMBOLIC_REFUSED.values(), "at a special point"}
        assert any(r in str(error) for r in reasons), f"{row_id(spec)}: {error}"
        return
    want = jax.jvp(spec.fun, xs, ts)[1], jax.vjp(spec.fun, *xs)[1](ct)
    assert rho_tree(got, want) <= 1e-12, row_id(spec)
