"""The HTML pages' data, without a browser: what the explain page and the report show equals
the worked example's numbers by hand, JAX's derivatives and the records; the files are
self-contained; the commands write them. (tests/test_browser.py reads them in Chromium.)"""

from __future__ import annotations

import html as html_module
import itertools
import json
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from _html import hand_worked_example, records, worked_page

import diffkit as dk
from diffkit.cli import main
from diffkit.cli.parse import build_parser
from diffkit.harness import Results
from diffkit.html import explain, load_results, report
from diffkit.html.explainer import DX, _tree_size
from diffkit.html.page import read_data


def jax_grad_of_the_example() -> list[float]:
    """jax.grad of the pytree form of the worked example (examples.tiny_network), float64."""
    with jax.enable_x64(True):
        ex = dk.examples.tiny_network()
        return list(ex.names(jax.grad(ex.fun)(*ex.args)).values())


@pytest.mark.slow  # ~1.6 s on 2 cores
def test_the_worked_example_page_shows_the_essays_numbers() -> None:
    data = worked_page().data
    loss, grads = hand_worked_example()
    assert f"{data['output']['value']:.8f}" == "0.46285625"
    assert data["output"]["value"] == pytest.approx(loss, rel=1e-14)
    shown = {g["name"]: g["grad"] for g in data["gradient"]}
    assert list(shown) == list(grads)
    for name, g in grads.items():
        assert shown[name] == pytest.approx(g, rel=1e-13, abs=1e-15), name
    np.testing.assert_allclose(list(shown.values()), jax_grad_of_the_example(), rtol=1e-13)
    nodes = {n["id"]: n for n in data["nodes"]}
    for name, g in grads.items():  # each input node carries its gradient as its adjoint
        assert nodes[name]["adjoint"] == [pytest.approx(g, rel=1e-13, abs=1e-15)]
    assert nodes[data["output"]["id"]]["adjoint"] == [1.0]


def local_by_hand(op: str, slot: int, args: list[float], out: float) -> float:
    """The local derivative d out / d args[slot] of the example's primitives, by calculus."""
    a = [*args, 0.0]
    return {
        "add": lambda: 1.0,
        "sub": lambda: 1.0 if slot == 0 else -1.0,
        "mul": lambda: a[1 - slot],
        "div": lambda: 1 / a[1] if slot == 0 else -a[0] / a[1] ** 2,
        "neg": lambda: -1.0,
        "exp": lambda: out,
        "log": lambda: 1 / a[0],
        "max": lambda: float(a[slot] > a[1 - slot]),
    }[op]()


def test_every_edge_carries_its_local_derivative_and_product() -> None:
    data = worked_page().data
    nodes = {n["id"]: n for n in data["nodes"]}
    value = lambda arg: float(arg["const"]) if "const" in arg else nodes[arg["node"]]["value"][0]  # noqa: E731
    assert len(data["edges"]) == 34
    for e in data["edges"]:
        to = nodes[e["to"]]
        args = [value(a) for a in to["args"]]
        want = local_by_hand(to["op"], e["slot"], args, to["value"][0])
        assert e["local"] == pytest.approx(want, rel=1e-13, abs=1e-300), e
        assert e["passed"] == [pytest.approx(want * to["adjoint"][0], rel=1e-13, abs=1e-300)]
    # a value used twice receives the sum of what its users pass back (t26 feeds log and sub)
    for n in data["nodes"]:
        users = [e["passed"][0] for e in data["edges"] if e["from"] == n["id"]]
        if users and n["adjoint"] is not None:
            assert n["adjoint"][0] == pytest.approx(math.fsum(users), rel=1e-13, abs=1e-300)


