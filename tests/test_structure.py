"""The package's structure: the user's function is traced once per derivative, and the modules
import each other without a circle."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffkit as dk

PACKAGE = Path(dk.__file__).parent
BUILT_INS = ["dual", "fd", "jax-fwd", "jax-rev", "symbolic", "tape"]


class Counted:
    """``sum(sin(x) * x)``, counting the Python calls (each trace is one)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: jax.Array) -> jax.Array:
        self.calls += 1
        return jnp.sum(jnp.sin(x) * x)


@pytest.mark.parametrize("method", BUILT_INS)
def test_grad_traces_the_function_once(method: str) -> None:
    f, x = Counted(), jnp.array([0.5, -1.0, 2.0])
    want = jax.grad(lambda x: jnp.sum(jnp.sin(x) * x))(x)
    for _ in range(2):  # once per grad call, every call
        before = f.calls
        got = dk.get(method).grad(f)(x)
        assert f.calls - before == 1
        tol = 1e-3 if method == "fd" else 1e-6
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("method", BUILT_INS)
def test_jvp_vjp_jacobian_trace_once(method: str) -> None:
    d, x = dk.get(method), jnp.array([0.5, -1.0])
    f = Counted()
    g = lambda x: jnp.sin(x) * f(x)  # noqa: E731  (one call of f per trace of g)
    jac = d.jacobian(g)(x)
    assert f.calls == 1
    np.testing.assert_allclose(jac, jax.jacfwd(g)(x), rtol=1e-3, atol=1e-3)
    f.calls = 0
    _, y_dot = d.jvp(g, (x,), (jnp.ones(2),))
    assert f.calls == 1
    np.testing.assert_allclose(y_dot, jax.jvp(g, (x,), (jnp.ones(2),))[1], rtol=1e-3, atol=1e-3)
    f.calls = 0
    _, vjp_fn = d.vjp(g, x)
    (x_bar,) = vjp_fn(jnp.ones(2))
    assert f.calls == 1
    np.testing.assert_allclose(x_bar, jax.vjp(g, x)[1](jnp.ones(2))[0], rtol=1e-3, atol=1e-3)


def test_a_plain_function_differentiator_still_gets_a_function() -> None:
    """``traced = False`` (the default for third parties): ``_vjp`` receives the flat
    function itself, which runs the user's Python (here under jax.vjp)."""
    seen = []

    @dk.register("plain-rev-test")
    class PlainRev(dk.Differentiator):
        mode, native = "reverse", frozenset({"vjp"})

        def _vjp(self, fun, primals):
            seen.append(type(fun).__name__)
            return jax.vjp(fun, *primals, has_aux=True)

    try:
        f = Counted()
        x = jnp.array([0.5, 2.0])
        got = dk.get("plain-rev-test").grad(f)(x)
        np.testing.assert_allclose(got, jnp.sin(x) + x * jnp.cos(x), rtol=1e-6)
        assert seen == ["function"] and f.calls == 2  # the boundary's trace, then jax.vjp's
    finally:
        dk.unregister("plain-rev-test")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``tree`` imports, at any depth (inside functions too),
    except under ``if TYPE_CHECKING:`` (never run) and a function's import whose line says
    why it is lazy (``# lazy: ...``). ``importlib.import_module(name)`` is not an import
    statement: the registry loads the built-in differentiators that way, lazily."""
    tree, lines = ast.parse(source), source.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.body = [n for n in node.body if "# lazy: " not in lines[n.lineno - 1]]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in modules else node.module)
    return found & modules


def test_the_module_graph_has_no_cycle() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p.read_text(), modules) for p in paths}
    for name, deps in graph.items():
        deps.discard(name)
    assert graph["diffkit._registry"] >= {"diffkit._interface"}  # the walk sees imports
    assert "diffkit.differentiators" not in graph["diffkit._registry"]
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle among diffkit's modules: {' -> '.join(e.args[1])}")
    assert set(order) == modules
