"""GradBench's evals (diffkit/harness/gradbench/__init__.py) and nested derivatives
(diffkit/harness/gradbench/nested.py).

References are independent of the code under test: JAX's own derivatives in float64,
finite differences within their error estimate (``check_grads``), closed forms (hello,
det, kmeans, saddle), NumPy re-implementations written from GradBench's definitions
(particle, lstm), and GradBench's published answers (particle, saddle).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk
from diffkit.accuracy import rho_tree
from diffkit.harness import gradbench as gb
from diffkit.harness.gradbench import nested

AD = ["jax-fwd", "jax-rev", "dual", "tape"]
TINY = {"hello": 3, "ba": 10, "ht": 4, "lstm": 3, "det": 3, "kmeans": 2, "particle": 1,
        "saddle": 2}  # fmt: skip
#: Over 1 s each on a lightly loaded 2-core machine (measured): the full suite runs them.
SLOW = {"ht", "lstm", "particle", "ba"}


def build(name: str, size: int, **options):
    return dk.harness.get_problem(name, **options).build(size, "float64")


def derivative(method: str, inst) -> tuple[jax.Array, jax.Array]:
    """The instance's derivative by ``method`` and by JAX (jax.grad / jax.jacrev)."""
    d = dk.get(method)
    mine = d.grad(inst.fun) if inst.quantity == "grad" else d.jacobian(inst.fun)
    ref = jax.grad(inst.fun) if inst.quantity == "grad" else jax.jacrev(inst.fun)
    return jax.jit(mine)(*inst.args), jax.jit(ref)(*inst.args)


def test_all_twelve_evals_are_families():
    assert sorted(gb.EVALS) == sorted(
        ["hello", "gmm", "lse", "llsq", "ode", "ba", "ht", "lstm", "det", "kmeans", "particle",
         "saddle"]
    )  # fmt: skip
    assert set(gb.EVALS) <= set(dk.harness.problems())
    for name in TINY:  # size axis of two orders of magnitude or more (det: n = l^2)
        sizes = dk.harness.get_problem(name).sizes
        span = (sizes[-1] / sizes[0]) ** (2 if name == "det" else 1)
        assert span >= 100, name


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow if n in SLOW else ()) for n in TINY],
)
def test_interpreters_agree_with_jax_in_float64(x64, name):
    """dual and tape (jax-fwd and jax-rev are JAX's own: the harness's suite measures them)."""
    inst = build(name, TINY[name])
    for method in ["dual", "tape"]:
        mine, ref = derivative(method, inst)
        assert rho_tree(mine, ref) <= 1e-10, (name, method)


@pytest.mark.parametrize("name", ["ba"])
def test_jax_derivative_against_finite_differences(x64, name):
    inst = build(name, TINY[name])
    rest = inst.args[1:]
    dk.testing.check_grads(lambda x: inst.fun(x, *rest), [inst.args[0]], directions=1)


def test_hello_is_double(x64):
    inst = build("hello", 5)
    mine, _ = derivative("tape", inst)
    np.testing.assert_allclose(mine, 2 * np.asarray(inst.args[0]), rtol=1e-15)


def test_det_by_minors_is_the_determinant_and_its_gradient_the_cofactors(x64):
    inst = build("det", 5)
    a = np.asarray(inst.args[0])
    assert abs(float(jax.jit(inst.fun)(a)) - np.linalg.det(a)) < 1e-13
    for method in ["jax-rev", "dual"]:  # Jacobi: d det / dA = det(A) A^-T
        mine, _ = derivative(method, inst)
        assert rho_tree(mine, np.linalg.det(a) * np.linalg.inv(a).T) < 1e-12


