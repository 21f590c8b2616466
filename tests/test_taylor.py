"""Taylor mode (diffkit.taylor) against nested jax.jvp and jax.experimental.jet.

Every row of the spec table (tests/test_rules.py and tests/test_specs_*.py) is pushed
through a 4-jet along a random polynomial path (all four series terms non-zero, so orders
1-4 are each checked) and compared with nested ``jax.jvp`` of ``t -> f(x(t))``, and with
``jax.experimental.jet`` where jet runs the row. A row Taylor mode does not support must be
refused in one line. The unit tier runs a representative set of rows in float64; the slow
tier a fixed quarter of the other rows (by a hash of the row's name) and the unit rows in
float32. ``DIFFKIT_TAYLOR_ALL=1`` runs every row of the table instead (~250 rows, ~8 min on 2
cores; benchmarks/README.md), which the suite's time budget cannot afford.
"""

from __future__ import annotations

import math
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_rules
import test_specs_collectives
from _spec import Spec, inputs_of, row_id, row_params

import diffkit as dk
from diffkit.accuracy import rho_tree
from diffkit.rules.table import REFUSED, RULES
from diffkit.taylor import derivatives, directional, how, jet
from diffkit.taylor.rules import REFUSED_TAYLOR

K = 4
#: Rows that round to a narrower float: Taylor mode carries normalised coefficients
#: x^(k)/k!, and rounding s/k! is not rounding s, divided by k!: they agree to the narrow
#: precision only.
ROUNDING = {"convert_element_type": 2e-3, "reduce_precision": 1e-6}
#: Known gaps, with the reason (each an xfail, strict: it fails today).
KNOWN = {
    "pow-int y": (
        "lax.pow with an integer exponent array and x = 0 entries: the path rule nests "
        "pow's JVP, x^(y-1) at x = 0, y = 0 is inf times 0 from order 2 on"
    ),
}
#: Rows refused in one line, with the words the refusal must contain.
REFUSALS = {"custom_vjp_call": "custom_vjp"}
#: The unit tier: one row of each kind of Taylor rule, control flow and custom rules.
UNIT = {
    "mul-broadcast", "div", "pow", "integer_pow", "rsqrt", "log1p", "logistic", "sin",
    "tanh", "erf", "max", "reduce_prod-zeros", "dot_general-batched", "gather", "sort",
    "cond", "scan", "while", "custom_jvp_call", "custom_linear_solve", "cumprod",
    "custom_vjp_call",
}  # fmt: skip


def _path(xs, ss):
    """``t -> x + sum_k s_k t^k / k!`` for each argument."""
    return lambda t: [
        x + sum(s * t ** (k + 1) / math.factorial(k + 1) for k, s in enumerate(terms))
        for x, terms in zip(xs, ss, strict=True)
    ]


def nested(f, xs, ss):
    """The derivatives 1..K of ``f(x(t))`` at 0 by K nested ``jax.jvp`` (the reference)."""
    path = _path(xs, ss)

    def g(t):
        return f(*path(t))

    out, h = [], g
    for _ in range(len(ss[0])):
        h = _derivative(h)
        out.append(h(jnp.zeros((), xs[0].dtype)))
    return out


def _derivative(h):
    return lambda t: jax.jvp(h, (t,), (jnp.ones_like(t),))[1]


def _per_order(terms):
    """``series_out`` (a list of K at each leaf) as K trees."""
    leaves, tree = jax.tree.flatten(terms, is_leaf=lambda t: isinstance(t, list))
    return [jax.tree.unflatten(tree, [leaf[k] for leaf in leaves]) for k in range(K)]


