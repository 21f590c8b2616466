"""GradBench's twelve evals as problem families, each with a size axis.

GradBench (github.com/gradbench/gradbench, the successor of ADBench) defines twelve *evals*.
Four were already families of :mod:`diffkit.harness.families` (``gmm``, ``lse``, ``llsq``,
``ode``); this module adds the other eight, written in JAX from each eval's mathematics:

============ ================================================ ==========================
eval         what is differentiated                           size
============ ================================================ ==========================
``hello``    gradient of ``sum(x**2)`` (GradBench: ``x**2``)  n
``ba``       Jacobian of bundle adjustment's residuals        observations p
``ht``       Jacobian of hand tracking's residuals (26 pose)  points (= model vertices)
``lstm``     gradient of the diagonal-LSTM loss               sequence length c
``det``      gradient of the determinant by minors            edge l (n = l**2)
``kmeans``   Hessian of the k-means cost (its gradient's      centroids k
             Jacobian; the gradient by the ``inner`` method)
``particle`` gradient of the miss distance through an Euler   particles
             integration that takes the inner gradient
``saddle``   gradient of ``max_y f(x, y)`` through inner      saddle problems
             gradient-ascent steps
============ ================================================ ==========================

``kmeans``, ``particle`` and ``saddle`` take an ``inner`` option: the differentiator that
computes the derivative *inside* the function; the harness's method is the outer one, so a
sweep over methods and ``inner`` values covers every (outer x inner) pair. ``ba`` and
``kmeans`` take ``colouring=True``: the function becomes ``z -> f(x0 + S z)`` with ``S`` the
column colouring (15 colours for ``ba``, one for the diagonal Hessian of ``kmeans``), whose
Jacobian is the compressed Jacobian ``J S``: forward mode then needs 15 (or 1) passes
however large the problem.

:data:`EVALS` names all twelve with what GradBench asks for, the cost law (exponents of the
derivative/primal ratio per mode) and the suite sizes of ``diffkit compare --suite gradbench``.

Example:
    >>> import diffkit as dk
    >>> inst = dk.harness.get_problem("ba").build(20)
    >>> inst.quantity, inst.m
    ('jacobian', 60)
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from diffkit._core.errors import DiffkitError
from diffkit._core.registry import resolve
from diffkit.harness.families import Problem, get_problem, register_problem

__all__ = ["EVALS", "Eval", "ba_colours", "det_minors", "particle_miss", "saddle_value", "suite"]


@dataclass(frozen=True)
class Eval:
    """One GradBench eval: the diffkit family that implements it, what GradBench asks for,
    the expected exponents (against the size's n or m, whichever varies) of the
    derivative/primal ratio in forward and reverse mode, and the sizes of the suite."""

    name: str
    asks: str
    ratio_law: dict[str, float]
    suite_sizes: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()


#: The twelve evals. ``ratio_law``: the exponent of derivative time / primal time for the
#: forward and reverse modes of the family's default options (the slope of the passes each
#: mode needs: n forward and 1 reverse for a gradient, m reverse for a Jacobian).
EVALS: dict[str, Eval] = {
    e.name: e
    for e in [
        Eval("hello", "gradient of x**2", {"forward": 1, "reverse": 0}, (1, 100)),
        Eval("gmm", "gradient", {"forward": 1, "reverse": 0}, (66, 660)),
        Eval("lse", "gradient", {"forward": 1, "reverse": 0}, (10, 1_000)),
        Eval("llsq", "gradient", {"forward": 1, "reverse": 0}, (4, 64)),
        Eval("ode", "Jacobian row (gradient of the last state)", {"forward": 1, "reverse": 0},
             (10, 1_000)),
        Eval("ba", "sparse Jacobian", {"forward": 1, "reverse": 1}, (10, 100)),
        Eval("ht", "Jacobian (3 per point x 26)", {"forward": 0, "reverse": 1}, (10, 100)),
        Eval("lstm", "gradient", {"forward": 0, "reverse": 0}, (2, 64)),
        Eval("det", "gradient", {"forward": 1, "reverse": 0}, (2, 5)),
        Eval("kmeans", "Hessian (diagonal) for a Newton step", {"forward": 1, "reverse": 1},
             (2, 8)),
        Eval("particle", "nested gradient (argmin over an ODE with a gradient inside)",
             {"forward": 1, "reverse": 0}, (1, 10)),
        Eval("saddle", "nested gradient (argmin of an argmax)", {"forward": 1, "reverse": 0},
             (1, 10)),
    ]
}  # fmt: skip


def _normal(rng: np.random.Generator, shape: Any, scale: float = 1.0) -> np.ndarray:
    return scale * rng.standard_normal(shape)


def _inner(name: str) -> Any:
    """The differentiator named by an ``inner`` option (one-line error for a bad name)."""
    if not isinstance(name, str):
        raise DiffkitError(f"inner must be a differentiator name such as 'jax-rev', got {name!r}")
    return resolve(name)


def _coloured(fun: Any, x0: Any, colours: np.ndarray, k: int) -> tuple[Any, np.ndarray]:
    """``z -> fun(x0 + S z)`` for the colouring ``colours`` (column i of the flat x0 has
    colour ``colours[i]``, ``k`` colours), so that its Jacobian at z = 0 is ``J S``."""
    _, unravel = ravel_pytree(x0)
    colours = colours.astype(np.int32)

    def compressed(z, flat, *rest):
        return fun(unravel(flat + z[colours]), *rest)

    return compressed, np.zeros(k)


# --------------------------------------------------------------------------- hello


def _hello(size, dtype, rng):
    def square(x):  # GradBench's "square"; its gradient is "double", 2x
        return jnp.sum(x * x)

    return square, (_normal(rng, size),)


# ------------------------------------------------------------------------------ ba

BA_CAM = 11  # rotation (angle-axis) 3, centre 3, focal 1, principal point 2, distortion 2


def _rodrigues(rot, pt):
    """Rotate ``pt`` (..., 3) by the angle-axis vectors ``rot`` (..., 3)."""
    sq = jnp.sum(rot * rot, -1, keepdims=True)
    small = sq == 0  # GradBench's branch: the first-order formula at theta = 0
    theta = jnp.sqrt(jnp.where(small, 1.0, sq))
    w = rot / theta
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    full = pt * cos + jnp.cross(w, pt) * sin + w * (jnp.sum(w * pt, -1, keepdims=True) * (1 - cos))
    return jnp.where(small, pt + jnp.cross(rot, pt), full)


def _ba_residuals(x, obs, feats, cams):
    """Residuals of the flat parameters x = (cams x 11 camera, points x 3, one weight per
    observation): 2 reprojection errors per observation, then 1 - w^2 per weight."""
    start, end = BA_CAM * cams, x.size - obs.shape[0]
    cam = x[:start].reshape(cams, BA_CAM)[obs[:, 0]]
    pt = x[start:end].reshape(-1, 3)[obs[:, 1]]
    w = x[end:]
    xcam = _rodrigues(cam[:, 0:3], pt - cam[:, 3:6])
    proj = xcam[:, :2] / xcam[:, 2:3]
    rsq = jnp.sum(proj * proj, -1, keepdims=True)
    proj = proj * (1 + cam[:, 9:10] * rsq + cam[:, 10:11] * rsq * rsq)
    proj = proj * cam[:, 6:7] + cam[:, 7:9]
    reproj = w[:, None] * (proj - feats)
    return jnp.concatenate([reproj.reshape(-1), 1 - w * w])


def ba_colours(cams: int, points: int, observations: int) -> np.ndarray:
    """Colour of each parameter of ``ba`` (flattened as cams, points, w) such that no residual
    depends on two parameters of one colour: camera entry j has colour j, point coordinate
    k colour 11 + k, every weight colour 14 (each residual sees one camera, one point and
    one weight). 15 colours, whatever the size.

    Example:
        >>> from diffkit.harness.gradbench import ba_colours
        >>> ba_colours(2, 1, 3).tolist()
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 14, 14]
    """
    return np.concatenate(
        [np.tile(np.arange(BA_CAM), cams), np.tile(BA_CAM + np.arange(3), points),
         np.full(observations, BA_CAM + 3)]
    )  # fmt: skip


def _ba(size, dtype, rng, colouring):
    p = size
    n_cams, n_pts = max(2, p // 64), max(3, p // 4)
    cams = np.zeros((n_cams, BA_CAM))
    cams[:, 0:3] = _normal(rng, (n_cams, 3), 0.1)  # small rotations
    cams[:, 3:6] = _normal(rng, (n_cams, 3), 0.3) + np.array(
        [0.0, 0.0, -8.0]
    )  # in front of the points
    cams[:, 6] = 1.0 + 0.1 * rng.random(n_cams)  # focal length
    cams[:, 7:9] = _normal(rng, (n_cams, 2), 0.05)  # principal point
    cams[:, 9:11] = _normal(rng, (n_cams, 2), 0.01)  # radial distortion
    x = np.concatenate([cams.ravel(), _normal(rng, 3 * n_pts), 1.0 + _normal(rng, p, 0.1)])
    i = np.arange(p)
    obs = np.stack([i % n_cams, i % n_pts], 1).astype(np.int32)  # as GradBench assigns them
    feats = _normal(rng, (p, 2), 0.2)
    fun = functools.partial(_ba_residuals, cams=n_cams)
    if colouring:
        fun, z = _coloured(fun, x, ba_colours(n_cams, n_pts, p), BA_CAM + 4)
        return fun, (z, x, obs, feats)
    return fun, (x, obs, feats)


# ------------------------------------------------------------------------------ ht

HT_BONES = 22  # forearm, wrist, then four bones per finger
HT_THETA = 26  # global rotation 3, translation 3, 4 per finger


def _ht_parents() -> list[int]:
    parents = [-1, 0]
    for finger in range(5):
        first = 2 + 4 * finger
        parents += [1, first, first + 1, first + 2]
    return parents


def _ht_pose_index() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each of theta's 26 entries goes in the 3 x (bones + 3) pose parameters:
    column 0 the global rotation, 2 the translation, then per finger (x, y) of its first
    bone and x of the next two (GradBench's ``to_pose_params``)."""
    rows, cols, src = [0, 1, 2, 0, 1, 2], [0, 0, 0, 2, 2, 2], [0, 1, 2, 3, 4, 5]
    i_theta, col = 6, 5
    for _finger in range(5):
        for i in range(2, 5):
            rows.append(0)
            cols.append(col)
            src.append(i_theta)
            i_theta += 1
            if i == 2:
                rows.append(1)
                cols.append(col)
                src.append(i_theta)
                i_theta += 1
            col += 1
        col += 1
    return np.array(rows), np.array(cols), np.array(src)