def test_kmeans_hessian_is_diagonal_twice_the_cluster_sizes(x64):
    dense, coloured = build("kmeans", 3, points=40), build("kmeans", 3, points=40, colouring=True)
    centroids, points = (np.asarray(a) for a in dense.args)
    nearest = np.argmin(((points[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=3)
    d = centroids.shape[1]
    for method in ["jax-fwd", "tape"]:
        hessian, _ = derivative(method, dense)
        np.testing.assert_allclose(
            hessian.reshape(3 * d, 3 * d), np.diag(np.repeat(2.0 * counts, d))
        )
        compressed, _ = derivative(method, coloured)  # one colour: H @ ones
        np.testing.assert_allclose(
            compressed.reshape(3, d), np.repeat(2.0 * counts, d).reshape(3, d)
        )
    grad = jax.jit(dense.fun)(centroids, points)  # GradBench's "dir": J / diag(H)
    means = np.stack([points[nearest == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(grad / (2.0 * counts[:, None]), centroids - means, atol=1e-14)


@pytest.mark.slow  # ~3 s on 2 cores
def test_ba_colouring_compresses_the_jacobian(x64):
    dense, coloured = build("ba", 12), build("ba", 12, colouring=True)
    flat = np.asarray(jax.jacfwd(dense.fun)(*dense.args))
    colours = gb.ba_colours(2, 3, 12)  # cams, points, w: ravel order
    assert coloured.n == 15 and flat.shape[1] == colours.size
    for c in range(15):  # no residual sees two parameters of one colour
        assert ((flat[:, colours == c] != 0).sum(1) <= 1).all()
    expected = np.stack([flat[:, colours == c].sum(1) for c in range(15)], 1)
    compressed, _ = derivative("tape", coloured)
    np.testing.assert_allclose(compressed, expected, rtol=1e-13, atol=1e-13)


def test_dense_jacobian_in_cache_sized_chunks_is_jacrev(x64, monkeypatch):
    """Dense Jacobians are assembled in chunks of VJP rows capped by CACHE_BYTES (chunks
    filling the memory budget made ba and ht memory-bound); shrunk here so that ba's 60
    rows take several chunks."""
    from diffkit._core import interface as _interface
    from diffkit._core.trees import bytes_per_direction, trace_fun

    monkeypatch.setattr(_interface, "CACHE_BYTES", 2**18)
    inst = build("ba", 20)
    (x, *rest) = inst.args
    fun = trace_fun(lambda x: inst.fun(x, *rest), jax.tree.structure((x,)), (x,), False)
    chunk = dk.get("jax-rev")._chunk(inst.m, bytes_per_direction(fun, (x,)))
    assert 1 <= chunk < inst.m / 2 and inst.m % chunk  # several chunks and a remainder
    mine, ref = derivative("jax-rev", inst)
    assert rho_tree(mine, ref) <= 1e-12


def test_saddle_gradient_is_twice_p1(x64):
    inst = build("saddle", 3)
    for outer in AD:
        mine, _ = derivative(outer, inst)
        np.testing.assert_allclose(mine, 2 * np.asarray(inst.args[0]), rtol=1e-14)


def _numpy_particle(w: float) -> float:
    """GradBench's naive_euler written out with the gradient of p by hand."""
    x, xdot = np.array([0.0, 8.0]), np.array([0.75, 0.0])
    charges = [np.array([10.0, 10.0 - w]), np.array([10.0, 0.0])]
    while True:
        grad_p = sum(-(x - c) / np.linalg.norm(x - c) ** 3 for c in charges)
        x_new = x + 0.1 * xdot
        if x_new[1] <= 0:
            break
        x, xdot = x_new, xdot - 0.1 * grad_p
    return float((x[0] - x[1] / xdot[1] * xdot[0]) ** 2)


def test_particle_miss_matches_numpy_and_gradbench(x64):
    w = jnp.array([0.0, 0.3, nested.PARTICLE_EXPECTED])
    miss = np.asarray(jax.jit(gb.particle_miss)(w))
    np.testing.assert_allclose(miss[:2], [_numpy_particle(0.0), _numpy_particle(0.3)], rtol=1e-12)
    assert miss[2] < 1e-7  # GradBench's answer puts the particle through the origin


def test_lstm_matches_a_loop_over_adbench_definition(x64):
    inst = build("lstm", 4, layers=2, b=3)
    params, state, seq = (jax.tree.map(np.asarray, a) for a in inst.args)
    main, extra, state = params["main"], params["extra"], state.copy()
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    total = 0.0
    for t in range(len(seq) - 1):
        x = seq[t] * extra[0]
        for i in range(2):
            w, b = main[2 * i].reshape(4, 3), main[2 * i + 1].reshape(4, 3)
            h, c = state[2 * i], state[2 * i + 1]
            c = c * sig(x * w[0] + b[0]) + sig(h * w[1] + b[1]) * np.tanh(h * w[3] + b[3])
            h = sig(x * w[2] + b[2]) * np.tanh(c)
            state[2 * i], state[2 * i + 1], x = h, c, h
        y = x * extra[1] + extra[2]
        total += np.sum(seq[t + 1] * (y - np.log(np.sum(np.exp(y)) + 2)))
    assert abs(float(jax.jit(inst.fun)(*inst.args)) + total / ((len(seq) - 1) * 3)) < 1e-14


def test_ht_rotations_match_the_matrix_exponential(x64):
    v = jnp.array([0.3, -0.2, 0.5])
    cross = jnp.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    np.testing.assert_allclose(gb._angle_axis(v), jax.scipy.linalg.expm(cross), atol=1e-14)
    r = np.asarray(gb._euler_xzy(v))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-14)
    assert abs(np.linalg.det(r) - 1) < 1e-14


# ------------------------------------------------------------------------- nested


class _NaiveDual:
    """Untagged dual numbers: the implementation that confuses perturbations."""

    def __init__(self, primal, tangent):
        self.primal, self.tangent = primal, tangent

    def __add__(self, o):
        o = o if isinstance(o, _NaiveDual) else _NaiveDual(o, 0.0)
        return _NaiveDual(self.primal + o.primal, self.tangent + o.tangent)

    def __mul__(self, o):
        o = o if isinstance(o, _NaiveDual) else _NaiveDual(o, 0.0)
        return _NaiveDual(self.primal * o.primal, self.primal * o.tangent + self.tangent * o.primal)


def _naive_d(f):
    return lambda x: f(_NaiveDual(x, 1.0)).tangent


def _classic(outer, inner):
    """d/dx [x * d/dy (x + y)] at x = 3, y = 2; the answer is 1."""
    return outer(lambda x: x * inner(lambda y: x + y)(2.0))(3.0)


@pytest.mark.slow  # 36 nested pairs, each compiled: ~3 s on 2 cores
def test_perturbation_confusion_does_not_occur_for_any_pair():
    assert _classic(_naive_d, _naive_d) == 2.0  # the naive implementation fails the test
    methods = ["fd", "symbolic", "dual", "jax-fwd", "tape", "jax-rev"]  # the exact six
    for outer, inner in nested.pairs(methods):
        f = lambda x, inner=inner: x * dk.get(inner).grad(lambda y: x + y)(2.0)  # noqa: E731
        try:
            value = float(jax.jit(dk.get(outer).grad(f))(3.0))
        except NotImplementedError:  # a primitive a method has no rule for: refused, not wrong
            assert outer == "symbolic" and inner == "fd"
            continue
        tol = 1e-4 if "fd" in (outer, inner) else 1e-6  # float32
        assert abs(value - 1.0) <= tol, (outer, inner, value)


@pytest.mark.slow  # every nested pair of four methods: 3-5 s each on 2 cores
@pytest.mark.parametrize("name", ["saddle", "kmeans"])
def test_nested_pairs_agree_with_jax_nested(x64, name):
    ref_inst = build(name, 2, inner="jax-rev")
    for outer, inner in nested.pairs(AD):
        inst = build(name, 2, inner=inner)
        mine, _ = derivative(outer, inst)
        _, jax_nested = derivative("jax-rev", ref_inst)
        assert rho_tree(mine, jax_nested) <= 1e-10, (outer, inner)


@pytest.mark.slow  # ~1.7 s on 2 cores
def test_particle_pairs_agree_with_jax_nested(x64):
    jax_nested = derivative("jax-rev", build("particle", 1, inner="jax-rev"))[1]
    for outer, inner in [("jax-fwd", "tape"), ("tape", "dual")]:
        mine, _ = derivative(outer, build("particle", 1, inner=inner))
        assert rho_tree(mine, jax_nested) <= 1e-10, (outer, inner)


def test_gradbench_published_answer_particle():  # saddle's: the doctest of nested.saddle
    assert abs(nested.particle(0.0, "dual", "tape") - nested.PARTICLE_EXPECTED) < 1e-12


def test_dual_min_second_derivative_at_zero():
    """kmeans puts each centroid on a point (GradBench's inputs): that point's distance and
    its tangent are exactly 0; a method over dual's gradient must keep it in the Hessian
    (the reduction row once masked w * t where t == 0, losing d/dt there)."""
    f = lambda x: jnp.min(jnp.stack([x**2, x**2 + 1.0]))  # noqa: E731
    assert float(jax.jit(dk.get("jax-fwd").grad(dk.get("dual").grad(f)))(0.0)) == 2.0


def test_bad_inner_is_one_line():
    with pytest.raises(dk.DiffkitError, match="inner must be"):
        build("saddle", 1, inner=3)


def test_suite_and_command_line():
    from diffkit import cli

    suite = dk.harness.gradbench_suite(["jax-rev", "dual", "fd"])
    names = [p.name for p in suite["problems"]]
    assert sorted(set(names)) == sorted(gb.EVALS)
    inners = sorted(p.options["inner"] for p in suite["problems"] if p.name == "particle")
    assert inners == ["dual", "jax-rev"]  # fd is not an inner method of the suite
    args = cli.build_parser().parse_args(["compare", "--suite", "gradbench", "--methods", "tape"])
    assert [p.name for p in cli._cases(args)["problems"]] == list(gb.EVALS)
    args = cli.build_parser().parse_args(["compare", "--suite", "gradbench", "--problem", "mlp"])
    with pytest.raises(cli.CLIError, match="own problems"):
        cli._cases(args)


def test_ratio_view_shows_pairs_at_the_largest_size():
    recs = [
        {"problem": "saddle", "problem_options": {"inner": i}, "size": s, "method": "tape",
         "outcome": "ok", "ratio": r}
        for i, s, r in [("dual", 1, 9.0), ("dual", 10, 2.0), ("tape", 10, 3.0)]
    ]  # fmt: skip
    lines = dk.harness.Results(recs).ratio_view().splitlines()
    assert lines[1:] == ["saddle x dual  10    2", "saddle x tape  10    3"]
