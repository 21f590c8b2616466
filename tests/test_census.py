"""The census: every primitive the installed JAX differentiates is accounted for.

For each hand-written interpreter (``dual``, ``tape``), a primitive with a JVP rule in JAX
must be a row of the rule table, a call the interpreters inline, one they handle themselves
(control flow, custom rules), integer- or boolean-valued (nothing to differentiate: the
interpreters evaluate it), or listed in ``REFUSED`` with its reason. A new JAX release that
adds a primitive fails here, not in a user's hands. The list of refused primitives in
docs/hand-written-modes.md is checked against the same table, so it is never stale.
"""

from __future__ import annotations

import functools
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import diffkit as dk
from diffkit._core.jaxpr import CALL_PARAMS
from diffkit.differentiators.dual import DualInterpreter
from diffkit.differentiators.tape import _Recorder
from diffkit.rules.table import REFUSED, RULES

#: Primitives whose outputs are never floating point: no derivative flows through them.
INTEGER_VALUED = {
    *("and", "or", "not", "xor", "shift_left", "shift_right_arithmetic"),
    *("shift_right_logical", "mulhi", "eq", "ne", "ge", "gt", "le", "lt"),
    *("eq_to", "le_to", "lt_to", "is_finite", "argmax", "argmin"),
    *("random_bits", "random_fold_in", "random_seed", "random_split"),
    *("random_wrap", "random_unwrap"),
    # effects only, no outputs
    *("debug_callback", "debug_print", "inspect_sharding"),
}


#: The modules whose primitives the census covers: JAX and what ships with it for users.
MODULES = (
    "jax",
    "jax.numpy",
    "jax.scipy.special",
    "jax.scipy.linalg",
    "jax.scipy.signal",
    "jax.scipy.stats",
    "jax.nn",
    "jax.experimental.ode",
    "jax.experimental.multihost_utils",
)


@functools.cache
def _differentiable() -> frozenset[str]:
    """The primitives with a JVP rule once :data:`MODULES` are imported, found in a fresh
    interpreter (so what other tests imported does not change the census)."""
    code = (
        f"import importlib; [importlib.import_module(m) for m in {MODULES!r}]\n"
        "from jax._src.interpreters import ad\n"
        "print(' '.join(sorted({p.name for p in ad.primitive_jvps})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return frozenset(out.stdout.split())


#: JAX's primitives with no row that dual and tape differentiate through the rules registered
#: in JAX's tables (as any library's primitive): listed, so that a new one is looked at.
THROUGH_JAX = {"ragged_dot_general"}


@pytest.mark.parametrize("interpreter", [DualInterpreter, _Recorder], ids=["dual", "tape"])
def test_every_differentiable_primitive_is_accounted_for(interpreter) -> None:
    known = set(RULES) | set(CALL_PARAMS) | set(interpreter.special) | INTEGER_VALUED
    missing = sorted(_differentiable() - known - set(REFUSED) - THROUGH_JAX)
    assert not missing, f"{interpreter.who}: no row, handler or refusal for {missing}"


@pytest.mark.parametrize("name", ["dual", "tape"])
def test_a_third_party_primitive_goes_through_its_jax_rules(name: str) -> None:
    """A primitive registered in the test, as a library registers its own (JVP and transpose
    in JAX's tables, no row here), is differentiated by those rules, not refused."""
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    prim = Primitive("census_third_party_expm1")
    prim.def_impl(jnp.expm1)
    prim.def_abstract_eval(lambda x: x)
    mlir.register_lowering(prim, mlir.lower_fun(jnp.expm1, multiple_results=False))
    batching.defvectorized(prim)
    ad.defjvp(prim, lambda t, x: t * jnp.exp(x))
    assert prim.name not in RULES and prim.name not in REFUSED

    def f(x):
        return jnp.sum(prim.bind(x) ** 2)

    x = jnp.array([0.1, -0.4, 0.9])
    assert jnp.allclose(dk.get(name).grad(f)(x), jax.grad(f)(x), rtol=1e-6)


def test_refused_and_covered_do_not_overlap() -> None:
    assert not set(REFUSED) & (set(RULES) | set(CALL_PARAMS) | set(DualInterpreter.special))
    assert all(len(reason) > 20 for reason in REFUSED.values())  # a reason, not a stub


def test_census_figures() -> None:
    """Most of what JAX differentiates is covered; what is refused is collective, stateful,
    opaque or internal (the reasons say which)."""
    jax_prims = _differentiable()
    covered = jax_prims - set(REFUSED)
    assert len(covered) / len(jax_prims) > 0.7
    assert {"conv_general_dilated", "cholesky", "stack", "polygamma"} <= covered


def test_the_docs_list_exactly_the_refused_primitives() -> None:
    page = pathlib.Path(__file__).parents[1] / "docs" / "hand-written-modes.md"
    text = page.read_text()
    start = text.index("<!-- refused:start -->")
    block = text[start : text.index("<!-- refused:end -->")]
    listed = {word.strip("`,") for word in block.split() if word.startswith("`")}
    regenerate = "python -c 'from diffkit.rules.table import refused_markdown as m; print(m())'"
    assert listed == set(REFUSED), f"{page.name} is stale; regenerate the list with {regenerate}"


@pytest.mark.parametrize("name", ["dual", "tape"])
def test_a_refusal_gives_its_reason_in_one_line(name: str) -> None:
    f = lambda x: jax.pure_callback(lambda a: a * 2, jax.ShapeDtypeStruct((2,), x.dtype), x)  # noqa: E731
    with pytest.raises(dk.UnsupportedPrimitiveError) as info:
        dk.get(name).grad(lambda x: jnp.sum(f(x)))(jnp.ones(2))
    message = str(info.value)
    assert "'pure_callback'" in message and REFUSED["pure_callback"] in message
    assert "test_census.py" in message and "\n" not in message


def test_symbolic_accounts_for_every_primitive_dual_and_tape_differentiate() -> None:
    from diffkit.symbolic.translate import REFUSED as SYMBOLIC_REFUSED
    from diffkit.symbolic.translate import SUPPORTED

    known = set(SUPPORTED) | set(CALL_PARAMS) | INTEGER_VALUED | set(REFUSED)  # dual/tape's
    missing = sorted(_differentiable() - known - set(SYMBOLIC_REFUSED))
    assert not missing, f"symbolic: no translation or refusal for {missing}"
    assert not set(SYMBOLIC_REFUSED) & set(SUPPORTED)


def test_symbolic_refusal_gives_its_reason(x64: None) -> None:
    from diffkit.symbolic.translate import REFUSED as SYMBOLIC_REFUSED

    with pytest.raises(dk.UnsupportedPrimitiveError) as info:
        scalar = dk.get("symbolic", level="scalar")  # the array level differentiates cholesky
        scalar.grad(lambda x: jnp.sum(jnp.linalg.cholesky(x)))(jnp.eye(2))
    message = str(info.value)
    assert "'cholesky'" in message and SYMBOLIC_REFUSED["cholesky"] in message
    assert "test_census.py" in message and "\n" not in message