def check_row(spec: Spec, dtype: str) -> None:
    if row_id(spec) in KNOWN:
        pytest.xfail(KNOWN[row_id(spec)])
    xs, ts, rng = inputs_of(spec, zlib.crc32(row_id(spec).encode()), dtype)
    ss = [[t] + [jnp.asarray(rng.normal(size=t.shape), dtype) for _ in range(K - 1)] for t in ts]
    if spec.prim in REFUSALS:
        with pytest.raises(dk.UnsupportedPrimitiveError) as info:
            jet(spec.fun, tuple(xs), tuple(ss))
        message = str(info.value)
        assert "\n" not in message and REFUSALS[spec.prim] in message, message
        return

    @jax.jit
    def both(xs, ss):
        ref = spec.ref or spec.fun
        return _per_order(jet(spec.fun, tuple(xs), tuple(ss))[1]), nested(ref, xs, ss), True

    if "dual" not in spec.modes or not spec.order2:  # forward mode, or a second order,
        try:  # that JAX itself lacks: a one-line refusal is an answer
            both(xs, ss)
        except dk.UnsupportedPrimitiveError as error:
            assert "\n" not in str(error) and str(error).startswith("taylor:"), str(error)
            return

    got, want, _ = both(xs, ss)
    tol = ROUNDING.get(spec.prim, 1e-10 if dtype == "float64" else 50 * spec.tol32)
    for k in range(K):
        err = rho_tree(got[k], want[k])
        assert err <= tol, f"{row_id(spec)} order {k + 1}: rho {err:.2e} against nested jvp"
    try:
        from jax.experimental.jet import jet as jax_jet

        theirs = jax.jit(lambda xs, ss: _per_order(jax_jet(spec.fun, tuple(xs), tuple(ss))[1]))(
            xs, ss
        )
    except Exception:  # jet has no rule for the row (or fails on it): nothing to compare
        return
    for k in range(K):
        if not rho_tree(theirs[k], want[k]) <= tol:  # jet itself disagrees with nested jvp (its
            continue  # conventions at kinks: rem, clamp at its bounds, integer casts)
        err = rho_tree(got[k], theirs[k])
        assert err <= tol, f"{row_id(spec)} order {k + 1}: rho {err:.2e} against jet"


#: The collectives' rows need 4 devices (their own module runs them in a subprocess).
ALL = {k: v for k, v in test_rules.ALL_SECTIONS.items() if k not in test_specs_collectives.SECTIONS}
UNIT_ROWS = [s for specs in ALL.values() for s in specs if row_id(s) in UNIT]
SLOW_ROWS = [
    s
    for specs in ALL.values()
    for s in specs
    if row_id(s) not in UNIT
    and (
        os.environ.get("DIFFKIT_TAYLOR_ALL") == "1"
        or row_id(s) in KNOWN
        or zlib.crc32(row_id(s).encode()) % 4 == 0
    )
]


def test_the_unit_rows_exist() -> None:
    assert {row_id(s) for s in UNIT_ROWS} == UNIT


@pytest.mark.parametrize("spec", row_params({"unit": UNIT_ROWS}))
def test_unit_rows_match_nested_jvp_and_jet(spec: Spec, x64: None) -> None:
    """Orders 1-4 against nested jax.jvp and jax.experimental.jet, rho <= 1e-10 (float64)."""
    check_row(spec, "float64")


@pytest.mark.slow
@pytest.mark.parametrize("spec", row_params({"rest": SLOW_ROWS}))
def test_every_row_matches_nested_jvp_and_jet(spec: Spec, x64: None) -> None:
    check_row(spec, "float64")


@pytest.mark.slow
@pytest.mark.parametrize("spec", row_params({"unit": UNIT_ROWS}))
def test_unit_rows_float32(spec: Spec) -> None:
    check_row(spec, "float32")


def test_census_every_primitive_has_a_rule_or_a_one_line_refusal() -> None:
    """Every primitive of the rule table (what dual and tape differentiate) gets a Taylor
    rule of a known kind, or a one-line refusal naming it."""
    kinds = {"ode", "bilinear", "coefficient-wise", "path", "zero", "expansion", "control"}
    rules, refused = {}, {}
    control = {"cond", "while", "scan", "custom_jvp_call", "custom_linear_solve"}
    for name in sorted(set(RULES) | set(REFUSED) | set(REFUSED_TAYLOR) | control):
        try:
            rules[name] = how(name)
        except dk.UnsupportedPrimitiveError as error:
            refused[name] = str(error)
    assert set(rules.values()) <= kinds
    for name, message in refused.items():
        assert "\n" not in message and f"'{name}'" in message, message
    assert set(refused) <= set(REFUSED) | set(REFUSED_TAYLOR)
    assert len(rules) >= 120 and rules["exp"] == "ode" and rules["custom_jvp_call"] == "path"


