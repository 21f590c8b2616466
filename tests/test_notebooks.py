"""Every notebook under notebooks/ runs top to bottom (small sizes), so none of them rots.

The notebooks run with Jupyter's inline backend, which renders every figure to PNG as a
reader sees it; just before each figure is rendered, a hook injected into the kernel checks
that each of its axes is labelled and that no plotted series is all NaN/inf (or, on a log
axis, has no positive point to draw). Every figure made must reach the reader: the run fails
on a figure created but never displayed (closed unshown, or drawn on the Agg backend, where
``plt.show()`` shows nothing), and the executed notebook must carry at least one PNG output per
figure shown. A warning printed by any cell fails the run, as does any cell's error (a
notebook states its measured facts as assertions, so a text that its numbers contradict
fails here too).
``benchmarks/notebooks_full.py`` runs the same checks on the full-size runs.

Claims about time (one method's time against another's, ratios to the forward pass) are
asserted in full mode only (``if not QUICK:`` in the notebooks): at quick mode's small sizes
on a shared machine a timing says nothing, so the quick run prints them and asserts
everything else (accuracy, pass and evaluation counts, memory, refusals).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.notebooks  # the unit tier deselects it: -m "not notebooks"

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
STORIES = ["01", "02", "03", "04", "05", "06"]  # must be there; later numbers may join

# Run in the kernel before the notebook's first cell: wrap the renderer of every figure.
_CHECK_FIGURES = """
import numpy as _np
from matplotlib.backend_bases import FigureCanvasBase as _Canvas

import sys as _sys
from matplotlib.figure import Figure as _Figure

_FIGURE_PROBLEMS, _FIGURES, _CREATED = [], [], []
_render = _Canvas.print_figure
_make = _Figure.__init__


def _record_creation(self, *args, **kwargs):  # every figure, with the cell that made it
    _make(self, *args, **kwargs)
    _CREATED.append((self, get_ipython().execution_count))


_Figure.__init__ = _record_creation


def _for_the_reader():  # rendered by IPython's display machinery (the inline backend's show)
    frame = _sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.endswith("pylabtools.py"):
            return True
        frame = frame.f_back
    return False


def _labelled(ax, which):
    label = "get_xlabel" if which == "x" else "get_ylabel"
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    return any(getattr(a, label)().strip() for a in shared.get_siblings(ax))


def _all_bad(values):
    try:
        values = _np.asarray(values, dtype=float)
    except (TypeError, ValueError):  # categorical data: not numbers to check
        return False
    return values.size > 0 and not _np.isfinite(values).any()


def _invisible_on_log(values):
    try:
        values = _np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return values.size > 0 and not (values[_np.isfinite(values)] > 0).any()


def _check_then_render(self, *args, **kwargs):
    fig = self.figure
    if _for_the_reader():
        fig._shown_to_the_reader = True
    if not getattr(fig, "_checked_by_the_tests", False):  # once per figure (ids are reused)
        fig._checked_by_the_tests = True
        _FIGURES.append(fig.number)
        where = f"figure {len(_FIGURES)}"
        for ax in fig.axes:
            if not ax.axison or hasattr(ax, "_colorbar"):
                continue
            name = f"{where}, axes {ax.get_title()!r}"
            for which in "xy":
                if not _labelled(ax, which):
                    _FIGURE_PROBLEMS.append(f"{name}: no {which} label")
            for line in ax.get_lines():
                if _all_bad(line.get_ydata()) or _all_bad(line.get_xdata()):
                    _FIGURE_PROBLEMS.append(f"{name}: series {line.get_label()!r} is all NaN/inf")
                elif ax.get_yscale() == "log" and _invisible_on_log(line.get_ydata()):
                    _FIGURE_PROBLEMS.append(f"{name}: series {line.get_label()!r} has no point > 0")
            for coll in ax.collections:
                offsets = _np.asarray(coll.get_offsets())
                if offsets.size and _all_bad(offsets):
                    _FIGURE_PROBLEMS.append(f"{name}: points {coll.get_label()!r} all NaN/inf")
    return _render(self, *args, **kwargs)


_Canvas.print_figure = _check_then_render
"""

_REPORT_FIGURES = """
import matplotlib as _mpl

