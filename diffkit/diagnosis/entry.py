"""The doctor's entry point, :func:`doctor`: checks the arguments, traces the function in
its own precision and in float64, runs both walks and hands the records to the analysis."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import DiffkitError
from diffkit._core.jaxpr import is_float
from diffkit.diagnosis.analysis import Analysis
from diffkit.diagnosis.findings import Diagnosis
from diffkit.diagnosis.walk import flatten, reference_run, run


def doctor(
    f: Callable[..., Any],
    *args: Any,
    argnums: int = 0,
    method: str | None = None,
    seed: int = 0,
) -> Diagnosis:
    """Diagnose the gradient of ``f`` at ``args`` with respect to ``args[argnums]``.

    Args:
        f: a JAX function of pytrees of arrays (a scalar loss, or any output: then the
            cotangent is a fixed random one).
        args: the point (the differentiated argument in float16, bfloat16, float32 or float64).
        argnums: which argument is differentiated.
        method: whose derivative rules are diagnosed: ``None`` for JAX's (custom rules
            included), or a diffkit differentiator name such as ``"tape"``.
        seed: the random tangents' seed.

    Returns:
        a :class:`Diagnosis`: ``ok``, ``symptoms``, ``culprits`` (first culprit first), ``notes``.

    Example:
        >>> import jax.numpy as jnp
        >>> import diffkit as dk
        >>> dk.doctor(lambda w, x: jnp.sum(jnp.tanh(w * x)), jnp.ones(3), jnp.arange(3.0)).ok
        True
    """
    if not callable(f):
        raise DiffkitError(f"doctor: f must be a function, got {type(f).__name__}")
    if not args:
        raise DiffkitError("doctor: no arguments; call doctor(f, *args) with the point")
    if not isinstance(argnums, int) or not -len(args) <= argnums < len(args):
        raise DiffkitError(
            f"doctor: argnums={argnums!r} is not the index of one of the {len(args)} arguments"
        )
    args = tuple(jax.tree_util.tree_map(jnp.asarray, a) for a in args)
    leaves, tree = jax.tree_util.tree_flatten(args)
    argnums %= len(args)
    first = sum(len(jax.tree_util.tree_leaves(a)) for a in args[:argnums])
    n_wrt = len(jax.tree_util.tree_leaves(args[argnums]))
    wrt = [first <= k < first + n_wrt for k in range(len(leaves))]
    dtypes = {str(x.dtype) for x, w in zip(leaves, wrt, strict=True) if w}
    if not dtypes or any(not jnp.issubdtype(d, jnp.floating) for d in dtypes):
        raise DiffkitError(
            f"doctor: argument {argnums} has dtype(s) {sorted(dtypes) or 'none'}; the doctor "
            "differentiates real floating-point arguments (pass argnums= for another one)"
        )
    dtype = min(dtypes, key=lambda d: jnp.finfo(d).bits)
    n_outs: list[int] = []

    def flat(*xs: Any) -> list[Any]:
        out = jax.tree_util.tree_leaves(f(*jax.tree_util.tree_unflatten(tree, list(xs))))
        n_outs[:] = [len(out)]
        return out

    try:
        closed = jax.make_jaxpr(flat)(*leaves)
    except Exception as e:
        raise DiffkitError(f"doctor: cannot trace f at these arguments: {_one_line(e)}") from None
    remark = ""
    try:
        with jax.enable_x64(True):
            leaves64 = [jnp.asarray(x, jnp.float64) if is_float(x) else x for x in leaves]
            closed64 = jax.make_jaxpr(flat)(*leaves64)
    except Exception as e:  # code that is not x64-clean: the reference in its own dtype
        closed64, leaves64 = closed, leaves
        remark = f"no float64 reference: f does not trace with float64 inputs ({_one_line(e)})"
    avals = [v.aval for v in closed64.jaxpr.outvars[: n_outs[0]]]
    if not avals or any(not is_float(a) for a in avals):
        raise DiffkitError("doctor: f must return floating-point arrays (a loss, a prediction)")
    rng = np.random.default_rng(seed)
    scalar = len(avals) == 1 and avals[0].shape == ()
    seed_bar = [np.ones(()) if scalar else rng.standard_normal(a.shape) for a in avals]
    prog64 = flatten(closed64, n_outs[0])
    key = float(seed)
    try:
        with jax.enable_x64(True) if not remark else contextlib.nullcontext():
            ref = _to_np(reference_run(prog64, closed64, wrt, method, leaves64, seed_bar, key))
        own, prog = ref, prog64
        if dtype != "float64" and not remark:
            prog = flatten(closed, n_outs[0])
            bars = [
                jnp.asarray(b, a.dtype) for b, a in zip(seed_bar, closed.out_avals, strict=False)
            ]
            own = _to_np(run(prog, wrt, method, False, leaves, bars, key))
    except DiffkitError:
        raise
    except Exception as e:
        raise DiffkitError(f"doctor: cannot differentiate f: {_one_line(e)}") from None
    report = Analysis(prog, prog64, own, ref, dtype if not remark else "float64", wrt).report()
    report.dtype = dtype
    report.remarks = [remark] if remark else []
    if not scalar:
        shapes = [tuple(a.shape) for a in avals]
        report.output = (
            f"an array of shape {shapes[0]}" if len(shapes) == 1 else f"outputs of shapes {shapes}"
        )
    return report


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def _to_np(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)
