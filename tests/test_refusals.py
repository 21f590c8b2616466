"""Every refusal path of the hand-written interpreters ends in one line: a diffkit
``UnsupportedPrimitiveError`` naming the primitive (or construct) and the user's own line,
never a raw error from inside an interpreter or a library's rule (issue 32). Each case is a
small function that reaches one path; ``tests/test_scientific.py`` drives the same contract
over real library code."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

import diffkit as dk


def _primitive(name: str, jvp=None, transpose=None):
    prim = Primitive(name)
    prim.def_impl(lambda x: 2 * x)
    prim.def_abstract_eval(lambda x: x)
    mlir.register_lowering(prim, mlir.lower_fun(lambda x: 2 * x, multiple_results=False))
    batching.defvectorized(prim)
    if jvp is not None:
        ad.primitive_jvps[prim] = jvp
    if transpose is not None:
        ad.primitive_transposes[prim] = transpose
    return prim


def _failing_rule(primals, tangents):
    raise RuntimeError("Unexpected tangent.\nThis library's op cannot be differentiated.")


_FAILS = _primitive("refusal_failing_rule", jvp=_failing_rule)
_NO_TRANSPOSE_INNER = _primitive("refusal_linear_no_transpose")  # no rules at all
_NEEDS_TRANSPOSE = _primitive(
    "refusal_needs_transpose",
    jvp=lambda p, t: (_NEEDS_TRANSPOSE.bind(*p), _NO_TRANSPOSE_INNER.bind(*t)),
)
_OPAQUE = _primitive("refusal_opaque")


@jax.custom_vjp
def _cube(x):
    return x**3


_cube.defvjp(lambda x: (x**3, x), lambda x, g: (3 * x**2 * g,))


def _closing_custom_vjp(x):
    @jax.custom_vjp
    def scaled(y):
        return x * y

    scaled.defvjp(lambda y: (x * y, None), lambda _, g: (x * g,))
    return scaled(2.0)


def _solve_without_transpose(x):
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])

    def solve(matvec, b):
        return jnp.linalg.solve(a, b)

    return lax.custom_linear_solve(lambda v: a @ v, x, solve)


def _while(x):
    return lax.while_loop(lambda c: c[1] < 3, lambda c: (jnp.sin(c[0]), c[1] + 1), (x, 0))[0]


def _callback(x):
    return jax.pure_callback(lambda a: np.sin(a), jax.ShapeDtypeStruct(x.shape, x.dtype), x)


#: name -> (function of a vector x, {method: substring the one line must hold}; a method
#: missing from the dict must succeed and match JAX)
CASES = {
    "opaque host call": (_callback, {"dual": "'pure_callback'", "tape": "'pure_callback'"}),
    "primitive JAX cannot differentiate": (
        lambda x: _OPAQUE.bind(x),
        {"dual": "'refusal_opaque'", "tape": "'refusal_opaque'"},
    ),
    "a library rule that fails": (
        lambda x: _FAILS.bind(x),
        {"dual": "'refusal_failing_rule'", "tape": "'refusal_failing_rule'"},
    ),
    "a tangent through a primitive with no transpose": (
        lambda x: _NEEDS_TRANSPOSE.bind(x),
        {"tape": "'refusal_linear_no_transpose'"},
    ),
    "custom_vjp in forward mode": (lambda x: _cube(x), {"dual": "custom_vjp"}),
    "custom_vjp closing over a differentiated value": (
        lambda x: _closing_custom_vjp(x),
        {"dual": "custom_vjp", "tape": "custom_vjp"},
    ),
    "while_loop in reverse mode": (_while, {"tape": "while_loop"}),
    "custom_linear_solve without transpose_solve": (
        _solve_without_transpose,
        {"tape": "custom_linear_solve"},
    ),
    "eigenvectors of a general matrix": (
        lambda x: jnp.real(jnp.linalg.eig(jnp.outer(x, x) + jnp.eye(x.size))[1]),
        {"dual": "'eig'", "tape": "'eig'"},
    ),
}


@pytest.mark.parametrize("method", ["dual", "tape"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_refusal_is_one_line_naming_the_primitive_and_the_users_line(case, method):
    fun, refusals = CASES[case]

    def loss(x):
        return jnp.sum(fun(x) ** 2)

    x = jnp.array([0.3, -0.5])
    if method not in refusals:  # JAX's own mode of the same kind runs: so must this one
        want = (jax.jacfwd if method == "dual" else jax.grad)(loss)(x)
        assert jnp.allclose(dk.get(method).grad(loss)(x), want, rtol=1e-5)
        return
    with pytest.raises(Exception) as info:
        dk.get(method).grad(loss)(x)
    error, message = info.value, str(info.value)
    assert isinstance(error, dk.UnsupportedPrimitiveError), f"raw {type(error).__name__}: {error}"
    assert "\n" not in message and len(message) < 400, message
    assert refusals[method] in message, message
    assert "test_refusals.py" in message, f"no user line: {message}"
