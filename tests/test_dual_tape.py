"""``dual`` and ``tape`` on whole programs, checked against JAX's own derivatives.

Composites (an MLP on flat parameters, a scan-based recurrent cell, a Runge-Kutta integrator,
indexing-heavy code, jax.nn activations and losses), eager against jit, forward-over-reverse
Hessian-vector products, errors, the teaching API (``Dual``, the printed tape), and the tape's
freedom from reference cycles.
"""

from __future__ import annotations

import gc
import itertools
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import diffkit as dk
from diffkit import Dual
from diffkit.accuracy import rho, rho_tree

HAND = ["dual", "tape"]


def mlp_loss(flat, x, y, sizes=(4, 8, 8, 1)):
    """The ANCHORS.md MLP: tanh layers on a flat parameter vector, mean squared error."""
    h, start = x, 0
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        W = flat[start : start + a * b].reshape(a, b)
        bias = flat[start + a * b : start + a * b + b]
        start += a * b + b
        h = h @ W + bias
        h = jnp.tanh(h) if i < len(sizes) - 2 else h
    return jnp.mean((h[:, 0] - y) ** 2)


def rnn_loss(params, xs):
    """A recurrent cell unrolled by lax.scan; the loss reads every hidden state."""

    def cell(h, x):
        h = jnp.tanh(params["Wh"] @ h + params["Wx"] @ x + params["b"])
        return h, jnp.sum(h**2)

    h_final, per_step = lax.scan(cell, jnp.zeros(3), xs)
    return jnp.sum(per_step) + jnp.sum(h_final * params["b"])


def rk4_loss(theta, y0):
    """Integrate dy/dt = -theta[0] y + theta[1] sin(y) by classical Runge-Kutta (fori_loop)."""
    f = lambda y: -theta[0] * y + theta[1] * jnp.sin(y)  # noqa: E731
    dt = 0.1

    def step(i, y):
        k1 = f(y)
        k2 = f(y + dt / 2 * k1)
        k3 = f(y + dt / 2 * k2)
        k4 = f(y + dt * k3)
        return y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return jnp.sum(lax.fori_loop(0, 8, step, y0) ** 2)


def indexing_loss(x):
    """Integer indexing, slices, take_along_axis, dynamic slices, scatter-add, argmax."""
    idx = jnp.array([3, 0, 3, 5])
    rows = x[idx]  # gather
    cols = x[:, 1:] * x[:, :-1]  # slices
    picked = jnp.take_along_axis(x, jnp.argmax(x, axis=1, keepdims=True), axis=1)
    acc = jnp.zeros_like(x).at[idx].add(rows * 2.0)  # scatter-add, repeated index
    win = lax.dynamic_slice(x, (jnp.argmin(x[:, 0]), 0), (2, 3))
    upd = lax.dynamic_update_slice(x, win * win, (1, 1))
    return (
        jnp.sum(rows**2)
        + jnp.sum(cols)
        + jnp.sum(picked)
        + jnp.sum(acc * x)
        + jnp.sum(jnp.sin(upd))
        + x[2, 3] * x[-1, 0]
    )


def nn_loss(params, x, labels):
    """jax.nn activations and losses."""
    h = x @ params["W"]
    acts = (
        jax.nn.relu(h)
        + jax.nn.gelu(h)
        + jax.nn.gelu(h, approximate=False)
        + jax.nn.softplus(h)
        + jax.nn.sigmoid(h)
        + jax.nn.silu(h)
        + jax.nn.elu(h)
        + jax.nn.leaky_relu(h)
    )
    logits = acts @ params["V"]
    ce = -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(labels, 3), axis=1))
    return ce + jnp.mean(jax.nn.logsumexp(logits, axis=1)) + jnp.sum(jax.nn.softmax(logits)[:, 0])


def _cases():
    rng = np.random.default_rng(0)
    n_mlp = 4 * 8 + 8 + 8 * 8 + 8 + 8 + 1
    normal = lambda *s: jnp.asarray(rng.normal(size=s))  # noqa: E731
    return {
        "mlp": (mlp_loss, (normal(n_mlp) * 0.5, normal(32, 4), normal(32))),
        "rnn": (
            rnn_loss,
            ({"Wh": normal(3, 3) * 0.5, "Wx": normal(3, 2), "b": normal(3)}, normal(5, 2)),
        ),
        "rk4": (rk4_loss, (jnp.asarray([0.7, 0.3]), normal(4))),
        "indexing": (indexing_loss, (normal(6, 4),)),
        "nn": (
            nn_loss,
            ({"W": normal(5, 4), "V": normal(4, 3)}, normal(6, 5), jnp.array([0, 1, 2, 1, 0, 2])),
        ),
    }


