"""Loss functions written with the scientific JAX stack, as a new user would write them.

diffrax (ODEs with explicit and implicit solvers and three adjoints, an SDE, dense output),
lineax (LU, QR, Cholesky, CG, tridiagonal solves), optimistix (a root find, least squares, a
minimisation, a fixed point: implicit differentiation), equinox (filter_jit,
filter_custom_vjp, checkpointed while loops, a small MLP), jax-md (periodic space, neighbour
lists, per-species parameters) and tensorflow-probability's JAX substrate (distributions and
bijectors). Each case is a deterministic scalar loss of one array or pytree, float64, small
(n = 3..~200), fast to trace and compile.

A case is built lazily (``case.build() -> (fun, x)``), under 64-bit floats, so that importing
this module imports none of the libraries (they come with the ``scientific`` extra), and each
library is imported only by the cases that use it. Used by tests/test_scientific.py,
benchmarks/scientific_census.py and benchmarks/bench_scientific.py.

``approx`` is how far JAX's own gradient may be from the true derivative of the computed
function, relative to ``max(1, |g|)``: zero where JAX differentiates the computation
exactly; the solver's tolerance where the gradient comes from a custom rule that solves
something approximately (a backsolve adjoint integrates the adjoint ODE numerically; an
implicit-function gradient is exact only at the exact root; CG stops at its tolerance).
Finite differences are checked against JAX's gradient within their own error estimate plus
``approx``; dual, tape and JAX's two modes are compared with each other, where it does not
enter.

``entry`` is the library function the user called (e.g. ``diffeqsolve``): a refusal's site
should name it, not the library's internal wrappers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Case(NamedTuple):
    """One loss: ``build() -> (fun, x)``, called with 64-bit floats enabled."""

    name: str
    library: str
    build: Callable[[], tuple[Callable, Any]]
    approx: float = 0.0  # JAX's gradient's own error (see the module docstring)
    entry: str = ""  # the library function the user called
    #: how far fd may land from JAX's gradient beyond its own estimate (relative), because the
    #: function is computed to a solver's tolerance: an adaptive step sequence or an
    #: iteration count that changes with x makes its value jump by about that tolerance, which
    #: a difference quotient divides by the step (fd's estimate, from h and 2h, cannot see it)
    fd_noise: float = 0.0


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _f64(a: Any) -> Any:
    return jnp.asarray(a, jnp.float64)


# =================================================================================== diffrax
def _decay(t, y, args):
    """A nonlinear, mildly stiff linear-plus-coupling vector field."""
    k, c = args
    return -k * y + c * jnp.tanh(jnp.roll(y, 1)) + 0.1 * jnp.sin(t)


def _ode(solver: str, adjoint: str = "recursive", adaptive: bool = False, n: int = 4):
    def build():
        import diffrax
        import optimistix as optx

        r = _rng(10)
        y0 = _f64(r.normal(size=n))
        k = _f64(0.5 + r.uniform(size=n))
        c = _f64(0.3)
        solvers = {
            "tsit5": diffrax.Tsit5(),
            "dopri5": diffrax.Dopri5(),
            # the implicit stages' root finder needs tolerances at a fixed step size
            "kvaerno5": diffrax.Kvaerno5(root_finder=optx.Newton(rtol=1e-10, atol=1e-10)),
            "heun": diffrax.Heun(),
        }
        adjoints = {
            "recursive": diffrax.RecursiveCheckpointAdjoint(),
            "backsolve": diffrax.BacksolveAdjoint(),
            "direct": diffrax.DirectAdjoint(),
        }
        if adaptive:
            controller, dt0 = diffrax.PIDController(rtol=1e-6, atol=1e-6), 0.1
        else:
            controller, dt0 = diffrax.ConstantStepSize(), 0.1
        ts = jnp.linspace(0.25, 1.0, 4)

        def loss(p):
            y0, k, c = p
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(_decay),
                solvers[solver],
                t0=0.0,
                t1=1.0,
                dt0=dt0,
                y0=y0,
                args=(k, c),
                saveat=diffrax.SaveAt(ts=ts),
                stepsize_controller=controller,
                adjoint=adjoints[adjoint],
                max_steps=128,
            )
            return jnp.sum(sol.ys**2) + jnp.sum(sol.ys[-1] * k)

        return loss, (y0, k, c)

    return build


def _sde():
    import diffrax

    r = _rng(11)
    n = 3
    y0 = _f64(r.normal(size=n))
    theta = _f64([0.8, 0.2])  # drift rate, diffusion scale
    bm = diffrax.VirtualBrownianTree(t0=0.0, t1=1.0, tol=1e-3, shape=(n,), key=jax.random.key(3))

    def loss(p):
        y0, theta = p
        drift = diffrax.ODETerm(lambda t, y, a: -a[0] * y)
        diffusion = diffrax.ControlTerm(
            lambda t, y, a: a[1] * jnp.diag(jnp.cos(y)), bm
        )  # multiplicative noise (lineax's diagonal operator after the matrix)
        sol = diffrax.diffeqsolve(
            diffrax.MultiTerm(drift, diffusion),
            diffrax.Heun(),
            t0=0.0,
            t1=1.0,
            dt0=0.05,
            y0=y0,
            args=theta,
            saveat=diffrax.SaveAt(t1=True),
        )
        return jnp.sum(sol.ys[-1] ** 2)

    return loss, (y0, theta)


def _dense():
    import diffrax

    r = _rng(12)
    y0 = _f64(r.normal(size=3))
    k = _f64([0.5, 1.0, 1.5])
    ts = jnp.asarray([0.13, 0.41, 0.77, 0.95])

    def loss(p):
        y0, k = p
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, k: -k * y + 0.2 * jnp.sin(y[::-1])),
            diffrax.Tsit5(),
            t0=0.0,
            t1=1.0,
            dt0=0.1,
            y0=y0,
            args=k,
            saveat=diffrax.SaveAt(dense=True),
        )
        return jnp.sum(jax.vmap(sol.evaluate)(ts) ** 2)

    return loss, (y0, k)


# ==================================================================================== lineax
def _mat(seed: int, n: int, shift: float = 3.0) -> Any:
    return _f64(_rng(seed).normal(size=(n, n)) + shift * np.eye(n))


def _lx_solve(solver: str, n: int = 5):
    def build():
        import lineax as lx

        r = _rng(20 + n)
        a = _mat(21, n)
        b = _f64(r.normal(size=n))

        def loss(p):
            a, b = p
            if solver in ("cholesky", "cg"):
                op = lx.MatrixLinearOperator(a @ a.T + jnp.eye(n), lx.positive_semidefinite_tag)
            else:
                op = lx.MatrixLinearOperator(a)
            s = {
                "lu": lx.LU(),
                "qr": lx.QR(),
                "svd": lx.SVD(),
                "cholesky": lx.Cholesky(),
                "cg": lx.CG(rtol=1e-13, atol=1e-13, max_steps=200),
                "gmres": lx.GMRES(rtol=1e-13, atol=1e-13, max_steps=200),
            }[solver]
            x = lx.linear_solve(op, b, s).value
            return jnp.sum(x**2) + jnp.sum(jnp.sin(x))

        return loss, (a, b)

    return build


def _lx_lstsq():
    import lineax as lx

    r = _rng(22)
    a = _f64(r.normal(size=(7, 3)))
    b = _f64(r.normal(size=7))

    def loss(p):
        a, b = p
        x = lx.linear_solve(lx.MatrixLinearOperator(a), b, lx.QR()).value  # least squares
        return jnp.sum(x**2)

    return loss, (a, b)


def _lx_tridiagonal():
    import lineax as lx

    r = _rng(23)
    n = 6
    diag = _f64(4.0 + r.uniform(size=n))
    lower = _f64(r.normal(size=n - 1))
    upper = _f64(r.normal(size=n - 1))
    b = _f64(r.normal(size=n))

    def loss(p):
        diag, lower, upper, b = p
        op = lx.TridiagonalLinearOperator(diag, lower, upper)
        return jnp.sum(lx.linear_solve(op, b, lx.Tridiagonal()).value ** 2)

    return loss, (diag, lower, upper, b)


def _lx_diagonal_auto():
    import lineax as lx

    r = _rng(24)
    d = _f64(1.0 + r.uniform(size=4))
    b = _f64(r.normal(size=4))

    def loss(p):
        d, b = p
        return jnp.sum(lx.linear_solve(lx.DiagonalLinearOperator(d), b).value ** 3)

    return loss, (d, b)


# ================================================================================ optimistix
def _root():
    import optimistix as optx

    theta = _f64([1.5, -0.5, 0.8])

    def loss(theta):
        fn = lambda y, th: y + 0.3 * jnp.tanh(y) ** 3 - th  # noqa: E731
        y = optx.root_find(fn, optx.Newton(rtol=1e-13, atol=1e-13), jnp.zeros(3), theta).value
        return jnp.sum(y**2) + y[0] * y[2]

    return loss, theta


def _root_chord():
    import optimistix as optx

    theta = _f64([0.4, 0.9])

    def loss(theta):
        fn = lambda y, th: jnp.array([y[0] ** 3 + y[1] - th[0], y[1] ** 3 - y[0] - th[1]])  # noqa: E731
        solver = optx.Chord(rtol=1e-13, atol=1e-13)
        y = optx.root_find(fn, solver, jnp.ones(2), theta, max_steps=128).value
        return jnp.sum(jnp.sin(y))

    return loss, theta


def _least_squares():
    import optimistix as optx

    r = _rng(30)
    t = _f64(np.linspace(0, 2, 8))
    data = _f64(1.3 * np.exp(-0.7 * np.linspace(0, 2, 8)) + 0.01 * r.normal(size=8))

    def loss(data):
        res = lambda p, d: p[0] * jnp.exp(-p[1] * t) - d  # noqa: E731
        solver = optx.LevenbergMarquardt(rtol=1e-13, atol=1e-13)
        p = optx.least_squares(res, solver, jnp.asarray([1.0, 1.0]), data).value
        return p[0] + p[1] ** 2

    return loss, data


def _gauss_newton():
    import optimistix as optx

    r = _rng(31)
    obs = _f64(r.normal(size=5) * 0.1 + 2.0)

    def loss(obs):
        res = lambda y, o: jnp.concatenate([jnp.exp(y) - o[:3], y[:2] - jnp.log(o[3:])])  # noqa: E731
        y = optx.least_squares(
            res, optx.GaussNewton(rtol=1e-13, atol=1e-13), jnp.zeros(3), obs
        ).value
        return jnp.sum(y**2)

    return loss, obs


def _minimise():
    import optimistix as optx

    theta = _f64([1.0, 2.0, 0.5])

    def loss(theta):
        fn = lambda y, th: jnp.sum((y - th) ** 2) + 0.1 * jnp.sum(y**4)  # noqa: E731
        y = optx.minimise(fn, optx.BFGS(rtol=1e-13, atol=1e-13), jnp.zeros(3), theta).value
        return jnp.sum(y**3)

    return loss, theta


def _fixed_point():
    import optimistix as optx

    theta = _f64([0.3, -0.2, 0.6, 0.1])

    def loss(theta):
        fn = lambda y, th: 0.5 * jnp.cos(y) + th  # noqa: E731  (a contraction)
        solver = optx.FixedPointIteration(rtol=1e-13, atol=1e-13)
        y = optx.fixed_point(fn, solver, jnp.zeros(4), theta, max_steps=512).value
        return jnp.sum(y**2)

    return loss, theta


# ================================================================================== equinox
def _filter_jit():
    import equinox as eqx

    @eqx.filter_jit
    def model(x, scale, name):  # a Python int and a string: static under filter_jit
        return jnp.tanh(x * scale) if name == "tanh" else x

    x = _f64(_rng(40).normal(size=6))
    return lambda x: jnp.sum(model(x, 3, "tanh") ** 2), x


def _filter_custom_vjp():
    import equinox as eqx

    @eqx.filter_custom_vjp
    def clipped_sq(vjp_arg, scale):
        return scale * jnp.sum(vjp_arg**2)

    def fwd(perturbed, vjp_arg, scale):
        return scale * jnp.sum(vjp_arg**2), vjp_arg

    def bwd(residuals, grad_obj, perturbed, vjp_arg, scale):
        return 2.0 * scale * residuals * grad_obj

    clipped_sq.def_fwd(fwd)
    clipped_sq.def_bwd(bwd)
    x = _f64(_rng(41).normal(size=5))
    return lambda x: clipped_sq(jnp.sin(x), 2.0) + jnp.sum(x), x


def _mlp():
    import equinox as eqx

    model = eqx.nn.MLP(
        3, 2, width_size=8, depth=2, activation=jax.nn.softplus, key=jax.random.key(4)
    )
    model = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64) if eqx.is_inexact_array(a) else a, model
    )
    params, static = eqx.partition(model, eqx.is_array)
    xs = _f64(_rng(42).normal(size=(4, 3)))
    ys = _f64(_rng(43).normal(size=(4, 2)))

    def loss(params):
        m = eqx.combine(params, static)
        return jnp.mean((jax.vmap(m)(xs) - ys) ** 2)

    return loss, params


def _checkpointed_while():
    import equinox.internal as eqxi

    x = _f64(_rng(44).normal(size=4))

    def loss(x):
        def body(carry):
            i, y = carry
            return i + 1, jnp.sin(y) + 0.5 * y

        _, y = eqxi.while_loop(lambda c: c[0] < 6, body, (0, x), max_steps=8, kind="checkpointed")
        return jnp.sum(y**2)

    return loss, x


def _bounded_while():
    import equinox.internal as eqxi

    x = _f64(_rng(45).normal(size=4))

    def loss(x):
        _, y = eqxi.while_loop(
            lambda c: c[0] < 5,
            lambda c: (c[0] + 1, jnp.cos(c[1]) * c[1]),
            (0, x),
            max_steps=8,
            kind="bounded",
        )
        return jnp.sum(y)

    return loss, x


def _layernorm_conv():
    import equinox as eqx

    conv = eqx.nn.Conv1d(2, 3, kernel_size=3, padding=1, key=jax.random.key(5))
    norm = eqx.nn.LayerNorm((3, 6))
    model = (conv, norm)
    model = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64) if eqx.is_inexact_array(a) else a, model
    )
    params, static = eqx.partition(model, eqx.is_array)
    x = _f64(_rng(46).normal(size=(2, 6)))

    def loss(params):
        conv, norm = eqx.combine(params, static)
        return jnp.sum(jnp.tanh(norm(conv(x))) ** 2)

    return loss, params


# =================================================================================== jax-md
def _positions(seed: int, n: int, box: float) -> Any:
    """``n`` points on a jittered grid in a 2-D box (no two too close)."""
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    return _f64((grid + 0.5 + 0.1 * _rng(seed).normal(size=(n, 2))) * box / side)


def _md_periodic():
    from jax_md import energy, space

    box = 4.0
    displacement, _ = space.periodic(box)
    energy_fn = energy.soft_sphere_pair(displacement, sigma=1.2)
    r = _positions(50, 9, box)
    return lambda r: energy_fn(r) + 0.0 * jnp.sum(r), r


def _md_morse_periodic_general():
    from jax_md import energy, space

    box = _f64([[4.5, 0.3], [0.0, 4.0]])
    displacement, _ = space.periodic_general(box, fractional_coordinates=False)
    # Morse without a cutoff, not Lennard-Jones: LJ's r**-12 at a particle's own (masked) zero
    # distance, and the multiplicative cutoff, make JAX's own gradient NaN in this jax-md
    energy_fn = energy.morse_pair(displacement, sigma=1.0, epsilon=0.5, alpha=3.0)
    r = _positions(51, 8, 4.0)
    return energy_fn, r


def _md_neighbor_list():
    from jax_md import energy, partition, space

    box = 5.0
    displacement, _ = space.periodic(box)
    r0 = _positions(52, 16, box)
    neighbor_fn, energy_fn = energy.soft_sphere_neighbor_list(  # finite at r = 0 (LJ: NaN)
        displacement,
        box,
        sigma=1.3,
        epsilon=0.4,
        format=partition.NeighborListFormat.Dense,
    )
    nbrs = neighbor_fn.allocate(r0)
    return lambda r: energy_fn(r, nbrs), r0


def _md_species():
    from jax_md import energy, space

    box = 4.0
    displacement, _ = space.periodic(box)
    species = jnp.asarray([0, 1, 0, 1, 1, 0, 0, 1, 0])
    r = _positions(53, 9, box)
    sigma = _f64([[1.0, 1.2], [1.2, 1.4]])
    epsilon = _f64([[1.0, 0.7], [0.7, 1.3]])

    def loss(p):
        r, sigma, epsilon = p
        fn = energy.soft_sphere_pair(displacement, species=species, sigma=sigma, epsilon=epsilon)
        return fn(r)

    return loss, (r, sigma, epsilon)


def _md_morse_free():
    from jax_md import energy, space

    displacement, _ = space.free()
    r = _positions(54, 6, 3.0)

    def loss(p):
        r, alpha = p
        return energy.morse_pair(displacement, sigma=1.0, epsilon=1.0, alpha=alpha)(r)

    return loss, (r, _f64(4.0))


# ====================================================================== tensorflow-probability
@functools.cache
def _tfp() -> Any:
    from tensorflow_probability.substrates import jax as tfp

    return tfp


def _tfp_scalars():
    tfd = _tfp().distributions
    p = _f64([0.3, 1.5, -0.4, 2.0, 1.5, 0.7, 2.5, 1.5, 0.3, 4.0, 0.2, 1.3, 0.9])

    def logp(p):
        return (
            tfd.Normal(p[0], p[1]).log_prob(p[2])
            + tfd.Gamma(p[3], p[4]).log_prob(p[5])
            + tfd.Beta(p[6], p[7]).log_prob(p[8])
            + tfd.StudentT(p[9], p[10], p[11]).log_prob(p[12])
        )

    return logp, p


def _tfp_mvn():
    tfd = _tfp().distributions
    r = _rng(60)
    loc = _f64(r.normal(size=3))
    l = _f64(np.tril(r.normal(size=(3, 3)) * 0.3) + np.eye(3))
    x = _f64(r.normal(size=(4, 3)))

    def loss(p):
        loc, l = p
        return jnp.sum(tfd.MultivariateNormalTriL(loc, jnp.tril(l)).log_prob(x))

    return loss, (loc, l)


def _tfp_dirichlet_vonmises():
    tfd = _tfp().distributions
    conc = _f64([1.5, 2.0, 3.0])
    simplex = _f64([0.2, 0.5, 0.3])

    def loss(conc):
        return tfd.Dirichlet(conc).log_prob(simplex) + tfd.VonMises(conc[0], conc[1]).log_prob(0.4)

    return loss, conc


def _tfp_bijectors():
    tfb = _tfp().bijectors
    x = _f64(_rng(61).normal(size=6))
    chain = tfb.Chain([tfb.Shift(_f64(0.5)), tfb.Scale(_f64(2.0)), tfb.Softplus(), tfb.Tanh()])

    def loss(x):
        y = chain.forward(x)
        return jnp.sum(y**2) + jnp.sum(chain.forward_log_det_jacobian(x, event_ndims=0))

    return loss, x


def _tfp_fill_scale_tril():
    tfb = _tfp().bijectors
    x = _f64(_rng(62).normal(size=6))  # 3x3 lower triangle
    bij = tfb.FillScaleTriL(diag_shift=_f64(1e-5))

    def loss(x):
        l = bij.forward(x)
        return jnp.sum(l @ l.T) + bij.forward_log_det_jacobian(x, event_ndims=1)

    return loss, x


def _tfp_transformed():
    tfp = _tfp()
    tfd, tfb = tfp.distributions, tfp.bijectors
    xs = _f64([0.5, 1.2, 2.5, 0.9])

    def loss(p):
        dist = tfd.TransformedDistribution(tfd.Normal(p[0], jnp.exp(p[1])), tfb.Exp())
        # a log-normal. vmapped: called on the same array ``xs`` twice, under two traces, the
        # bijector's cache hands the second trace the first one's tracer (UnexpectedTracerError
        # in JAX's own jvp and vjp alike): a TFP cache keyed on the input, not diffkit's
        return jnp.sum(jax.vmap(dist.log_prob)(xs))

    return loss, _f64([0.1, -0.3])


def _tfp_gamma_sample():
    """Gamma's reparameterised sample: its gradient is an implicit (custom) rule."""
    tfd = _tfp().distributions

    def loss(conc):
        return jnp.sum(tfd.Gamma(conc, 1.0).sample(seed=jax.random.key(7)))

    return loss, _f64([0.8, 2.0, 5.0])


