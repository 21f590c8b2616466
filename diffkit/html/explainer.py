"""The explorable backprop page: a small function's computation graph with its forward values
and backward adjoints, step by step, and the six differentiators' views of the same gradient.

Everything the page shows is computed here by the library: the graph, values, adjoints,
local derivatives and products are the tape's (``Tape.walk``); the tangents of each forward
pass are the dual interpreter's, one pass per input; the partials' expressions are the
symbolic differentiator's; the estimates and their error bounds are ``fd``'s. The page's
script only lays them out and steps through them.

Example:
    >>> import jax.numpy as jnp
    >>> from diffkit.html import explain
    >>> page = explain(lambda x, y: jnp.sin(x) * y, 0.5, 2.0)  # every method's view too
    >>> page.data["output"]["value"], [g["grad"] for g in page.data["gradient"]]
    ... # doctest: +ELLIPSIS
    (0.958851..., [1.755165..., 0.479425...])
"""

from __future__ import annotations

import inspect
import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from diffkit._core.errors import DiffkitError
from diffkit._core.registry import get
from diffkit.html.page import Page, jsonable

if TYPE_CHECKING:  # the registry gives a Differentiator by name; these are the classes named
    from diffkit.differentiators.tape import TapeReverse
    from diffkit.fd.differentiator import FiniteDifferences
    from diffkit.symbolic.differentiator import Symbolic

__all__ = [
    "EXPRESSION_CHARS",
    "SATURATION",
    "SIX",
    "SYMBOLIC_BUDGET",
    "Explained",
    "explain",
    "layout",
]

#: A sigmoid or tanh whose local derivative is below this is flagged as saturated.
SATURATION = 0.01
#: The symbolic view's budget (seconds per stage, expression size): a function whose
#: expressions swell past it shows the budget's one-line error instead of hanging the page.
SYMBOLIC_BUDGET = {"time_budget": 10.0, "size_budget": 20_000}
#: Expressions longer than about this many characters are not printed (their size is).
EXPRESSION_CHARS = 4000

_BODY = """
<header>
  <h1 id="title"></h1>
  <p id="summary"></p>
  <p class="lead">Forward: each node computes its value from its inputs. Backward: each node's
  adjoint (&part;loss/&part;node) is passed to its inputs, multiplied by the local derivative
  on the edge. Click an edge to see its chain-rule term.</p>
</header>
<main>
  <section class="controls" aria-label="Step-through">
    <div class="buttons">
      <button type="button" id="first" aria-label="Go to the first step">&laquo; Start</button>
      <button type="button" id="prev" aria-label="Previous step">&#x25C0; Back</button>
      <button type="button" id="play" aria-pressed="false" aria-label="Play">&#x25B6; Play</button>
      <button type="button" id="next" aria-label="Next step">Next &#x25B6;</button>
      <button type="button" id="last" aria-label="Go to the last step">End &raquo;</button>
    </div>
    <label for="step">Step <output id="step-number" for="step">0</output></label>
    <input type="range" id="step" min="0" value="0" aria-describedby="status">
    <p id="status" role="status" aria-live="polite"></p>
  </section>
  <fieldset class="methods" id="methods">
    <legend>Method</legend>
  </fieldset>
  <div class="layout">
    <figure class="graph" id="graph-box">
      <figcaption id="graph-caption">Computation graph</figcaption>
      <svg id="graph" role="group" aria-labelledby="graph-caption"></svg>
    </figure>
    <aside class="side">
      <section id="method-view" aria-label="Method details"></section>
      <section id="edge-view" aria-label="Selected edge" aria-live="polite">
        <h2>Edge</h2><p class="hint">Click an edge (or focus it and press Enter).</p>
      </section>
    </aside>
  </div>
  <section aria-labelledby="grad-heading">
    <h2 id="grad-heading">Gradient</h2>
    <div class="scroll"><table id="gradient" class="numbers"></table></div>
  </section>
  <section aria-labelledby="all-heading">
    <h2 id="all-heading">Every method, side by side</h2>
    <div class="scroll"><table id="all-methods" class="numbers"></table></div>
  </section>
</main>
"""