@pytest.mark.parametrize("case", ["mlp", "rnn", "rk4", "indexing", "nn"])
def test_composite_gradients_match_jax(case: str, x64: None) -> None:
    f, args = _cases()[case]

    @jax.jit
    def grads(*args):
        return jax.grad(f)(*args), [dk.get(name).grad(f)(*args) for name in HAND]

    want, got = grads(*args)
    for name, g in zip(HAND, got, strict=True):
        assert rho_tree(g, want) <= 1e-12, name


def test_eager_matches_jit(x64: None) -> None:
    f = lambda x: jnp.sum(jnp.tanh(x) * x[::-1]) * x[0]  # noqa: E731
    x = jnp.linspace(-1.0, 1.0, 3)
    for name in HAND:
        grad = dk.get(name).grad(f)
        eager, jitted = grad(x), jax.jit(grad)(x)
        assert rho(eager, jitted) <= 1e-15, name
        assert rho(eager, jax.grad(f)(x)) <= 1e-12, name


def test_forward_over_reverse_hessian_vector_product(x64: None) -> None:
    f, (flat, x, y) = _cases()["mlp"]
    g = lambda w: f(w, x, y)  # noqa: E731
    v = jnp.asarray(np.random.default_rng(1).normal(size=flat.shape))

    @jax.jit
    def hvps(w, v):
        mine = dk.get("dual").jvp(dk.get("tape").grad(g), (w,), (v,))[1]
        return mine, jax.jvp(jax.grad(g), (w,), (v,))[1]

    mine, want = hvps(flat, v)
    assert rho(mine, want) <= 1e-12


def test_hessians_of_both(x64: None) -> None:
    f = lambda x: jnp.sum(jnp.sin(x) * x[::-1]) + (x[0] * x[1]) ** 2  # noqa: E731
    x = jnp.linspace(0.2, 1.4, 4)
    want = jax.hessian(f)(x)
    got = jax.jit(lambda x: [dk.get(name).hessian(f)(x) for name in HAND])(x)
    for name, h in zip(HAND, got, strict=True):
        assert rho(h, want) <= 1e-12, name


def test_dual_vector_mode_is_chunked(x64: None) -> None:
    f = lambda x: jnp.sum(jnp.sin(x) ** 2 * x[::-1])  # noqa: E731
    x = jnp.linspace(0.0, 2.0, 50)
    chunked = dk.get("dual", chunk_size=16)  # 50 directions in 4 chunks
    assert rho(jax.jit(chunked.grad(f))(x), jax.grad(f)(x)) <= 1e-12


def test_while_loop_forward_only(x64: None) -> None:
    def f(x):
        return lax.while_loop(
            lambda c: c[1] < 4, lambda c: (c[0] * jnp.cos(c[0]), c[1] + 1), (x, 0)
        )[0]

    x, v = jnp.linspace(0.1, 0.9, 3), jnp.ones(3)
    assert rho(dk.get("dual").jvp(f, (x,), (v,))[1], jax.jvp(f, (x,), (v,))[1]) <= 1e-12
    with pytest.raises(dk.UnsupportedPrimitiveError, match=r"tape: cannot reverse the while_loop"):
        dk.get("tape").grad(lambda x: jnp.sum(f(x)))(x)


def test_long_running_reductions_keep_float32_accuracy() -> None:
    """Over a long run, cumlogsumexp's tangent multipliers exp(y_(i-1) - y_i) are all near 1.
    Multiplied out in float32 they lost digits at each factor (tape: rho 2.9e-6 against the
    float64 formulas at n = 2e4, where jax.grad gets 3.5e-7); summed as logs they do not."""
    n = 20_000
    rng = np.random.default_rng(0)
    x, v, w = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y = np.logaddexp.accumulate(x)  # float64 throughout
    want_grad = np.exp(x) * np.cumsum((w * np.exp(-y))[::-1])[::-1]  # of sum(w * y)
    want_jvp = np.exp(-y) * np.cumsum(np.exp(x) * v)  # of y itself

    def both(x, v):
        loss = lambda x: jnp.sum(lax.cumlogsumexp(x) * w.astype(np.float32))  # noqa: E731
        return dk.get("tape").grad(loss)(x), dk.get("dual").jvp(lax.cumlogsumexp, (x,), (v,))[1]

    grad, y_dot = jax.jit(both)(jnp.asarray(x, jnp.float32), jnp.asarray(v, jnp.float32))
    assert rho(grad, want_grad) <= 1e-6
    assert rho(y_dot, want_jvp) <= 1e-6