# ===================================================================================== cases
CASES: list[Case] = [
    Case("diffrax tsit5", "diffrax", _ode("tsit5"), entry="diffeqsolve"),
    Case(
        "diffrax dopri5 adaptive",
        "diffrax",
        _ode("dopri5", adaptive=True),
        entry="diffeqsolve",
        fd_noise=1e-4,  # PIDController(rtol=1e-6): seen 7.0e-6
    ),
    Case("diffrax kvaerno5 implicit", "diffrax", _ode("kvaerno5"), entry="diffeqsolve"),
    Case(
        "diffrax kvaerno5 adaptive",
        "diffrax",
        _ode("kvaerno5", adaptive=True),
        approx=1e-6,
        entry="diffeqsolve",
        fd_noise=1e-3,  # PIDController(rtol=1e-6): seen 8.5e-5
    ),
    Case(
        "diffrax tsit5 backsolve",
        "diffrax",
        _ode("tsit5", "backsolve"),
        approx=1e-4,
        entry="diffeqsolve",
    ),
    Case("diffrax tsit5 direct", "diffrax", _ode("tsit5", "direct"), entry="diffeqsolve"),
    Case(
        "diffrax dopri5 direct adaptive",
        "diffrax",
        _ode("dopri5", "direct", adaptive=True),
        entry="diffeqsolve",
        fd_noise=1e-4,  # PIDController(rtol=1e-6): seen 7.0e-6
    ),
    Case("diffrax sde heun vbt", "diffrax", _sde, entry="diffeqsolve"),
    Case("diffrax dense evaluate", "diffrax", _dense, entry="diffeqsolve"),
    Case("lineax lu", "lineax", _lx_solve("lu"), entry="linear_solve"),
    Case("lineax qr", "lineax", _lx_solve("qr"), entry="linear_solve"),
    Case("lineax svd", "lineax", _lx_solve("svd"), entry="linear_solve"),
    Case("lineax cholesky", "lineax", _lx_solve("cholesky"), entry="linear_solve"),
    Case("lineax cg", "lineax", _lx_solve("cg"), approx=1e-9, entry="linear_solve"),
    Case("lineax gmres", "lineax", _lx_solve("gmres"), approx=1e-9, entry="linear_solve"),
    Case("lineax qr least squares", "lineax", _lx_lstsq, entry="linear_solve"),
    Case("lineax tridiagonal", "lineax", _lx_tridiagonal, entry="linear_solve"),
    Case("lineax diagonal auto", "lineax", _lx_diagonal_auto, entry="linear_solve"),
    Case("optimistix newton root", "optimistix", _root, approx=1e-9, entry="root_find"),
    Case("optimistix chord root", "optimistix", _root_chord, approx=1e-9, entry="root_find"),
    Case(
        "optimistix levenberg-marquardt",
        "optimistix",
        _least_squares,
        approx=1e-8,
        entry="least_squares",
    ),
    Case(
        "optimistix gauss-newton",
        "optimistix",
        _gauss_newton,
        approx=1e-8,
        entry="least_squares",
    ),
    Case(
        "optimistix bfgs minimise",
        "optimistix",
        _minimise,
        approx=1e-8,
        entry="minimise",
        fd_noise=1e-4,  # BFGS's iteration count changes with theta: seen 1.2e-5
    ),
    Case("optimistix fixed point", "optimistix", _fixed_point, approx=1e-9, entry="fixed_point"),
    Case("equinox filter_jit", "equinox", _filter_jit),
    Case("equinox filter_custom_vjp", "equinox", _filter_custom_vjp),
    Case("equinox mlp", "equinox", _mlp),
    Case("equinox conv layernorm", "equinox", _layernorm_conv),
    Case("equinox checkpointed while", "equinox", _checkpointed_while, entry="while_loop"),
    Case("equinox bounded while", "equinox", _bounded_while, entry="while_loop"),
    Case("jax-md soft sphere periodic", "jax-md", _md_periodic),
    Case("jax-md morse periodic_general", "jax-md", _md_morse_periodic_general),
    Case("jax-md soft sphere neighbor list", "jax-md", _md_neighbor_list),
    Case("jax-md species soft sphere", "jax-md", _md_species),
    Case("jax-md morse free", "jax-md", _md_morse_free),
    Case("tfp scalar log_probs", "tfp", _tfp_scalars),
    Case("tfp mvn tril", "tfp", _tfp_mvn),
    Case("tfp dirichlet vonmises", "tfp", _tfp_dirichlet_vonmises),
    Case("tfp bijector chain", "tfp", _tfp_bijectors),
    Case("tfp fill_scale_tril", "tfp", _tfp_fill_scale_tril),
    Case("tfp transformed lognormal", "tfp", _tfp_transformed),
    # implicit reparameterisation: JAX's gradient is the derivative of the sample through the
    # CDF, not of the rejection sampler's arithmetic, which fd sees (22% apart here)
    Case("tfp gamma sample", "tfp", _tfp_gamma_sample, approx=0.5),
]