def test_the_method_views_agree_with_jax() -> None:
    m = worked_page().data["methods"]
    ref = jax_grad_of_the_example()
    # dual: one pass per input; each pass's output tangent is one partial, and the tangent of
    # hidden unit 1 (t13 = relu(w11 x1 + w12 x2 + b1), active) along w12 is x2 = 0.5
    assert [p["direction"] for p in m["dual"]["passes"]] == list(hand_worked_example()[1])
    np.testing.assert_allclose([p["output"] for p in m["dual"]["passes"]], ref, rtol=1e-13)
    assert m["dual"]["passes"][1]["tangents"]["t13"] == [0.5]
    assert m["dual"]["passes"][3]["tangents"]["t13"] == [0.0]  # w21 does not reach unit 1
    # symbolic: each printed expression, read back by SymPy, evaluates to the partial
    names = [g["name"] for g in worked_page().data["gradient"]]
    at = dict(zip(names, (0.3, 0.7, 0.1, -0.2, 0.5, 0.0, 0.6, -0.4, 0.1), strict=True))
    words = {"Maximum": sympy.Max, "Equal": sympy.Eq}
    words["Select"] = lambda c, a, b: sympy.Piecewise((a, c), (b, True))  # JAX's select_n
    for p, want in zip(m["symbolic"]["partials"], ref, strict=True):
        assert p["value"] == pytest.approx(want, rel=1e-13)
        expr = sympy.sympify(p["expr"], locals=words)
        assert float(expr.subs({sympy.Symbol(k): v for k, v in at.items()})) == pytest.approx(
            want, rel=1e-13
        )
    # fd: every estimate within its error bound of the true value; 2 evaluations per input
    # per step size (two step sizes, for the bound) and f(x) once
    assert m["fd"]["evaluations"] == 2 * 2 * 9 + 1
    for r, want in zip(m["fd"]["rows"], ref, strict=True):
        assert abs(r["estimate"] - want) <= r["bound"] < 1e-6
    rows = {r["method"]: r for r in m["all"]}
    assert list(rows) == ["fd", "symbolic", "dual", "jax-fwd", "tape", "jax-rev"]
    for name, r in rows.items():
        np.testing.assert_allclose(r["grad"], ref, rtol=1e-6 if name == "fd" else 1e-13)
    assert (rows["dual"]["passes"], rows["tape"]["passes"], rows["jax-rev"]["passes"]) == (9, 1, 1)


def test_the_layout_keeps_nodes_apart_and_edges_downward() -> None:
    data = worked_page().data
    nodes = {n["id"]: n for n in data["nodes"]}
    for e in data["edges"]:
        assert nodes[e["from"]]["y"] < nodes[e["to"]]["y"], e
    by_layer: dict[int, list[int]] = {}
    for n in data["nodes"]:
        by_layer.setdefault(n["layer"], []).append(n["x"])
    for xs in by_layer.values():
        xs.sort()
        assert all(b - a >= DX - 1 for a, b in itertools.pairwise(xs))
    assert max(len(xs) for xs in by_layer.values()) <= 5  # reads at 1280 px without zooming


def test_dead_relus_and_saturated_sigmoids_are_flagged() -> None:
    def f(a, b):
        return jax.nn.relu(a * b) + jax.nn.sigmoid(10.0 * a) + jnp.tanh(0.1 * b)

    data = explain(f, 1.0, -2.0, methods=False).data  # a*b < 0: dead; sigmoid(10): s(1-s) = 4.5e-5
    flags = {n["op"]: n["flags"] for n in data["nodes"]}
    assert flags["custom_jvp_call"][0].startswith("dead ReLU")
    assert flags["logistic"][0].startswith("saturated: local derivative 4.5e-05")
    assert flags["tanh"] == []  # tanh'(-0.2) = 0.96: fine
    s = 1 / (1 + math.exp(-10.0))
    assert [g["grad"] for g in data["gradient"]] == pytest.approx(
        [10 * s * (1 - s), 0.1 * (1 - math.tanh(-0.2) ** 2)]
    )
    alive = explain(f, 1.0, 2.0, methods=False).data
    assert all(not n["flags"] for n in alive["nodes"] if n["op"] == "custom_jvp_call")


def test_symbolic_expressions_too_big_to_print_are_measured_not_printed() -> None:
    x = sympy.Symbol("x")
    e, naive = x, lambda t: 1 + sum(naive(a) for a in t.args)
    for k in range(60):  # the logistic map: e holds the last step twice, so its tree doubles
        e = e * (1 - e)
        if k == 9:
            assert _tree_size(e, {}) == naive(e) > 2**10
    assert _tree_size(e, {}) > 2**60  # counted over the DAG: instantly
    f = lambda x: x * (1 - x) * (1 - x * (1 - x))  # noqa: E731
    shown = explain(f, 0.5).data["methods"]["symbolic"]["partials"][0]["expr"]
    assert sympy.sympify(shown).equals(sympy.diff(f(x), x))