def _third_party_ops():
    """Primitives of a third-party library, registered with JAX the way lineax and equinox
    register theirs: ``scale`` (``y = 3 x``: a JVP rule that applies ``scale`` again to the
    tangent, and a transpose rule), ``cube`` (``y = x**3``: a JVP rule only) and ``opaque``
    (no derivative rule at all)."""
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    def make(name, impl, jvp=None):
        prim = Primitive(name)
        prim.def_impl(impl)
        prim.def_abstract_eval(lambda x: x)
        mlir.register_lowering(prim, mlir.lower_fun(impl, multiple_results=False))
        batching.defvectorized(prim)
        if jvp is not None:
            ad.primitive_jvps[prim] = jvp
        return prim

    scale = make("third_party_scale", lambda x: 3 * x)
    ad.primitive_jvps[scale] = lambda p, t: (
        scale.bind(*p),
        ad.Zero(t[0].aval) if type(t[0]) is ad.Zero else scale.bind(*t),
    )
    ad.primitive_transposes[scale] = lambda ct, x: [scale.bind(ct)]
    cube = make(
        "third_party_cube",
        lambda x: x**3,
        lambda p, t: (p[0] ** 3, 3 * p[0] ** 2 * ad.instantiate_zeros(t[0])),
    )
    opaque = make("third_party_opaque", lambda x: 2 * x)
    return scale.bind, cube.bind, opaque.bind


@pytest.mark.parametrize("name", HAND)
def test_third_party_primitives_are_differentiated_by_their_jax_rules(name: str) -> None:
    """A primitive with no row but with rules in JAX's tables (as lineax, equinox register
    theirs) is differentiated through those rules, first and second order."""
    scale, cube, _ = _third_party_ops()

    def f(x):
        return jnp.sum(jnp.sin(scale(x)) * cube(x))

    x = jnp.array([0.3, -0.7, 1.1])
    assert rho(dk.get(name).grad(f)(x), jax.grad(f)(x)) <= 1e-6
    assert rho(dk.get(name).hessian(f)(x), jax.hessian(f)(x)) <= 1e-5


def test_ragged_dot_goes_through_jax_s_rules() -> None:
    """``ragged_dot_general`` has no row: tape pulls back through JAX's registered JVP and
    transposes; JAX cannot vmap it over directions, so dual's Jacobian says so in one line."""
    rng = np.random.default_rng(0)
    lhs = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
    rhs = jnp.asarray(rng.standard_normal((2, 3, 4)), jnp.float32)
    sizes = jnp.array([2, 4], jnp.int32)
    f = lambda a, b: jnp.sum(jnp.sin(lax.ragged_dot(a, b, sizes)))  # noqa: E731
    got = dk.get("tape").grad(f, argnums=(0, 1))(lhs, rhs)
    for g, want in zip(got, jax.grad(f, argnums=(0, 1))(lhs, rhs), strict=True):
        assert rho(g, want) <= 1e-6
    with pytest.raises(dk.UnsupportedPrimitiveError, match="ragged_dot") as info:
        dk.get("dual").grad(f)(lhs, rhs)
    assert "\n" not in str(info.value) and "vmap" in str(info.value)


@pytest.mark.parametrize("name", HAND)
def test_unsupported_primitive_error_is_short_and_names_the_users_line(name: str) -> None:
    *_, opaque = _third_party_ops()
    with pytest.raises(NotImplementedError):
        jax.grad(lambda x: opaque(x))(1.0)  # JAX cannot differentiate it either
    with pytest.raises(dk.UnsupportedPrimitiveError) as info:
        dk.get(name).grad(lambda x: opaque(x) * x)(1.0)
    message = str(info.value)
    assert message.startswith(f"{name}: no rule for primitive 'third_party_opaque'")
    assert "test_dual_tape.py" in message  # the user's source line
    assert "JAX has no derivative rule for it either" in message and "\n" not in message
    assert len(message) < 300  # no list of every supported primitive