BY_NAME: dict[str, Case] = {c.name: c for c in CASES}
LIBRARIES: tuple[str, ...] = tuple(dict.fromkeys(c.library for c in CASES))


@functools.cache
def built(name: str) -> tuple[Callable, Any]:
    """``(fun, x)`` of the named case, built once (call with 64-bit floats enabled)."""
    return BY_NAME[name].build()


def case_id(name: str) -> str:
    """The case's name as a test id: ``diffrax tsit5`` -> ``diffrax_tsit5``."""
    return name.replace(" ", "_")


# ============================================================== running and judging a method
#: The methods each case is differentiated with, and the JAX mode each interpreter must match.
METHODS: tuple[str, ...] = ("jax-fwd", "jax-rev", "dual", "tape", "fd")
PAIRED: dict[str, str] = {"dual": "jax-fwd", "tape": "jax-rev"}
TOL = 1e-10  # rho against jax.grad, float64, for every exact method
FD_BOUND = 1e-4  # fd's own error estimate must be below this (relative), else it says little


class Outcome(NamedTuple):
    """What one method did on one case: ``grad`` (and fd's ``error``) or the ``exception``."""

    grad: Any = None
    error: Any = None
    exception: BaseException | None = None
    seconds: float = 0.0


def reference(name: str) -> Any:
    """``jax.grad`` of the case, jitted (call with 64-bit floats enabled)."""
    return _reference(name)