class Explained(Page):
    """An explained function: ``data`` (what the page shows, computed by the library),
    ``html`` (the self-contained page), ``save(path)``; renders inline in notebooks."""

    script, body = "explain", _BODY


def explain(
    f: Callable[..., Any],
    *args: Any,
    names: Sequence[str] | None = None,
    title: str = "",
    dtype: str = "float64",
    methods: bool = True,
) -> Explained:
    """Explain ``f(*args)`` (scalar arguments, a scalar result): its graph, values, adjoints,
    local derivatives, and each method's view, as an explorable page. The arguments are
    taken in ``dtype`` (float64 by default, so the numbers are exact to the digits shown).
    ``methods=False`` leaves out the other methods' views (the tape's alone, quicker).

    Example:
        >>> import jax.numpy as jnp
        >>> page = explain(lambda w, b: jnp.maximum(w * 2.0 + b, 0.0), 0.5, -3.0, methods=False)
        >>> page.data["output"]["value"], [g["grad"] for g in page.data["gradient"]]
        (0.0, [0.0, 0.0])
        >>> [n["flags"] for n in page.data["nodes"] if n["flags"]]
        [['dead ReLU: its input is negative, so no gradient flows through it']]
    """
    if dtype not in ("float32", "float64"):
        raise DiffkitError(f"explain: dtype {dtype!r}: give float32 or float64")
    with jax.enable_x64(dtype == "float64"):
        return _explain(f, args, names, title, dtype, methods)


def _explain(
    f: Callable[..., Any], args: Sequence[Any], names: Any, title: str, dtype: str, methods: bool
) -> Explained:
    try:
        xs = [jnp.asarray(a, dtype) for a in args]
    except (TypeError, ValueError) as exc:
        raise DiffkitError(f"explain: the arguments must be numbers ({exc})") from None
    for i, x in enumerate(xs):
        if x.ndim != 0 or not jnp.issubdtype(x.dtype, jnp.floating):
            raise DiffkitError(
                f"explain: argument {i} is a {x.dtype}{list(x.shape)}; explain takes one float "
                "scalar per argument (write the function of its parameters one by one)"
            )
        if not bool(jnp.isfinite(x)):
            raise DiffkitError(
                f"explain: argument {i} is {float(x)}; a derivative is taken at a finite "
                "point: give finite numbers"
            )
    names = list(names) if names else _names(f, len(xs))
    walk = cast("TapeReverse", get("tape")).record(f, *xs).walk(names)
    out_value = walk["output"][1]
    if np.size(out_value) != 1:
        raise DiffkitError(
            f"explain: the function returns shape {list(np.shape(out_value))}; explain "
            "takes a function with one scalar result (a loss)"
        )
    data = _graph(walk)
    data["title"] = title or getattr(f, "__name__", "f")
    data["dtype"] = dtype
    left_out = {"error": "left out (explain(..., methods=False))"}
    data["methods"] = (
        _methods(f, xs, names, data)
        if methods
        else {
            "tape": {"passes": 1},
            "dual": left_out,
            "symbolic": left_out,
            "fd": left_out,
            "all": [],
        }
    )
    return Explained(data)


def _names(f: Callable[..., Any], n: int) -> list[str]:
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional[:n] if len(positional) >= n else [f"x{i}" for i in range(n)]


def _flat(x: Any) -> list[float]:
    return [float(v) for v in np.ravel(np.asarray(x, dtype=float))]


def _const(x: Any) -> str:
    a = np.ravel(np.asarray(x, dtype=float))
    return f"{a[0]:.8g}" if a.size == 1 else f"[{a.size} values]"


