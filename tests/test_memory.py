"""The memory study: depth problems, memory_sweep's front, its plot and the CLI command."""

import jax
import pytest

import diffkit as dk
from diffkit import checkpoint as ck
from diffkit.accuracy import rho_tree
from diffkit.cli import main
from diffkit.harness.memory import memory_sweep, method_spec

#: The tests of the rnn memory front share its sweep (~1.5 s on 2 cores, paid by the first).
NEEDS_FRONT = pytest.mark.slow


@pytest.fixture(scope="module")
def front():
    methods = ["tape", "tape@sqrt", "tape@revolve(2)", "jax-rev@nothing_saveable"]
    return memory_sweep("rnn", [16, 64], methods, min_time=0.001, accuracy=False)


@NEEDS_FRONT
def test_memory_grows_with_depth_as_the_schedule_says(front):
    slopes = front.slopes()
    # store-all keeps L states; sqrt about 2 sqrt(L); revolve(2) two, whatever L
    assert slopes["tape"] > 0.6
    assert slopes["tape@revolve(2)"] == pytest.approx(0.0, abs=0.02)
    assert slopes["tape@revolve(2)"] < slopes["tape@sqrt"] < slopes["tape"]
    deep = {label: front.get(label, 64)["xla_temp_bytes"] for label in front.labels}
    assert deep["tape@revolve(2)"] < deep["tape@sqrt"] < deep["tape"]
    # the tape's store-all keeps what jax.checkpoint(nothing_saveable) on each step keeps
    assert deep["tape"] <= 1.2 * deep["jax-rev@nothing_saveable"]
    assert front.get("tape@revolve(2)", 64)["recomputed"] == ck.revolve_steps(64, 2) - 63
    assert front.get("tape@sqrt", 16)["recomputed"] == 9  # 4 segments of 4: 3 x 3
    assert front.get("jax-rev@nothing_saveable", 16)["recomputed"] is None
    relative = front.relative()
    assert relative["tape"] == (1.0, 1.0)
    assert relative["tape@revolve(2)"][1] < 0.5


@NEEDS_FRONT
def test_front_table_and_plot(front, tmp_path):
    table = front.table()
    assert "tape@revolve(2)" in table and "XLA temp" in table
    png = front.plot(tmp_path / "front.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["deep-mlp", "resnet", "rnn"])
def test_depth_problems_schedules_agree(x64, name):
    inst = dk.harness.get_problem(name, width=4, batch=3).build(9, "float64")
    fun, args = inst.fun, inst.args
    reference = jax.grad(fun)(*args)
    store_all = jax.jit(dk.get("tape").grad(fun))(*args)
    assert rho_tree(store_all, reference) < 1e-13
    revolve = jax.jit(dk.get("tape", checkpoint="revolve", budget=2).grad(fun))(*args)
    assert rho_tree(revolve, store_all) <= 1e-12
    jr = dk.get("jax-rev", checkpoint="sqrt", policy="nothing_saveable")
    assert rho_tree(jax.jit(jr.grad(fun))(*args), reference) <= 1e-12
    n_layers = 9 if name != "rnn" else 1
    assert inst.n == n_layers * (4 * 4 + 4) + (4 * 8 if name == "rnn" else 0)


def test_method_specs():
    assert method_spec("tape") == ("tape", {})
    assert method_spec("tape@revolve(8)") == ("tape", {"checkpoint": "revolve(8)"})
    assert method_spec("jax-rev@dots_saveable") == ("jax-rev", {"policy": "dots_saveable"})
    with pytest.raises(dk.DiffkitError, match="policies are jax-rev's"):
        method_spec("tape@nothing_saveable")
    with pytest.raises(dk.DiffkitError, match="two checkpoint options"):
        method_spec("tape@sqrt+every(3)")


def test_cli_memory(tmp_path, capsys):
    code = main(
        ["memory", "--problem", "resnet", "--depths", "2,8", "--methods", "tape@every(2)",
         "--min-time", "0.001", "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "tape@every(2)" in out and "slope" in out
    assert (tmp_path / "memory-resnet.png").exists()
    lines = [ln.split() for ln in out.splitlines() if ln.strip().startswith("8 ")]
    assert [ln[1] for ln in lines] == ["tape@every(2)"]
    assert lines[0][4] == "3"  # every(2) over 8 steps recomputes 3 steps
    assert float(lines[0][5]) < 1e-5  # rho against the float64 reference