@functools.cache
def _reference(name: str) -> Any:
    f, x = built(name)
    return jax.jit(jax.grad(f))(x)


def run(name: str, method: str, symbolic_budget: float = 20.0) -> Outcome:
    """Differentiate the case with ``method`` (jitted, except symbolic, which compiles its
    own program; fd with its error estimate). Never raises: the exception is the outcome."""
    import time

    import diffkit as dk

    f, x = built(name)
    start = time.perf_counter()
    try:
        if method == "fd":
            r = jax.jit(lambda x: dk.get("fd").gradient(f)(x))(x)
            grad, error = jax.block_until_ready((r.grad, r.error))
            return Outcome(grad, error, seconds=time.perf_counter() - start)
        if method == "symbolic":
            grad = dk.get("symbolic", time_budget=symbolic_budget).grad(f)(x)
        else:
            grad = jax.jit(dk.get(method).grad(f))(x)
        return Outcome(jax.block_until_ready(grad), seconds=time.perf_counter() - start)
    except Exception as e:  # any exception is an outcome to judge
        return Outcome(exception=e, seconds=time.perf_counter() - start)


def refusal_problems(error: BaseException, case: Case) -> list[str]:
    """What is wrong with ``error`` as a refusal: empty when it is a diffkit error of one
    line that names the primitive (a quoted name, or the custom rule) and a source line
    (``(at file.py:N ...)``, or ``(at lib/file.py:function)`` where JAX kept no line of the
    user's), and, where the case says which, the library function the user
    called (``entry``)."""
    import re

    from diffkit import DiffkitError

    message = str(error)
    problems = []
    if not isinstance(error, DiffkitError):
        problems.append(f"raw {type(error).__name__}, not a diffkit error")
    if "\n" in message.strip():
        problems.append(f"{message.count(chr(10)) + 1} lines, not one")
    if not re.search(r"\(at [^()]*\.py:[\w<>.]+", message):  # a line, or a library function
        problems.append("no source line '(at file.py:N ...)'")
    if not re.search(r"'[\w\-]+'|custom_vjp|custom_jvp", message):
        problems.append("names no primitive")
    if case.entry and case.entry not in message:
        problems.append(f"the site does not name {case.entry}")
    return problems