def _graph(walk: dict[str, Any]) -> dict[str, Any]:
    """Nodes, edges, steps and gradient from ``Tape.walk``'s rows, with a layout."""
    nodes: dict[str, dict[str, Any]] = {}
    alias: dict[str, str] = {}
    for name, value in walk["inputs"]:
        nodes[name] = {"id": name, "op": "input", "args": [], "value": _flat(value)}
        alias[name] = name
    forward = []
    for lhs, prim, args, ys in walk["forward"]:
        names = lhs.split(", ")
        nid = names[0]
        alias.update((n, nid) for n in names)
        nodes[nid] = {
            "id": nid,
            "op": prim,
            "args": [
                {"node": alias[a]} if isinstance(a, str) else {"const": _const(a)} for a in args
            ],
            "value": [v for y in ys for v in _flat(y)],
        }
        forward.append(nid)
    edges = [
        {"from": a["node"], "to": nid, "slot": i, "local": None, "passed": None}
        for nid in forward
        for i, a in enumerate(nodes[nid]["args"])
        if "node" in a
    ]
    rows: dict[str, list[Any]] = {}
    for lhs, _, _, local, upstream, passed in walk["backward"]:
        rows.setdefault(alias[lhs], []).append((local, upstream, passed))
    for nid, node_rows in rows.items():
        nodes[nid]["adjoint"] = [v for b in node_rows[0][1] for v in _flat(b)]
        mine = [e for e in edges if e["to"] == nid]
        for edge, (local, _, passed) in zip(mine, node_rows, strict=True):
            edge["local"] = None if local is None else float(np.ravel(local)[0])
            edge["passed"] = _flat(passed)
    for name, _, grad in walk["gradient"]:
        nodes[name]["adjoint"] = _flat(grad)
    out_id = alias[walk["output"][0]]
    for node in nodes.values():
        node.setdefault("adjoint", None)
        node["flags"] = _flags(node, nodes, edges)
    layout(list(nodes.values()), edges)
    return {
        "nodes": list(nodes.values()),
        "edges": edges,
        "output": {"id": out_id, "value": float(np.ravel(walk["output"][1])[0])},
        "steps": {"forward": forward, "backward": [n for n in reversed(forward) if n in rows]},
        "gradient": [
            {"name": n, "value": float(v), "grad": float(g)} for n, v, g in walk["gradient"]
        ],
    }


def _flags(node: dict[str, Any], nodes: dict[str, Any], edges: list[Any]) -> list[str]:
    """Dead ReLUs (output 0, every local derivative 0) and saturated sigmoids/tanh."""
    ins = [e for e in edges if e["to"] == node["id"] and e["local"] is not None]
    if not ins or len(node["value"]) != 1:
        return []
    value, local = node["value"][0], max(abs(e["local"]) for e in ins)
    consts = [a["const"] for a in node["args"] if "const" in a]
    relu = node["op"] == "custom_jvp_call" or (node["op"] == "max" and consts == ["0"])
    if relu and value == 0 and local == 0:
        return ["dead ReLU: its input is negative, so no gradient flows through it"]
    sigmoid = node["op"] in ("logistic", "tanh") or _is_sigmoid(node, nodes)
    if sigmoid and local < SATURATION:
        return [f"saturated: local derivative {local:.2g}, the gradient through it vanishes"]
    return []


def _is_sigmoid(node: dict[str, Any], nodes: dict[str, Any]) -> bool:
    """``1 / (1 + exp(u))`` written out, as in the worked example."""
    args = node["args"]
    if (
        node["op"] != "div"
        or len(args) != 2
        or args[0].get("const") != "1"
        or "node" not in args[1]
    ):
        return False
    den = nodes[args[1]["node"]]
    return (
        den["op"] == "add"
        and any(a.get("const") == "1" for a in den["args"])
        and any("node" in a and nodes[a["node"]]["op"] == "exp" for a in den["args"])
    )


#: Layout units (SVG pixels): horizontal and vertical distance between node centres.
DX, DY = 146, 80