def test_jet_mirrors_jax_jet_on_an_mlp(x64: None) -> None:
    """A small network, two arguments, a pytree output: jet's calling convention."""
    from jax.experimental.jet import jet as jax_jet

    r = np.random.default_rng(0)
    w1, w2 = jnp.asarray(r.normal(size=(3, 4))), jnp.asarray(r.normal(size=(4,)))

    def f(x, b):
        h = jnp.tanh(x @ w1 + b)
        return {"u": jnp.sum(jnp.exp(-h * h) * w2), "h": h}

    x, b = jnp.asarray(r.normal(size=3)), jnp.asarray(r.normal(size=4))
    sx = [jnp.asarray(r.normal(size=3)) for _ in range(3)]
    sb = [jnp.asarray(r.normal(size=4)) for _ in range(3)]
    y, ys = jet(f, (x, b), (sx, sb))
    y_ref, ys_ref = jax_jet(f, (x, b), (sx, sb))
    assert rho_tree(y, y_ref) <= 1e-14
    assert jax.tree.structure(ys, is_leaf=lambda t: isinstance(t, list)) == jax.tree.structure(
        ys_ref, is_leaf=lambda t: isinstance(t, list)
    )
    assert rho_tree(ys, ys_ref) <= 1e-10


def test_directional_derivatives_of_every_order_up_to_six(x64: None) -> None:
    """K = 1..6 along a direction, against nested jax.jvp and analytic exp(a t)."""
    a = jnp.array([0.3, -0.7, 1.1])
    x = jnp.array([0.2, 0.4, -0.1])

    def f(z):
        return jnp.sum(jnp.sin(z) * jnp.exp(z @ a))

    v = jnp.array([1.0, -0.5, 0.25])
    got = jax.jit(lambda x, v: derivatives(f, x, v, 6))(x, v)
    want = jax.jit(lambda x, v: nested(f, [x], [[v] + [jnp.zeros(3)] * 5]))(x, v)
    assert rho_tree(got, want) <= 1e-10
    assert float(directional(lambda z: jnp.exp(2.0 * z), 0.0, 1.0, 6)) == pytest.approx(64.0)


def test_the_differentiator_is_forward_mode_of_order_one(x64: None) -> None:
    t = dk.get("taylor")
    f = lambda x: jnp.sum(jnp.tanh(x) ** 2 * jnp.cos(x))  # noqa: E731
    x = jnp.linspace(-1.0, 1.0, 5)
    assert rho_tree(jax.jit(t.grad(f))(x), jax.grad(f)(x)) <= 1e-12
    assert rho_tree(jax.jit(t.hessian(f))(x), jax.hessian(f)(x)) <= 1e-12
    assert t.mode == "forward" and t.jet is not None


def test_custom_jvp_follows_the_rule_not_the_body(x64: None) -> None:
    """A custom_jvp whose rule is not the body's derivative: Taylor mode follows the rule at
    every order, as nested jax.jvp does (jet differentiates the body instead)."""

    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    f.defjvp(lambda p, t: (jnp.sin(p[0]), 2.0 * jnp.cos(p[0]) * t[0]))
    x, v = jnp.array(0.3), jnp.array(1.0)
    got = derivatives(f, x, v, 3)
    want = nested(f, [x], [[v, 0 * v, 0 * v]])
    assert rho_tree(got, want) <= 1e-12
    assert float(got[0]) == pytest.approx(2 * math.cos(0.3))


def test_bad_input_gets_one_line() -> None:
    with pytest.raises(dk.InputTypeError, match="same number of terms"):
        jet(jnp.sin, (1.0, 2.0), ((1.0,), (1.0, 2.0)))
    with pytest.raises(dk.InputTypeError, match="floating point"):
        jet(jnp.sin, (jnp.arange(3),), ((jnp.arange(3),),))
    with pytest.raises(dk.InputTypeError, match="shape"):
        jet(jnp.sin, (jnp.ones(3),), ((jnp.ones(2),),))
    with pytest.raises(dk.InputTypeError, match="positive int"):
        derivatives(jnp.sin, 1.0, 1.0, 0)


def test_a_primitive_with_no_rule_is_refused_in_one_line() -> None:
    def f(x):
        return jax.pure_callback(lambda a: a, jax.ShapeDtypeStruct((), jnp.float32), x) * x

    with pytest.raises(dk.UnsupportedPrimitiveError) as info:
        jet(f, (jnp.float32(1.0),), ((jnp.float32(1.0),),))
    message = str(info.value)
    assert message.startswith("taylor:") and "pure_callback" in message and "\n" not in message