def judge(name: str, method: str, outcome: Outcome) -> tuple[str, str]:
    """``(verdict, message)``: verdict ``exact`` (rho <= TOL against jax.grad; fd within its
    error estimate plus the case's ``approx``), ``wrong``, ``refused`` (a one-line diffkit
    error naming the primitive and a line; for jax-fwd and jax-rev any exception, which is
    JAX's own refusal) or ``crash`` (any other exception, or a refusal failing
    :func:`refusal_problems`)."""
    from diffkit.accuracy import rho_tree

    case = BY_NAME[name]
    if outcome.exception is not None:
        e = outcome.exception
        line = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if method in ("jax-fwd", "jax-rev"):
            return "refused", line
        problems = refusal_problems(e, case)
        if not problems or problems == [f"the site does not name {case.entry}"]:
            note = f" [{problems[0]}]" if problems else ""
            return "refused", line + note
        return "crash", line + f" [{'; '.join(problems)}]"
    want = reference(name)
    leaves = jax.tree_util.tree_leaves
    if jax.tree_util.tree_structure(outcome.grad) != jax.tree_util.tree_structure(want):
        return "wrong", "the gradient's tree differs from jax.grad's"
    if method == "fd":
        worst, bound = 0.0, 0.0
        for got, err, ref in zip(
            leaves(outcome.grad), leaves(outcome.error), leaves(want), strict=True
        ):
            got, err, ref = (np.asarray(a, np.float64) for a in (got, err, ref))
            scale = np.maximum(1.0, np.abs(ref))
            over = np.abs(got - ref) - err - (case.approx + case.fd_noise) * scale
            worst = max(worst, float(np.max(over / scale, initial=-np.inf)))
            bound = max(bound, float(np.max(err / scale, initial=0.0)))
        if worst > 0:
            return "wrong", f"fd off by {worst:.2e} (relative) beyond its error estimate"
        if bound > FD_BOUND:
            return "wrong", f"fd's error estimate {bound:.1e} (relative) > {FD_BOUND:g}"
        return "exact", f"within its estimate (largest {bound:.1e})"
    r = rho_tree(outcome.grad, want)
    if not np.isfinite(r) or r > TOL:
        return "wrong", f"rho {r:.2e} against jax.grad"
    return "exact", f"rho {r:.1e}"
