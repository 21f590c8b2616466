"""The scientific JAX stack, differentiated five ways: diffrax, lineax, optimistix, equinox,
jax-md and TFP's JAX substrate as a user writes them (tests/scientific_cases.py).

Each case and method is a test of its own (``test_scientific[lineax_lu-dual]``), float64
(scoped to the test), against ``jax.grad`` (jitted):

- jax-fwd, jax-rev: rho <= 1e-10 where JAX runs; where it raises, that is JAX's own refusal
  (forward mode through a ``custom_vjp``, reverse through a ``while_loop``): the test
  checks that plain ``jax.jvp`` / ``jax.vjp`` refuse too, so diffkit's jax-fwd and jax-rev
  add no failure of their own;
- dual must do what jax-fwd does and tape what jax-rev does: where JAX's mode runs, exact
  (rho <= 1e-10); where it refuses, a refusal: a diffkit error of one line naming the
  primitive and the source line, and the library function the user called (``entry``:
  ``diffeqsolve``, ``linear_solve``, ...), never a raw ValueError, RecursionError,
  RuntimeError or TypeError;
- fd: within its own error estimate (plus ``approx``, JAX's gradient's own error where it
  comes from a solver's tolerance), an estimate below 1e-4 relative, so the check can fail.

Today many dual and tape cases fail (issue 32: third-party primitives, nested custom rules).
The libraries come with the ``scientific`` extra (in ``test``); the module is slow (diffrax
compiles for seconds per method), so the unit tier deselects it.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import scientific_cases as sc

pytestmark = pytest.mark.slow

#: One run per case and method: dual's test reuses jax-fwd's outcome, tape's jax-rev's.
_run = functools.cache(sc.run)

PARAMS = [
    pytest.param(c.name, m, id=f"{sc.case_id(c.name)}-{m}") for c in sc.CASES for m in sc.METHODS
]


def _plain_jax(name: str, method: str) -> BaseException | None:
    """What plain ``jax.jvp`` (jax-fwd) or ``jax.vjp`` (jax-rev) raises on the case, if
    anything: JAX's own refusal."""
    f, x = sc.built(name)
    try:
        if method == "jax-fwd":
            jax.jit(lambda x: jax.jvp(f, (x,), (jax.tree_util.tree_map(np.ones_like, x),)))(x)
        else:
            jax.jit(lambda x: jax.vjp(f, x)[1](1.0))(x)
    except Exception as e:  # the refusal is the result
        return e
    return None


@pytest.mark.parametrize(("name", "method"), PARAMS)
def test_scientific(name: str, method: str) -> None:
    case = sc.BY_NAME[name]
    with jax.enable_x64(True):
        want = sc.reference(name)
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(want))
        outcome = _run(name, method)
        verdict, message = sc.judge(name, method, outcome)
        if method in ("jax-fwd", "jax-rev"):
            if outcome.exception is not None:  # JAX's refusal, and plain JAX refuses too
                plain = _plain_jax(name, method)
                assert plain is not None, f"{method} raised where plain JAX runs: {message}"
                return
            assert verdict == "exact", message
            return
        if method == "fd":
            assert verdict == "exact", message
            return
        jax_mode = _run(name, sc.PAIRED[method])
        if jax_mode.exception is None:  # JAX's mode runs: the interpreter must be exact
            assert verdict == "exact", f"{method} where {sc.PAIRED[method]} runs: {message}"
            return
        if outcome.exception is None:  # beyond JAX: fine, if it is right
            assert verdict == "exact", message
            return
        problems = sc.refusal_problems(outcome.exception, case)
        assert not problems, f"{method} refused badly ({'; '.join(problems)}): {message}"


SECOND_ORDER = ["lineax lu", "optimistix newton root", "diffrax tsit5 direct"]


@pytest.mark.parametrize("method", ["dual", "tape"])
@pytest.mark.parametrize("name", SECOND_ORDER, ids=[sc.case_id(n) for n in SECOND_ORDER])
def test_second_order_through_library_rules(name: str, method: str) -> None:
    """Hessians through lineax's primitive, optimistix's implicit rule and diffrax's loop
    (equinox's batched primitives appear once the inner derivative is vmapped)."""
    from jax.flatten_util import ravel_pytree

    import diffkit as dk

    with jax.enable_x64(True):
        f, x = sc.built(name)
        flat, unravel = ravel_pytree(x)
        g = lambda v: f(unravel(v))  # noqa: E731
        want = np.asarray(jax.hessian(g)(flat))
        got = np.asarray(dk.get(method).hessian(g)(flat))
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()