def layout(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> None:
    """Set each node's ``layer`` and ``x``, ``y``: top to bottom in evaluation order (an input
    sits just above its first user), each layer ordered by its neighbours' positions
    (barycentres, a few sweeps down and up) so that edges cross less.

    Example:
        >>> ns = [{"id": "a", "op": "input"}, {"id": "b", "op": "input"}, {"id": "c", "op": "add"}]
        >>> layout(ns, [{"from": "a", "to": "c"}, {"from": "b", "to": "c"}])
        >>> [(n["id"], n["layer"], n["x"]) for n in ns]
        [('a', 0, 73), ('b', 0, 219), ('c', 1, 146)]
    """
    parents: dict[str, list[str]] = {n["id"]: [] for n in nodes}
    children: dict[str, list[str]] = {n["id"]: [] for n in nodes}
    for e in edges:
        parents[e["to"]].append(e["from"])
        children[e["from"]].append(e["to"])
    layer: dict[str, int] = {}
    for n in nodes:  # evaluation order: every parent comes first
        layer[n["id"]] = 1 + max((layer[p] for p in parents[n["id"]]), default=0)
        if n["op"] == "input":
            layer[n["id"]] = 0
    for n in nodes:  # inputs just above their first user
        if n["op"] == "input" and children[n["id"]]:
            layer[n["id"]] = min(layer[c] for c in children[n["id"]]) - 1
    depth = max(layer.values(), default=0) + 1
    rows: list[list[str]] = [[] for _ in range(depth)]
    for n in nodes:
        rows[layer[n["id"]]].append(n["id"])
    pos = {nid: float(i) for row in rows for i, nid in enumerate(row)}

    def place(row: list[str], near: dict[str, list[str]]) -> None:
        want = {nid: statistics.fmean(pos[m] for m in near[nid]) if near[nid] else pos[nid]
                for nid in row}  # fmt: skip
        row.sort(key=lambda nid: want[nid])
        width = len(row) - 1
        centre = statistics.fmean(want.values()) if row else 0.0
        for i, nid in enumerate(row):
            pos[nid] = centre + i - width / 2

    for _ in range(4):
        for row in rows[1:]:
            place(row, parents)
        for row in reversed(rows[:-1]):
            place(row, children)
    low = min(pos.values(), default=0.0)
    for n in nodes:
        n["layer"] = layer[n["id"]]
        n["x"] = round((pos[n["id"]] - low) * DX + DX / 2)
        n["y"] = round(layer[n["id"]] * DY + DY / 2)


#: The six built-in differentiators, in the order the page lists them.
SIX = ("fd", "symbolic", "dual", "jax-fwd", "tape", "jax-rev")


def _methods(f: Callable[..., Any], xs: list[Any], names: list[str], data: dict) -> dict:
    """Each differentiator's view: dual tangents per pass, the tape's one pass, symbolic
    partials, fd estimates with error bounds, and the six gradients side by side (those of
    fd, symbolic, dual and tape are the views' own numbers; jax-fwd and jax-rev computed)."""
    n, argnums = len(xs), tuple(range(len(xs)))
    views: dict[str, Any] = {"tape": {"passes": 1, "mode": "reverse"}}
    views["dual"] = _guard(lambda: _dual(f, xs, names, data))
    views["symbolic"] = _guard(lambda: _symbolic(f, xs, names))
    views["fd"] = _guard(lambda: _fd(f, xs, [g["grad"] for g in data["gradient"]]))
    grads = {
        "tape": lambda: [g["grad"] for g in data["gradient"]],
        "dual": lambda: [p["output"] for p in views["dual"]["passes"]],
        "symbolic": lambda: [p["value"] for p in views["symbolic"]["partials"]],
        "fd": lambda: [r["estimate"] for r in views["fd"]["rows"]],
    }
    rows = []
    for name in SIX:
        d = get(name)
        row: dict[str, Any] = {"method": name, "mode": d.mode, "passes": d.passes("grad", n)}
        if "error" in views.get(name, {}):
            row["error"] = views[name]["error"]
        else:
            computed = lambda: [float(g) for g in d.grad(f, argnums=argnums)(*xs)]  # noqa: B023, E731
            row.update(_guard(lambda: {"grad": grads.get(name, computed)()}))  # noqa: B023
        rows.append(row)
    views["all"] = rows
    return jsonable(views)


def _guard(view: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return view()
    except Exception as exc:  # a method that cannot do this function says why, on the page
        return {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0]}


def _dual(f: Callable[..., Any], xs: list[Any], names: list[str], data: dict) -> dict:
    """One forward pass of dual numbers per input: every node's tangent along it."""
    from diffkit.differentiators.dual import Dual, DualInterpreter

    class Watch(DualInterpreter):  # the dual interpreter, noting each node's tangent as it goes
        def __init__(self) -> None:
            self.seen: list[tuple[str, list[float]]] = []
            self.inside = 0
            self.special = {k: self._noted(k, h) for k, h in DualInterpreter.special.items()}

        def note(self, name: str, ys: Sequence[Any]) -> None:
            if not self.inside:
                tangents = [y.tangent if isinstance(y, Dual) else jnp.zeros_like(y) for y in ys]
                self.seen.append((name, [v for t in tangents for v in _flat(t)]))

        def _noted(self, name: str, handler: Callable) -> Callable:
            def handle(interp: Watch, eqn: Any, invals: list, site: Any) -> list:
                interp.inside += 1
                try:
                    ys = handler(interp, eqn, invals, site)
                finally:
                    interp.inside -= 1
                interp.note(name, ys)
                return ys

            return handle

        def apply(self, eqn: Any, invals: list, xs: list, rule: Any) -> list:
            ys = super().apply(eqn, invals, xs, rule)
            self.note(eqn.primitive.name, ys)
            return ys

    closed = jax.make_jaxpr(f)(*xs)
    ops = [(n["id"], n["op"]) for n in data["nodes"] if n["op"] != "input"]
    passes = []
    for i, name in enumerate(names):
        watch = Watch()
        duals = [
            Dual(x, jnp.ones_like(x) if j == i else jnp.zeros_like(x)) for j, x in enumerate(xs)
        ]
        out = watch.run(closed, duals)[0]
        if [p for p, _ in watch.seen] != [op for _, op in ops]:
            raise DiffkitError("the dual interpreter visits this function's nodes differently")
        tangents: dict[str, list[float] | float] = {
            nid: t for (nid, _), (_, t) in zip(ops, watch.seen, strict=True)
        }
        tangents[name] = 1.0
        tangents.update((m, 0.0) for m in names if m != name)
        out_dot = float(out.tangent) if isinstance(out, Dual) else 0.0
        passes.append({"direction": name, "tangents": tangents, "output": out_dot})
    return {"mode": "forward", "passes": passes}


def _symbolic(f: Callable[..., Any], xs: list[Any], names: list[str]) -> dict:
    """The symbolic differentiator's expression of each partial, and its value."""
    import sympy

    sym = cast("Symbolic", get("symbolic", **SYMBOLIC_BUDGET))
    argnums = tuple(range(len(xs)))
    form = sym.expressions(f, *xs, argnums=argnums)
    rename = {s[()]: sympy.Symbol(n) for s, n in zip(form.inputs, names, strict=True)}
    values = sym.grad(f, argnums=argnums)(*xs)
    consts = {
        str(s): _flat(v) for c, v in zip(form.consts, form.const_values, strict=True)
        for s in np.ravel(c)
    }  # fmt: skip

    def text(expr: Any) -> str:  # printing walks the tree: check its size on the DAG first
        size = _tree_size(expr, {})
        if size > EXPRESSION_CHARS // 4:
            return f"(an expression tree of {size:,} nodes: too long to show)"
        return str(expr.xreplace(rename))

    return {
        "mode": "symbolic",
        "passes": sym.passes("grad", len(xs)),
        "output": text(form.outputs[0][()]),
        "partials": [
            {"name": n, "expr": text(form.jacobian[0, i]), "value": float(v)}
            for i, (n, v) in enumerate(zip(names, values, strict=True))
        ],
        "consts": consts,
    }


def _tree_size(expr: Any, seen: dict[Any, int]) -> int:
    """Nodes of ``expr`` as a tree, counted over its shared subexpressions once each."""
    if expr not in seen:
        seen[expr] = 1 + sum(_tree_size(a, seen) for a in expr.args)
    return seen[expr]


def _fd(f: Callable[..., Any], xs: list[Any], reference: list[float]) -> dict:
    """``fd``'s estimates with their error bounds, and their distance from the tape's."""
    r = cast("FiniteDifferences", get("fd")).gradient(f, argnums=tuple(range(len(xs))))(*xs)
    return {
        "mode": "numerical",
        "scheme": f"{r.scheme}, order {r.order}",
        "evaluations": r.evaluations,
        "rows": [
            {"estimate": float(g), "bound": float(e), "step": float(h), "error": abs(float(g) - t)}
            for g, e, h, t in zip(r.grad, r.error, r.step, reference, strict=True)
        ],
    }
