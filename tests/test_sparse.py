"""Sparse Jacobians and Hessians (issue 29): detected patterns, colourings, compressed
derivatives.

References are independent of the detector: patterns written from the stencils
(diffkit.harness.sparse_families' ``*_pattern``), the nonzeros of JAX's own dense ``jax.jacfwd`` /
``jax.hessian`` at random points, and each method's own dense Jacobian or Hessian.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax
from test_fuzz import _eval, build, points, recipes

import diffkit as dk
from diffkit.accuracy import rho
from diffkit.harness import sparse_families as fam
from diffkit.harness.measure import resolve_method
from diffkit.sparse.colouring import ORDERS, check_colouring
from diffkit.sparse.compressed import make_plan

METHODS = ("jax-fwd", "jax-rev", "dual", "tape", "fd", "symbolic")


def nonzeros(jac) -> np.ndarray:
    """Where a dense derivative is nonzero (NaN and infinities count as nonzero)."""
    a = np.asarray(jac)
    return (a != 0) | ~np.isfinite(a)


def rand(n: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(0.3, 1.7, n), jnp.float32)


# ------------------------------------------------------------------ patterns


@pytest.mark.parametrize(
    ("name", "size", "exact"),
    [
        ("brusselator-2d", 5, fam.brusselator_pattern(5)),
        ("pde-1d", 7, fam.pde_1d_pattern(7)),
        ("pde-2d", 4, fam.pde_2d_pattern(4)),
        ("rosenbrock-ext-hessian", 10, fam.rosenbrock_ext_pattern(10)),
    ],
)
def test_family_patterns_exact(name, size, exact):
    inst = dk.harness.get_problem(name).build(size)
    p = dk.jacobian_sparsity(inst.fun, *inst.args)
    assert p.shape == exact.shape and (p != exact).nnz == 0
    x = rand(inst.n, 1) + inst.args[0]  # a generic point: the stencil's nonzeros all show
    assert (nonzeros(jax.jacfwd(inst.fun)(x)) == p.toarray()).all()


def test_extended_rosenbrock_hessian_exact():
    inst = dk.harness.get_problem("rosenbrock-ext").build(10)
    p = dk.hessian_sparsity(inst.fun, *inst.args)
    assert (p != fam.rosenbrock_ext_pattern(10)).nnz == 0
    assert (nonzeros(jax.hessian(inst.fun)(rand(10))) == p.toarray()).all()
    assert dk.sparse.colour_star(p).n_colours == 2


def _scan_long(x):
    return lax.scan(lambda c, a: (0.5 * c + a, c * a), 0.0, jnp.tile(x, 30))[1]


A = np.array([[1.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0, 5.0]])
PROGRAMS = {  # name -> (f, exact): exact where the structure is static
    "stencil": (lambda x: x[2:] - 2 * x[1:-1] + x[:-2], True),
    "roll-mul": (lambda x: jnp.roll(x, 2) * x, True),
    "matvec-const": (lambda x: jnp.asarray(A, jnp.float32) @ x, True),
    "outer": (lambda x: jnp.outer(x[:2], x[3:]).ravel(), True),
    "batched-dot": (
        lambda x: jnp.einsum("bij,bj->bi", x[:4].reshape(1, 2, 2), x[1:3].reshape(1, 2)).ravel(),
        True,
    ),
    "gather-static": (lambda x: x[jnp.array([4, 0, 0, 2])] * 2.0, True),
    "gather-traced": (lambda x: x[jnp.argmax(x)] * x, False),
    "scatter-add": (lambda x: jnp.zeros(4).at[jnp.array([0, 0, 3])].add(x[:3]), True),
    "scatter-set": (lambda x: x.at[jnp.array([1, 3])].set(x[0] ** 2), True),
    "scatter-traced": (lambda x: x.at[jnp.argmin(x)].set(3.0 * x[1]), False),
    "dynamic-slice": (lambda x: lax.dynamic_slice(x, (jnp.argmax(x),), (2,)), False),
    "dus-static": (lambda x: lax.dynamic_update_slice(x, x[:2] ** 2, (3,)), True),
    "pad-concat": (lambda x: jnp.concatenate([jnp.pad(x[:2], 1), x[::-1]]) * 1.5, True),
    "where-static": (lambda x: jnp.where(jnp.arange(5) < 2, x, jnp.sin(x[::-1])), True),
    "where-traced": (lambda x: jnp.where(x > 1.0, x, x[::-1] ** 2), False),
    "cumsum": (lambda x: jnp.cumsum(x), True),
    "cumprod-rev": (lambda x: lax.cumprod(x, reverse=True), True),
    "cummax": (lambda x: lax.cummax(x), False),
    "sort": (lambda x: jnp.sort(x), False),
    "top-k": (lambda x: lax.top_k(x, 2)[0], False),
    "reduce-axis": (lambda x: jnp.max(jnp.stack([x, x**2]), axis=0), True),
    "prod": (lambda x: jnp.prod(x[:3]) * x[4:], True),
    "cond-traced": (lambda x: lax.cond(x[0] > 1.0, lambda a: a * a[0], jnp.sin, x), False),
    "cond-static": (lambda x: lax.cond(True, lambda a: a[:2] * 2.0, lambda a: a[3:], x), True),
    "while-known": (lambda x: lax.fori_loop(0, 3, lambda i, c: c + jnp.roll(c, 1) ** 2, x), True),
    "while-unknown": (
        lambda x: lax.while_loop(lambda c: c[0] < 3.0, lambda c: jnp.roll(c, 1) + c, x),
        False,
    ),
    "scan-long": (_scan_long, False),
    "custom-jvp": (lambda x: jax.nn.relu(x) + jax.nn.softplus(x[::-1]), True),
    "checkpoint": (lambda x: jax.checkpoint(lambda a: a[1:] * a[:-1])(x), True),
    "jit": (lambda x: jax.jit(lambda a: jnp.diff(a) ** 2)(x), True),
    "floor": (lambda x: (jnp.floor(x) + 2.0) * x, True),
    "softmax": (lambda x: jax.nn.softmax(x), True),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_pattern_covers_jacobian(name):
    f, exact = PROGRAMS[name]
    x = rand(5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every row here has a sparsity action
        # an entry another xdist worker is still writing: JAX compiles the program again
        warnings.filterwarnings("ignore", message="Error reading persistent compilation cache")
        p = dk.jacobian_sparsity(f, x).toarray()
    for seed in range(2):
        nz = nonzeros(jax.jacfwd(f)(rand(5, seed)).reshape(p.shape))
        assert not (nz & ~p).any(), f"missed nonzeros at {np.argwhere(nz & ~p).tolist()}"
        if exact and seed == 0:
            assert (nz == p).all(), f"spurious entries at {np.argwhere(p & ~nz).tolist()}"


def test_unsupported_primitive_is_dense_with_a_note():
    def f(x):  # reduce_window_sum has no sparsity action: conservative
        return lax.reduce_window(x, 0.0, lax.add, (2,), (1,), "VALID")

    with pytest.warns(UserWarning, match="reduce_window_sum.*spurious nonzeros, never miss"):
        p = dk.jacobian_sparsity(f, jnp.ones(4))
    assert p.toarray().all()


def test_pytrees_and_argnums():
    def f(a, b):
        return {"u": a["w"] * b, "v": jnp.sum(a["z"])}

    a = {"w": jnp.ones(3), "z": jnp.ones(2)}
    p = dk.jacobian_sparsity(f, a, jnp.ones(3)).toarray()
    # outputs: u (3), v (1); inputs: w (3) then z (2)
    assert p.astype(int).tolist() == [
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 1, 1],
    ]
    q = dk.jacobian_sparsity(f, a, jnp.ones(3), argnums=1).toarray()
    assert q.astype(int).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]


def finite_nonzeros(jac) -> np.ndarray:
    """Finite nonzeros: a NaN partial times a zero tangent fills a whole row of JAX's dense
    Jacobian with NaN where the structure has none."""
    a = np.asarray(jac)
    return (a != 0) & np.isfinite(a)


FUZZ = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=3, **FUZZ)
@given(recipe=recipes(), pts=st.lists(points("float32", special=False), min_size=2, max_size=2))
def test_fuzz_pattern_covers_jacobian(recipe, pts):
    """Random programs from test_fuzz's generator: the pattern holds every nonzero of JAX's
    dense Jacobian (and the Hessian pattern every nonzero of jax.hessian)."""
    _fuzz_check(recipe, pts)


@pytest.mark.slow  # 40 programs: ~60 s on 2 cores
@settings(max_examples=40, **FUZZ)
@given(recipe=recipes(), pts=st.lists(points("float32", special=False), min_size=2, max_size=2))
def test_fuzz_pattern_covers_jacobian_long(recipe, pts):
    _fuzz_check(recipe, pts)


def _fuzz_check(recipe, pts):

    def f(x):
        return jnp.atleast_1d(_eval(recipe, x)).astype(x.dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = dk.jacobian_sparsity(f, jnp.ones(3)).toarray()
        h = dk.hessian_sparsity(build(recipe), jnp.ones(3)).toarray()
    for pt in pts:
        x = jnp.asarray(pt, jnp.float32)
        nz = finite_nonzeros(jax.jacfwd(f)(x)).reshape(p.shape)
        assert not (nz & ~p).any(), f"{recipe}: missed {np.argwhere(nz & ~p).tolist()}"
        hz = finite_nonzeros(jax.hessian(build(recipe))(x))
        assert not (hz & ~h).any(), f"{recipe}: Hessian missed {np.argwhere(hz & ~h).tolist()}"


# ------------------------------------------------------------------ colouring


def _random_pattern(seed: int, m: int, n: int, density: float) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    return sp.csr_array(sp.random_array((m, n), density=density, rng=rng) != 0)


@pytest.mark.parametrize("order", [*ORDERS, "best"])
def test_colourings_valid(order):
    for seed in range(4):
        p = _random_pattern(seed, 40, 30, 0.08)
        for colouring, q in (
            (dk.sparse.colour_columns(p, order), p),
            (dk.sparse.colour_rows(p, order), sp.csr_array(p.T)),
        ):
            assert check_colouring(p, colouring)
            # independently: no row holds two columns of one colour
            c = colouring.colours
            for r in range(q.shape[0]):
                cols = q.indices[q.indptr[r] : q.indptr[r + 1]]
                assert len(set(c[cols].tolist())) == len(cols)
        h = sp.csr_array(p[:, :30][:30] + p[:, :30][:30].T + sp.eye_array(30, dtype=bool))
        star = dk.sparse.colour_star(h, order)
        assert check_colouring(h, star)
        assert star.n_colours <= dk.sparse.colour_columns(h, order).n_colours


def test_star_decompression_recovers_a_symmetric_matrix():
    """A random symmetric matrix on the pattern comes back from H S alone."""
    rng = np.random.default_rng(3)
    for seed in range(3):
        p = _random_pattern(seed, 25, 25, 0.1)
        p = sp.csr_array(p + p.T + sp.eye_array(25, dtype=bool))
        vals = np.triu(rng.standard_normal((25, 25)) * p.toarray())
        h = vals + np.triu(vals, 1).T
        plan = make_plan(p, "star", "best", 0.0)
        compressed = (h @ plan.colouring.seeds().T).T  # (colours, n)
        got = np.asarray(plan.assemble(jnp.asarray(compressed)).todense())
        np.testing.assert_allclose(got, h, rtol=1e-6, atol=1e-6)


def test_colouring_errors():
    with pytest.raises(dk.DiffkitError, match="order must be one of"):
        dk.sparse.colour_columns(np.eye(3, dtype=bool), "random")
    with pytest.raises(dk.DiffkitError, match="square and symmetric"):
        dk.sparse.colour_star(np.triu(np.ones((3, 3), bool)))


# ------------------------------------------------------------------ compressed derivatives


def _residual(x):
    return jnp.sin(x[1:]) * x[:-1] ** 2 + jnp.roll(x, 2)[1:] + jnp.exp(x[0]) * x[1:]


def _loss(x):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2) + jnp.sum(
        jnp.sin(x[::2]) * x[1::2]
    )


@pytest.mark.parametrize("method", METHODS)
def test_compressed_jacobian_equals_dense(method, x64):
    d = dk.get(method)
    x = jnp.linspace(0.1, 1.3, 10)
    dense = np.asarray(d.jacobian(_residual)(x))
    jac = d.jacobian(_residual, sparsity="auto")
    J = jac(x)
    assert isinstance(J, jax.experimental.sparse.BCOO) and J.shape == (9, 10)
    assert rho(J.todense(), dense) <= 1e-12
    assert J.nse == dk.jacobian_sparsity(_residual, x).nnz
    if method != "fd":  # prepared once, run under jit (fd's jitted stencils round differently)
        assert rho(jax.jit(jac)(x).todense(), dense) <= 1e-12
    assert rho(J.todense(), jax.jacfwd(_residual)(x)) <= (1e-6 if method == "fd" else 1e-12)


SLOW_HESSIAN = ("jax-fwd", "dual", "fd")  # dense Hessians by n forward-mode gradients: seconds


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_HESSIAN else m for m in METHODS]
)
def test_compressed_hessian_equals_dense(method, x64):
    d = dk.get(method)
    x = jnp.linspace(0.1, 1.3, 8)
    H = d.hessian(_loss, sparsity="auto")(x)
    truth = jax.hessian(_loss)(x)
    dense = np.asarray(d.hessian(_loss)(x))
    if method == "fd":  # fd over fd: noise at its own error level, not rounding
        assert rho(H.todense(), truth) <= 10 * rho(dense, truth) + 1e-6
    else:
        assert rho(H.todense(), dense) <= 1e-12
        assert rho(H.todense(), truth) <= 1e-12


def test_strategy_and_given_pattern(x64):
    x = jnp.linspace(0.1, 1.3, 10)
    p = dk.jacobian_sparsity(_residual, x)
    dense = jax.jacfwd(_residual)(x)
    for strategy in ("fwd", "rev"):
        J = dk.get("jax-rev").jacobian(_residual, sparsity=p, strategy=strategy)(x)
        assert rho(J.todense(), dense) <= 1e-12
    J = dk.get("jax-fwd").jacobian(_residual, sparsity=p.toarray())(x)
    assert rho(J.todense(), dense) <= 1e-12


def test_compressed_errors():
    d = dk.get("jax-fwd")
    with pytest.raises(dk.DiffkitError, match="sparsity must be 'auto' or a boolean pattern"):
        d.jacobian(jnp.sin, sparsity="yes")(jnp.ones(3))
    with pytest.raises(dk.DiffkitError, match=r"pattern has shape \(2, 2\), but this Jacobian"):
        d.jacobian(jnp.sin, sparsity=np.eye(2, dtype=bool))(jnp.ones(3))
    with pytest.raises(dk.DiffkitError, match="stochastic estimate is not compressed"):
        dk.get("forward-grad").jacobian(jnp.sin, sparsity="auto")(jnp.ones(3))
    with pytest.raises(dk.DiffkitError, match="must return a scalar"):
        dk.hessian_sparsity(jnp.sin, jnp.ones(3))


def test_brusselator_compressed_matches_jacfwd():
    inst = dk.harness.get_problem("brusselator-2d").build(4)
    (x,) = inst.args
    plan = dk.sparse.prepare_jacobian(inst.fun, x)
    assert plan.n_colours <= 12
    J = jax.jit(dk.get("jax-fwd").jacobian(inst.fun, sparsity="auto"))(x)
    ref = np.asarray(jax.jacfwd(inst.fun)(x))
    np.testing.assert_allclose(np.asarray(J.todense()), ref, rtol=1e-6, atol=1e-3)


@pytest.mark.slow  # asdex's first colouring compiles with numba (~3 s)
def test_colours_no_more_than_asdex():
    import asdex  # the test extra installs it (sparse-bench): run in CI, not skipped

    for name, size in (("brusselator-2d", 8), ("pde-1d", 50), ("pde-2d", 8), ("ba", 10)):
        inst = dk.harness.get_problem(name).build(size)

        def f(x, inst=inst):  # ba's index arrays known to both
            return inst.fun(x, *inst.args[1:])

        ours = dk.jacobian_sparsity(f, inst.args[0])
        theirs = asdex.jacobian_sparsity(f, inst.args[0])
        assert (np.asarray(theirs.todense()).astype(bool) == ours.toarray()).all()
        for mode, colour in (("fwd", dk.sparse.colour_columns), ("rev", dk.sparse.colour_rows)):
            colours = asdex.jacobian_coloring_from_sparsity(theirs, mode=mode).num_colors
            assert colour(ours).n_colours <= colours


@pytest.mark.slow  # ht's model is ~1 000 equations: ~8 s on 2 shared cores
@pytest.mark.parametrize("name", ["ba", "ht"])
def test_gradbench_patterns_exact(name):
    """GradBench's ba and ht, their index arrays closed over (known): the detected pattern is
    exactly the union of the dense Jacobian's nonzeros at three points, and ba needs fewer
    colours than its hand-written colouring (15)."""
    inst = dk.harness.get_problem(name).build(10)

    def f(x):
        return inst.fun(x, *inst.args[1:])

    x = inst.args[0]
    p = dk.jacobian_sparsity(f, x)
    seen = np.zeros(p.shape, bool)
    for s in range(3):
        xs = jax.tree_util.tree_map(lambda a, s=s: a * (1 + 0.1 * s), x)
        seen |= nonzeros(jax.jacfwd(f)(xs)).reshape(p.shape)
    assert (seen == p.toarray()).all()
    if name == "ba":
        assert dk.sparse.colour_columns(p).n_colours <= 15


def test_harness_measures_compressed_jacobians():
    """``name+sparse`` cases: one pass per colour, the pattern the stencil gives, and the
    compressed Jacobian judged against the float64 reference like any other."""
    exact = fam.pde_1d_pattern(12)
    for method, mode in (("jax-fwd+sparse", "fwd"), ("tape+sparse", "rev"), ("fd+sparse", "fwd")):
        r = dk.harness.run_case("pde-1d", 12, method, "float64", min_time=0.005)
        assert r["outcome"] == "ok" and r["accurate"], r["message"]
        assert (r["passes"], r["colours"], r["sparse_mode"], r["nnz"]) == (3, 3, mode, exact.nnz)
        assert r["detect_s"] > 0 and r["colour_s"] > 0
        cells = r["pattern_cells"]
        assert cells["shape"] == [12, 12] and sum(c[2] for c in cells["cells"]) == exact.nnz
    assert r["evaluations"] == 3 * 2  # fd: one central stencil per colour, not per column
    h = dk.harness.run_case("rosenbrock-ext-hessian", 12, "tape+sparse", "float64", min_time=0.005)
    assert h["outcome"] == "ok" and h["accurate"] and h["colours"] == 2
    assert h["nnz"] == fam.rosenbrock_ext_pattern(12).nnz  # the Hessian's 2 x 2 blocks
    dense = dk.harness.run_case("pde-1d", 12, "fd", "float64", min_time=0.005)
    assert dense["evaluations"] == 12 * 2 and dense["passes"] == 12


@pytest.mark.slow  # ba detected and measured in the harness: ~3 s
def test_harness_sparse_ba_pattern_is_exact():
    """ba's index arrays are arguments; the harness closes over them (known), so the
    detected pattern is exactly the dense Jacobian's nonzeros (not the conservative one)."""
    r = dk.harness.run_case("ba", 10, "jax-fwd+sparse", "float64", min_time=0.005)
    inst = dk.harness.get_problem("ba").build(10, "float64")
    with jax.enable_x64(True):
        jac = jax.jacfwd(inst.fun)(*inst.args)
    assert r["outcome"] == "ok" and r["nnz"] == int(nonzeros(jac).sum())
    assert r["colours"] <= 15  # the hand-written colouring's count


def test_harness_sparse_refusals():
    """A scalar loss and a stochastic estimator get one line each."""
    r = dk.harness.run_case("rosenbrock", 4, "jax-fwd+sparse", min_time=0.005)
    assert r["outcome"] == "error" and "is a scalar loss" in r["message"]
    with pytest.raises(dk.DiffkitError, match="stochastic estimate is not compressed"):
        resolve_method("spsa+sparse")
    assert dk.harness.with_sparse(["jax-rev", "spsa", "jax-rev+sparse"]) == [
        "jax-rev",
        "jax-rev+sparse",
        "spsa",
    ]


def test_bad_arguments_get_one_line():
    """A string argument, or a non-function, is named in one line (was NumPy's 'data type
    'abc' not understood')."""
    for call, needle in (
        (lambda: dk.jacobian_sparsity(lambda x: x, "abc"), "argument 0 has a leaf of type str"),
        (lambda: dk.hessian_sparsity(3.0, jnp.ones(2)), "expected a function"),
    ):
        with pytest.raises(dk.InputTypeError) as info:
            call()
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
