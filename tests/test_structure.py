"""The package's structure: the user's function is traced once per derivative, and the modules
import each other without a circle."""

from __future__ import annotations

import ast
import graphlib
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _package(module: str, modules: set[str], is_init: bool) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to itself)."""
    return module if is_init else module.rpartition(".")[0]


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(source: str, module: str, modules: set[str]) -> tuple[set[str], list[str]]:
    """The modules of the package that ``source`` (module ``module``) imports, at any depth:
    module level and inside functions, with no exemption; importing ``a.b.c`` also runs the
    ``__init__`` of ``a.b``, so those count too (except the importer's own packages, which
    are running already). Only ``if TYPE_CHECKING:`` blocks are left out: they never run.
    ``importlib.import_module(name)`` is not an import statement: the registries load their
    providers by name that way (the built-in differentiators, the problem families).

    Also returns the underscore names imported from another package's modules."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    own = set(_ancestors(module)) | {module}
    found: set[str] = set()
    private: list[str] = []
    home = module if module in _PACKAGES else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                targets.append(sub if sub in modules else node.module)
                from_package = (
                    node.module if node.module in _PACKAGES else (node.module.rpartition(".")[0])
                )
                if (
                    sub not in modules
                    and a.name.startswith("_")
                    and not a.name.startswith("__")
                    and node.module.startswith("diffkit")
                    and from_package != home
                ):
                    private.append(f"{module} imports {node.module}.{a.name} (line {node.lineno})")
        for target in targets:
            found.update(m for m in [*_ancestors(target), target] if m in modules)
    return found - own, private


_PATHS = sorted(PACKAGE.rglob("*.py"))
_PACKAGES = {_module_name(p) for p in _PATHS if p.name == "__init__.py"}


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = {_module_name(p) for p in _PATHS}
    graph, private = {}, []
    for p in _PATHS:
        name = _module_name(p)
        graph[name], bad = _imports(p.read_text(), name, modules)
        private += bad
    return graph, private


def test_the_module_graph_has_no_cycle() -> None:
    graph, _ = _graph()
    assert graph["diffkit._core.registry"] >= {"diffkit._core.interface"}  # the walk sees imports
    assert "diffkit.differentiators" not in graph["diffkit._core.registry"]
    assert "diffkit.diagnosis" in graph["diffkit.testing.grads"]  # function-level imports too
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle among diffkit's modules: {' -> '.join(e.args[1])}")
    assert set(order) == set(graph)


def test_the_walk_catches_a_cycle_and_a_private_import() -> None:
    """The checker itself: an import inside a function closes a cycle; an underscore name
    from another package is reported; the same name within one package is not."""
    modules = {"diffkit.a", "diffkit.b", "diffkit.b.c"}
    deps, _ = _imports("def f():\n    import diffkit.b.c\n", "diffkit.a", modules)
    assert deps == {"diffkit.b", "diffkit.b.c"}
    deps, private = _imports("from diffkit.a import _x\n", "diffkit.b.c", modules)
    assert deps == {"diffkit.a"} and private and "diffkit.a._x" in private[0]
    _, private = _imports("from diffkit.b.d import _x\n", "diffkit.b.c", modules)
    assert not private


def test_no_module_imports_another_packages_private_name() -> None:
    _, private = _graph()
    assert not private, "; ".join(private)


def test_the_top_level_is_small() -> None:
    files = [p.name for p in PACKAGE.iterdir() if p.is_file()]
    assert len(files) <= 12, sorted(files)


def test_import_diffkit_and_its_jax_free_modules_import_no_jax() -> None:
    """The command line answers ``--help`` at once, and a sweep's worker sets its memory limit
    before JAX starts: these modules, and their packages, import no JAX."""
    code = (
        "import sys, diffkit, diffkit.harness, diffkit.harness.worker, diffkit.cli.parse, "
        "diffkit.html, diffkit.html.page, diffkit.harness.record\n"
        "print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _public(module: Any) -> list[str]:
    return list(getattr(module, "__all__", []))


@pytest.mark.parametrize(
    "package",
    ["diffkit", "diffkit.harness", "diffkit.html", "diffkit.testing", "diffkit.rules",
     "diffkit.symbolic", "diffkit.fd", "diffkit.checkpoint", "diffkit.sharding",
     "diffkit.diagnosis", "diffkit.differentiators", "diffkit.extend", "diffkit.examples",
     "diffkit.accuracy"],
)  # fmt: skip
def test_every_documented_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in _public(module) if getattr(module, name, None) is None]
    assert not missing, missing


def test_the_public_functions_are_functions_not_modules() -> None:
    """A package's public function and its submodule of the same name would shadow each
    other once the submodule is imported; no public name of diffkit is a module by mistake."""
    import diffkit.harness.families
    import diffkit.harness.sweeps  # noqa: F401

    for name in ("doctor", "explain", "compare", "sweep", "get", "check_grads"):
        assert callable(getattr(dk, name)) and not inspect.ismodule(getattr(dk, name)), name
    for name in ("problems", "sweep", "report", "compare"):
        assert not inspect.ismodule(getattr(dk.harness, name)), name
    assert not inspect.ismodule(dk.html.explain) and not inspect.ismodule(dk.html.report)


#: The layers of docs/ARCHITECTURE.md ("Layers"), bottom first: a module imports only from its
#: own package or from a package of a lower layer (the registries and lazy inits reach higher
#: ones by name, with importlib, which is not an import statement).
LAYERS = [
    ["_core"],
    ["rules", "checkpoint", "sharding", "accuracy", "examples"],
    ["fd", "symbolic", "extend", "sparse", "taylor"],
    ["differentiators", "operators"],
    ["diagnosis", "html"],
    ["testing"],
    ["harness"],
    ["cli", "pytest_plugin"],
    ["", "__main__"],  # diffkit/__init__.py, diffkit/__main__.py
]


def _layer_of(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if module.count(".") else ""
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return top, i
    raise AssertionError(f"{module} is in no layer of LAYERS: add its package to the table")


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``graph`` that go to another package of the same or a higher layer.
    The root ``diffkit`` is every module's parent package (its ``__init__`` imports nothing at
    run time), so an edge to it is not one."""
    upward = []
    for module, deps in graph.items():
        top, layer = _layer_of(module)
        for dep in deps - {"diffkit"}:
            dep_top, dep_layer = _layer_of(dep)
            if dep_top != top and dep_layer >= layer:
                upward.append(f"{module} (layer {layer}) imports {dep} (layer {dep_layer})")
    return sorted(upward)


def test_every_import_goes_down_the_layers() -> None:
    graph, _ = _graph()
    assert not _upward(graph), "; ".join(_upward(graph))
    # the check itself: an upward and a sideways import are reported, a downward one is not
    fake = {
        "diffkit._core.errors": {"diffkit.harness.record"},
        "diffkit.diagnosis.walk": {"diffkit.html.page", "diffkit.fd.stencils"},
    }
    assert len(_upward(fake)) == 2