assert "inline" in _mpl.get_backend(), (
    f"the notebook ended on matplotlib's {_mpl.get_backend()!r} backend: plt.show() shows "
    "nothing there; leave Jupyter's inline backend alone (diffkit.harness.plots.pyplot does)"
)
_UNSEEN = [
    f"a figure made in cell In[{_cell}] ({', '.join(a.get_title() for a in _fig.axes)!r})"
    for _fig, _cell in _CREATED
    if not getattr(_fig, "_shown_to_the_reader", False)
]
assert not _UNSEEN, "never displayed: " + "; ".join(_UNSEEN) + " (plt.show() it)"
assert not _FIGURE_PROBLEMS, "; ".join(_FIGURE_PROBLEMS)
_SHOWN = sum(1 for _fig, _ in _CREATED if getattr(_fig, "_shown_to_the_reader", False))
print(f"{len(_FIGURES)} figures checked, {_SHOWN} shown")
"""

_WARNING = re.compile(r"\w*Warning\b|\bWARNING\b")


def run_notebook(path: Path, quick: bool, timeout: int = 600) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` (``quick``: with ``DIFFKIT_QUICK=1``) in a fresh
    kernel with the inline backend and the figure checks; raise on a cell's error, a figure
    problem or a printed warning, else return the executed notebook.
    """
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        f"{path.name} has committed outputs; strip them"
    )
    nb.cells.insert(0, nbformat.v4.new_code_cell(_CHECK_FIGURES))
    nb.cells.append(nbformat.v4.new_code_cell(_REPORT_FIGURES))
    saved = {k: os.environ.get(k) for k in ("DIFFKIT_QUICK", "MPLBACKEND", "PYTHONPATH")}
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # renders PNGs
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    if quick:
        os.environ["DIFFKIT_QUICK"] = "1"
    else:
        os.environ.pop("DIFFKIT_QUICK", None)
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()  # raises CellExecutionError naming the failing cell
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for index, cell in enumerate(nb.cells[1:-1]):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            assert not _WARNING.search(text), f"{path.name}, cell {index}: a warning\n{text}"
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)  # a stream may split
    shown = re.search(r"figures checked, (\d+) shown", printed)
    assert shown, f"{path.name}: the figure report did not run\n{printed}"
    images = image_outputs(nb)
    assert int(shown[1]) >= 1 and len(images) >= int(shown[1]), (
        f"{path.name}: {shown[1]} figures shown but {len(images)} PNG outputs in the executed "
        "notebook; every notebook shows its measurements as figures"
    )
    return nb


def image_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """The base64 PNGs the executed notebook carries, in order (the reader sees these)."""
    return [
        output["data"]["image/png"]
        for cell in nb.cells[1:-1]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    nb = run_notebook(path, quick=True)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)  # a stream may split
    assert "figures checked" in printed, printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_quick_mode_says_its_timings_are_illustrations(path: Path) -> None:
    """A notebook that keeps a claim for full mode (``if not QUICK:``) prints, in quick mode,
    a banner saying that the timings it shows are illustrations, not measurements."""
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    if "not QUICK" not in source:
        pytest.skip("no claim kept for full mode")
    assert re.search(r"if QUICK:\s+print\(\s+\"QUICK MODE: .*?illustration", source, re.S), (
        f"{path.name}: print a banner in quick mode ('QUICK MODE: ... timings ... are "
        "illustrations ...'), as notebooks 04 and 05 do"
    )


def test_every_story_is_there() -> None:
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers[: len(STORIES)] == STORIES, numbers
    assert all(n.isdigit() for n in numbers) and len(set(numbers)) == len(numbers), numbers


def test_the_figure_check_catches_an_unlabelled_axis_and_an_all_inf_series(tmp_path: Path) -> None:
    bad = nbformat.v4.new_notebook()
    bad.cells = [
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\n"
            "ax.plot([1, 2], [float('inf'), float('nan')], label='exploded')\n"
            "ax.set_xlabel('step')\n"
            "plt.show()"
        )
    ]
    path = tmp_path / "bad.ipynb"
    nbformat.write(bad, path)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        run_notebook(path, quick=True)
    assert "no y label" in str(info.value) and "'exploded' is all NaN/inf" in str(info.value)


def test_a_printed_warning_fails(tmp_path: Path) -> None:
    noisy = nbformat.v4.new_notebook()
    noisy.cells = [nbformat.v4.new_code_cell("import numpy as np\nnp.log(np.zeros(1))")]
    path = tmp_path / "noisy.ipynb"
    nbformat.write(noisy, path)
    with pytest.raises(AssertionError, match="RuntimeWarning"):
        run_notebook(path, quick=True)


def _one_cell(tmp_path: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    path = tmp_path / "one.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_figure_never_displayed_fails(tmp_path: Path) -> None:
    path = _one_cell(
        tmp_path,
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2], [3, 4])\n"
        "ax.set(xlabel='x', ylabel='y', title='made, then closed unshown')\n"
        "plt.close(fig)\n"
        "fig2, ax2 = plt.subplots()\n"
        "ax2.plot([1, 2], [3, 4])\n"
        "ax2.set(xlabel='x', ylabel='y', title='shown')\n"
        "plt.show()",
    )
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        run_notebook(path, quick=True)
    assert "never displayed" in str(info.value) and "made, then closed unshown" in str(info.value)
    assert "'shown'" not in str(info.value)


def test_the_agg_backend_inside_a_notebook_fails(tmp_path: Path) -> None:
    path = _one_cell(
        tmp_path,
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2], [3, 4])\n"
        "ax.set(xlabel='x', ylabel='y')\n"
        "plt.show()",
    )
    with pytest.raises(nbclient.exceptions.CellExecutionError, match=r"'[Aa]gg' backend"):
        run_notebook(path, quick=True)


def test_diffkit_pyplot_keeps_the_inline_backend(tmp_path: Path) -> None:
    path = _one_cell(
        tmp_path,
        "from diffkit.harness.plots import pyplot\n"
        "plt = pyplot()\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2], [3, 4])\n"
        "ax.set(xlabel='x', ylabel='y')\n"
        "plt.show()",
    )
    nb = run_notebook(path, quick=True)
    assert len(image_outputs(nb)) == 1