def test_explain_refuses_what_it_cannot_show_in_one_line() -> None:
    with pytest.raises(dk.DiffkitError, match=r"argument 0 is a float64\[3\]; explain takes"):
        explain(lambda x: jnp.sum(x), jnp.ones(3))
    with pytest.raises(dk.DiffkitError, match=r"returns shape \[2\]; explain takes a function"):
        explain(lambda x: jnp.stack([x, x]), 1.0)


def test_the_pages_are_self_contained() -> None:
    page = worked_page()
    html = page.html
    assert read_data(html) == json.loads(json.dumps(page.data))
    assert not re.search(r"<link|<img|\ssrc=|\shref=|@import|url\(", html)
    assert set(re.findall(r"https?://[^\s\"'`]+", html)) == {"http://www.w3.org/2000/svg"}
    rep = report(Results(records())).html
    assert not re.search(r"<link|<img|\ssrc=|\shref=|@import|url\(", rep)
    assert html.count("<script") == rep.count("<script") == 2  # the data and the code
    inline = page._repr_html_()  # notebooks: the same page, in an iframe of its own
    assert inline.startswith("<iframe") and html_module.unescape(inline).count(html) == 1


def test_the_report_carries_the_records_fits_and_commands() -> None:
    recs = records()
    data = report(Results(recs), title="t").data
    assert [
        {k: v for k, v in r.items() if k not in ("command", "backend")} for r in data["records"]
    ] == recs
    fits = {(f["problem"], f["method"], f["dtype"]): f for f in data["fits"]}
    assert fits[("mlp", "fd", "float32")]["slope_time"] == pytest.approx(2.0)
    assert fits[("mlp", "tape", "float64")]["slope_ratio"] == pytest.approx(0.0, abs=1e-12)
    for (problem, method, dtype), f in fits.items():  # exact power laws: lines hit the points
        for x, y in f["line_time_median"]:
            rec = next(r for r in recs if (r["problem"], r["method"], r["dtype"], r["n"])
                       == (problem, method, dtype, x))  # fmt: skip
            assert y == pytest.approx(rec["time_median"], rel=1e-9)
    for r in data["records"]:  # the command measures the same case again
        args = build_parser().parse_args(r["command"].split()[1:])
        assert (args.problem, args.sizes, args.methods, args.dtype, args.backend) == (
            r["problem"], str(r["size"]), r["method"], r["dtype"], "cpu")  # fmt: skip
        assert args.budget == r["budget"]


def write_records(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    return path


def test_the_commands_write_the_pages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    page = tmp_path / "ex.html"
    assert main(["explain", "--html", str(page)]) == 0
    shown = read_data(page.read_text())
    _, grads = hand_worked_example()
    assert f"{shown['output']['value']:.8f}" == "0.46285625"
    assert [g["grad"] for g in shown["gradient"]] == pytest.approx(list(grads.values()), rel=1e-13)
    (tmp_path / "energy.py").write_text("import jax.numpy as jnp\n\ndef energy(x, k):\n"
                                        "    return 0.5 * k * x**2 + jnp.sin(x)\n")  # fmt: skip
    target = f"{tmp_path / 'energy.py'}:energy"
    assert main(["explain", target, "--at", "0.5,2", "--html", str(tmp_path / "e.html")]) == 0
    shown = read_data((tmp_path / "e.html").read_text())
    want = [2 * 0.5 + math.cos(0.5), 0.5 * 0.5**2]
    assert [g["grad"] for g in shown["gradient"]] == pytest.approx(want, rel=1e-13)
    write_records(tmp_path / "res")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "res"), "-o", str(out)]) == 0
    assert len(read_data(out.read_text())["records"]) == len(records())
    assert f"Wrote {out}" in capsys.readouterr().out.replace("\n", "")
    assert main(["report", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffkit: error: no results at")


def test_results_render_the_report_inline(tmp_path: Path) -> None:
    res = load_results([write_records(tmp_path / "a")])
    shown = res._repr_html_()
    assert shown.startswith("<table>") and "<iframe" in shown and "srcdoc=" in shown
    assert len(res) == len(records())