def test_stop_gradient_and_integer_values_get_no_cotangent() -> None:
    def f(x):
        k = jnp.argmax(x)  # integer: not recorded
        return jnp.sum(x * lax.stop_gradient(x)) + x[k] * (x[0] > 0)

    x = jnp.array([0.5, 2.0, -1.0])
    tape = dk.get("tape").record(f, x)
    recorded = {node.primitive for node in tape.nodes}
    assert not recorded & {"argmax", "gt", "stop_gradient", "convert_element_type"}
    assert rho(tape.backward()[0], jax.grad(f)(x)) == 0
    assert rho(dk.get("dual").grad(f)(x), jax.grad(f)(x)) == 0


# ------------------------------------------------------------ teaching API


def test_dual_number_arithmetic() -> None:
    y = Dual(2.0, 1.0) ** 3
    assert (float(y.primal), float(y.tangent)) == (8.0, 12.0)
    z = (1.0 / (1.0 + (-Dual(0.3, 1.0)).exp())).log() - Dual(0.3, 1.0) * 2.0 + 2.0 ** Dual(0.3, 1.0)
    f = lambda x: jnp.log(1 / (1 + jnp.exp(-x))) - 2 * x + 2.0**x  # noqa: E731
    want_y, want_dot = jax.jvp(f, (0.3,), (1.0,))
    assert float(z.primal) == pytest.approx(float(want_y), rel=1e-6)
    assert float(z.tangent) == pytest.approx(float(want_dot), rel=1e-6)
    w = Dual(jnp.array([0.5, 1.0]), jnp.array([1.0, 0.0])).apply(lambda a: jnp.sum(jnp.tanh(a) * a))
    assert float(w.tangent) == pytest.approx(float(jnp.tanh(0.5) + 0.5 * (1 - jnp.tanh(0.5) ** 2)))


def test_printed_tape() -> None:
    tape = dk.get("tape").record(lambda w, x: jnp.tanh(w * x) + w, 0.5, 2.0)
    before = str(tape)
    assert before.splitlines()[0] == "tape: 3 nodes, inputs v0 v1, outputs v4"
    assert "tanh(v2)" in before and "adjoint" not in before
    g_w, g_x = tape.backward()
    after = str(tape)
    assert "adjoint" in after and len(after.splitlines()) == 4
    want_w, want_x = jax.grad(lambda w, x: jnp.tanh(w * x) + w, argnums=(0, 1))(0.5, 2.0)
    assert float(g_w) == pytest.approx(float(want_w)) and float(g_x) == pytest.approx(float(want_x))


def test_tape_has_no_reference_cycles() -> None:
    f = lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2)  # noqa: E731
    args = (jnp.ones((3, 2)), jnp.ones((4, 3)))
    gc.collect()
    gc.disable()
    try:
        tape = dk.get("tape").record(f, *args)
        tape.backward()
        ref = weakref.ref(tape)
        del tape
        assert ref() is None  # freed by reference counting alone: nothing points back
    finally:
        gc.enable()


def test_vjp_of_a_pytree_with_aux(x64: None) -> None:
    f = lambda p: ({"y": jnp.sin(p["a"]) * p["b"]}, p["a"].sum())  # noqa: E731
    p = {"a": jnp.linspace(0.0, 1.0, 3), "b": jnp.array(2.0)}
    out, vjp_fn, aux = dk.get("tape").vjp(f, p, has_aux=True)
    want_out, want_vjp, want_aux = jax.vjp(f, p, has_aux=True)
    ct = {"y": jnp.array([1.0, -1.0, 0.5])}
    assert rho_tree(out, want_out) == 0 and rho(aux, want_aux) == 0
    assert rho_tree(vjp_fn(ct), want_vjp(ct)) <= 1e-15


def test_a_tape_recorded_under_jit_prints_shapes() -> None:
    """Values of a tape recorded while tracing are tracers: printed as dtype[shape]."""
    seen: list[str] = []

    @jax.jit
    def traced(x):
        seen.append(str(dk.get("tape").record(lambda x: jnp.sum(jnp.sin(x) * x), x)))
        return x

    traced(jnp.arange(10.0))
    assert "v1 = sin(v0)" in seen[0] and "value float32[10]" in seen[0]