def _euler_xzy(a):
    """Rotation Rz Ry Rx from the angles (x, z, y) in this order (GradBench's convention)."""
    tx, tz, ty = a[..., 0], a[..., 1], a[..., 2]
    c, s, one, zero = jnp.cos, jnp.sin, jnp.ones_like(tx), jnp.zeros_like(tx)
    rx = jnp.stack([one, zero, zero, zero, c(tx), -s(tx), zero, s(tx), c(tx)], -1)
    ry = jnp.stack([c(ty), zero, s(ty), zero, one, zero, -s(ty), zero, c(ty)], -1)
    rz = jnp.stack([c(tz), -s(tz), zero, s(tz), c(tz), zero, zero, zero, one], -1)
    shape = (*tx.shape, 3, 3)
    return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def _angle_axis(v):
    """Rotation matrix of an angle-axis vector; the identity below norm 1e-4 (GradBench)."""
    sq = jnp.sum(v * v)
    small = sq < 1e-8
    norm = jnp.sqrt(jnp.where(small, 1.0, sq))
    x, y, z = v / norm
    s, c = jnp.sin(norm), jnp.cos(norm)
    r = jnp.array(
        [[x * x + (1 - x * x) * c, x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
         [x * y * (1 - c) + z * s, y * y + (1 - y * y) * c, y * z * (1 - c) - x * s],
         [x * z * (1 - c) - y * s, z * y * (1 - c) + x * s, z * z + (1 - z * z) * c]]
    )  # fmt: skip
    return jnp.where(small, jnp.eye(3, dtype=v.dtype), r)


def _ht_residuals(theta, model, corr, points):
    rows, cols, src = _ht_pose_index()
    pose = jnp.zeros((3, HT_BONES + 3), theta.dtype).at[:, 1].set(1.0)
    pose = pose.at[rows, cols].set(theta[src])
    rot = jnp.zeros((HT_BONES, 4, 4), theta.dtype).at[:, 3, 3].set(1.0)
    rot = rot.at[:, :3, :3].set(_euler_xzy(pose[:, 3:].T))
    relatives = model["base_relatives"] @ rot
    absolutes: list[Any] = []
    for i, parent in enumerate(_ht_parents()):
        absolutes.append(relatives[i] if parent < 0 else absolutes[parent] @ relatives[i])
    transforms = jnp.stack(absolutes) @ model["inverse_base_absolutes"]
    moved = jnp.einsum("bij,jv->biv", transforms[:, :3, :], model["base_positions"])
    verts = jnp.einsum("biv,bv->iv", moved, model["weights"])  # (3, vertices)
    r = _angle_axis(pose[:, 0]) * pose[:, 1][None, :]
    verts = r @ verts + pose[:, 2][:, None]
    return (points - verts[:, corr].T).reshape(-1)


def _random_rigid(rng, n, length):
    """``n`` 4 x 4 rigid transforms: small rotations, an offset of about ``length``."""
    out = np.tile(np.eye(4), (n, 1, 1))
    with jax.enable_x64(True):
        out[:, :3, :3] = np.asarray(_euler_xzy(jnp.asarray(_normal(rng, (n, 3), 0.3))))
    out[:, :3, 3] = _normal(rng, (n, 3), 0.2) + np.array([0.0, length, 0.0])
    return out


def _ht(size, dtype, rng):
    verts = size
    relatives = _random_rigid(rng, HT_BONES, 1.0)
    absolutes: list[np.ndarray] = []
    for i, parent in enumerate(_ht_parents()):
        absolutes.append(relatives[i] if parent < 0 else absolutes[parent] @ relatives[i])
    weights = np.zeros((HT_BONES, verts))
    for v in range(verts):  # each vertex follows two bones
        bones = rng.choice(HT_BONES, 2, replace=False)
        weights[bones, v] = rng.dirichlet([1.0, 1.0])
    anchor = np.stack(absolutes)[:, :3, 3]  # bone origins: vertices lie near the bones
    base = anchor[rng.integers(HT_BONES, size=verts)] + _normal(rng, (verts, 3), 0.3)
    model = {
        "base_relatives": relatives,
        "inverse_base_absolutes": np.linalg.inv(np.stack(absolutes)),
        "base_positions": np.concatenate([base.T, np.ones((1, verts))]),
        "weights": weights,
    }
    corr = rng.integers(verts, size=size).astype(np.int32)
    points = base[corr] + _normal(rng, (size, 3), 0.1)
    theta = _normal(rng, HT_THETA, 0.2)
    return _ht_residuals, (theta, model, corr, points)


# ---------------------------------------------------------------------------- lstm


def _lstm_loss(params, state, sequence):
    main, extra = params["main"], params["extra"]  # (2 layers, 4 b), (3, b)
    layers, b = main.shape[0] // 2, extra.shape[1]

    def predict(state, x):
        x = x * extra[0]
        new = []
        for i in range(layers):
            weight, bias = main[2 * i].reshape(4, b), main[2 * i + 1].reshape(4, b)
            hidden, cell = state[2 * i], state[2 * i + 1]
            forget = jax.nn.sigmoid(x * weight[0] + bias[0])
            ingate = jax.nn.sigmoid(hidden * weight[1] + bias[1])
            outgate = jax.nn.sigmoid(x * weight[2] + bias[2])
            change = jnp.tanh(hidden * weight[3] + bias[3])
            cell = cell * forget + ingate * change
            hidden = outgate * jnp.tanh(cell)
            new += [hidden, cell]
            x = hidden
        return jnp.stack(new), x * extra[1] + extra[2]

    def step(state, xs):
        x, gold = xs
        state, ypred = predict(state, x)
        ynorm = ypred - jnp.log(jnp.sum(jnp.exp(ypred)) + 2)  # ADBench's "+ 2"
        return state, jnp.sum(gold * ynorm)

    _, totals = jax.lax.scan(step, state, (sequence[:-1], sequence[1:]))
    return -jnp.sum(totals) / ((sequence.shape[0] - 1) * b)


def _lstm(size, dtype, rng, layers, b):
    c = max(size, 2)
    params = {"main": _normal(rng, (2 * layers, 4 * b), 0.5), "extra": _normal(rng, (3, b), 0.5)}
    return _lstm_loss, (params, _normal(rng, (2 * layers, b), 0.5), rng.random((c, b)))


# ----------------------------------------------------------------------------- det


def det_minors(ell: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Index tables of the expansion by minors along the first row, each minor once.

    Level k holds the minors of the last k rows, one per set S of k columns:
    ``M(S) = sum_{j in S} (-1)^{#(S below j)} A[l-k, j] M(S - {j})``. Per level: the
    position in level k-1 of each ``S - {j}``, the column j and the sign, arrays of shape
    (C(l, k), k). GradBench's reference recurses without sharing minors (l! products);
    sharing them gives the same value in l 2^(l-1) products.

    Example:
        >>> from diffkit.harness.gradbench import det_minors
        >>> [t[1].shape for t in det_minors(3)]
        [(3, 1), (3, 2), (1, 3)]
    """
    levels = []
    previous: dict[tuple[int, ...], int] = {(): 0}  # the empty set's minor, at position 0
    for k in range(1, ell + 1):
        sets = list(itertools.combinations(range(ell), k))
        child = np.array([[previous[s[:i] + s[i + 1 :]] for i in range(k)] for s in sets])
        col = np.array(sets, np.int32)  # int32: JAX's index type when x64 is off
        sign = np.array([[(-1.0) ** i for i in range(k)] for _ in sets])
        levels.append((child.astype(np.int32), col, sign))
        previous = {s: i for i, s in enumerate(sets)}
    return levels


def _det(size, dtype, rng):
    ell = size
    levels = det_minors(ell)

    def det(a):
        minors = jnp.ones(1, a.dtype)
        for k, (child, col, sign) in enumerate(levels, start=1):
            minors = jnp.sum(jnp.asarray(sign, a.dtype) * a[ell - k][col] * minors[child], 1)
        return minors[0]

    return det, (rng.random((ell, ell)),)


# -------------------------------------------------------------------------- kmeans


def _kmeans_cost(centroids, points):
    d2 = jnp.sum((points[:, None, :] - centroids[None, :, :]) ** 2, axis=-1)
    return jnp.sum(jnp.min(d2, axis=1))


def _kmeans(size, dtype, rng, inner, points, d, colouring):
    grad = _inner(inner).grad(_kmeans_cost)
    pts = rng.random((max(points, 4 * size), d))
    centroids = pts[-size:]  # GradBench's choice: no cluster is empty
    if colouring:  # the Hessian is diagonal: one colour, H @ ones = its diagonal
        fun, z = _coloured(grad, centroids, np.zeros(size * d), 1)
        return fun, (z, centroids.reshape(-1), pts)
    return grad, (centroids, pts)


# ------------------------------------------------------------------------ particle

PARTICLE_DT = 0.1


def _potential(x, w):
    """p(x; w) = 1/|x - (10, 10 - w)| + 1/|x - (10, 0)|, for one particle."""
    c1 = jnp.stack([10.0, 10.0 - w])
    c2 = jnp.array([10.0, 0.0], x.dtype)
    return 1 / jnp.sqrt(jnp.sum((x - c1) ** 2)) + 1 / jnp.sqrt(jnp.sum((x - c2) ** 2))


def particle_miss(w: Any, inner: str = "jax-rev", steps: int = 400) -> Any:
    """x_0(t_f)^2 of each particle (controls ``w``): naive Euler from (0, 8) with velocity
    (0.75, 0), acceleration ``-grad_x p(x; w)`` by the ``inner`` differentiator, stopped
    before the step that crosses the x axis, then linear interpolation to the axis
    (GradBench's ``naive_euler``). The while loop is a scan of ``steps`` steps in which a
    particle that has stopped stays put.

    Example:
        >>> import jax.numpy as jnp
        >>> from diffkit.harness.gradbench import particle_miss
        >>> round(float(particle_miss(jnp.zeros(1))[0]), 2)  # float32; 3.19908 in float64
        3.2
    """
    x, xdot, _ = _euler(w, inner, steps)
    t_f = -x[:, 1] / xdot[:, 1]
    return (x[:, 0] + t_f * xdot[:, 0]) ** 2


def _euler(w, inner, steps):
    """Positions, velocities and whether each particle is still in flight after ``steps``."""
    accel = jax.vmap(_inner(inner).grad(_potential))
    n = w.shape[0]
    x0 = jnp.tile(jnp.array([0.0, 8.0], w.dtype), (n, 1))
    v0 = jnp.tile(jnp.array([0.75, 0.0], w.dtype), (n, 1))

    def step(carry, _):
        x, xdot, go = carry
        xddot = -accel(x, w)
        x_new = x + PARTICLE_DT * xdot
        go = go & (x_new[:, 1] > 0)
        x = jnp.where(go[:, None], x_new, x)
        xdot = jnp.where(go[:, None], xdot + PARTICLE_DT * xddot, xdot)
        return (x, xdot, go), None

    (x, xdot, go), _ = jax.lax.scan(step, (x0, v0, jnp.ones(n, bool)), None, length=steps)
    return x, xdot, go


def _particle(size, dtype, rng, inner, steps):
    w = rng.uniform(0.0, 0.25, size)  # GradBench's descent path, w0 = 0 to w* = 0.207
    with jax.enable_x64(True):  # the scan must outlast every particle's flight
        in_flight = jax.jit(_euler, static_argnums=(1, 2))(jnp.asarray(w), inner, steps + 1)[2]
    if bool(np.any(in_flight)):
        raise DiffkitError(f"particle: {steps} Euler steps do not reach the x axis; raise steps")

    def miss(w):
        return jnp.sum(particle_miss(w, inner, steps))

    return miss, (w,)


# -------------------------------------------------------------------------- saddle


def _saddle_f(p1, p2):
    """GradBench's f: (x1^2 + y1^2) - (x2^2 + y2^2) for p1 = (x1, y1), p2 = (x2, y2)."""
    return jnp.sum(p1 * p1) - jnp.sum(p2 * p2)


def saddle_value(p1: Any, start: Any, inner: str = "jax-rev", steps: int = 20,
                 eta: float = 0.25) -> Any:  # fmt: skip
    """``max_p2 f(p1, p2)`` by ``steps`` gradient-ascent steps from ``start`` with the
    ``inner`` differentiator's gradient, for each row of ``p1`` (shape (problems, 2)).

    Example:
        >>> import jax.numpy as jnp
        >>> from diffkit.harness.gradbench import saddle_value
        >>> float(saddle_value(jnp.array([[1.0, 2.0]]), jnp.array([[1.0, 1.0]]))[0])
        5.0
    """
    ascend = jax.vmap(_inner(inner).grad(_saddle_f, argnums=1))

    def step(p2, _):
        return p2 + eta * ascend(p1, p2), None

    p2, _ = jax.lax.scan(step, start, None, length=steps)
    return jax.vmap(_saddle_f)(p1, p2)


def _saddle(size, dtype, rng, inner, steps):
    p1, start = _normal(rng, (size, 2)), _normal(rng, (size, 2))

    def minimax(p1, start):
        return jnp.sum(saddle_value(p1, start, inner, steps))

    return minimax, (p1, start)


for _problem in [
    Problem("hello", "sum of squares (GradBench hello: square, double)", "n",
            (1, 100, 10_000, 1_000_000), _hello),
    Problem("ba", "bundle adjustment residuals (GradBench ba)", "observations p",
            (10, 100, 1_000), _ba, {"colouring": False}),
    Problem("ht", "hand tracking residuals, 22 bones, 26 pose parameters (GradBench ht)",
            "points (= model vertices)", (10, 100, 1_000), _ht),
    Problem("lstm", "diagonal LSTM text-model loss (GradBench lstm)", "sequence length c",
            (2, 16, 128, 1_024), _lstm, {"layers": 2, "b": 16}),
    Problem("det", "determinant by expansion by minors (GradBench det)", "edge l (n = l^2)",
            (1, 4, 8, 12, 16), _det),
    Problem("kmeans", "k-means cost Hessian: Jacobian of the inner gradient (GradBench kmeans)",
            "centroids k", (2, 8, 32, 256), _kmeans,
            {"inner": "jax-rev", "points": 100, "d": 8, "colouring": False}),
    Problem("particle", "charged particle miss distance, nested gradient (GradBench particle)",
            "particles", (1, 10, 100, 1_000), _particle, {"inner": "jax-rev", "steps": 400}),
    Problem("saddle", "max_y f(x, y) by inner gradient ascent, nested (GradBench saddle)",
            "saddle problems", (1, 10, 100, 1_000), _saddle, {"inner": "jax-rev", "steps": 20}),
]:  # fmt: skip
    register_problem(_problem)


def suite(methods: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``diffkit compare --suite gradbench``: all twelve evals at their two suite sizes, as
    keyword arguments of :func:`diffkit.harness.sweeps`. ``particle`` and ``saddle`` run once
    per inner method among the AD methods given (every outer x inner pair); symbolic runs at
    the smallest size only (its expressions swell; a timeout is recorded as such).

    Example:
        >>> from diffkit.harness.gradbench import suite
        >>> s = suite(["jax-rev", "dual"])
        >>> len(s["problems"]), s["sizes"]["det"]
        (14, [2, 5])
    """
    inners = [m for m in methods if m in ("jax-fwd", "jax-rev", "dual", "tape")] or ["jax-rev"]
    problems = []
    for name in EVALS:
        nested = name in ("particle", "saddle")
        for inner in inners if nested else [None]:
            options = {"inner": inner} if nested else {}
            problems.append(get_problem(name, **options))
    sizes = {name: list(ev.suite_sizes) for name, ev in EVALS.items()}
    small = {name: list(ev.suite_sizes[:1]) for name, ev in EVALS.items()}
    return {
        "problems": problems,
        "sizes": sizes,
        "methods": list(methods),
        "method_sizes": {"symbolic": small} if "symbolic" in methods else {},
    }
