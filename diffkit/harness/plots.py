"""Every figure of diffkit, as PNG files: sweep results, expression swell, finite-difference
error by step. matplotlib is imported only when plotting, by :func:`pyplot`, with the
non-interactive Agg backend (a Jupyter kernel keeps its own, so notebooks show figures)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffkit.harness.record import SPARSE

if TYPE_CHECKING:
    from diffkit.harness.record import Record
    from diffkit.harness.results import Results

__all__ = [
    "PALETTE",
    "colours",
    "figure",
    "memory_figure",
    "plot_results",
    "pyplot",
    "steps_figure",
    "swell_figure",
]


#: The colours of methods, in every PNG and on the report page (matplotlib's tab10).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
#: The built-in methods keep their colour whatever else a result holds.
_FIXED = ("jax-rev", "jax-fwd", "tape", "dual", "fd", "symbolic", "forward-grad", "spsa")


def colours(methods: Iterable[str]) -> dict[str, str]:
    """One colour per method: the built-ins' fixed, the others' from the rest of
    :data:`PALETTE` in sorted order (cycling when there are more methods than colours).
    The PNGs and the report page both take their colours from here.

    Example:
        >>> colours(["tape", "mine", "jax-rev"])
        {'jax-rev': '#1f77b4', 'mine': '#bcbd22', 'tape': '#2ca02c'}
    """
    names = sorted(set(methods))
    bases = sorted({m.removesuffix(SPARSE) for m in names})
    free = [c for i, c in enumerate(PALETTE) if i >= len(_FIXED)]
    others = [m for m in bases if m not in _FIXED]
    out = {m: PALETTE[_FIXED.index(m)] for m in bases if m in _FIXED}
    out.update((m, free[i % len(free)]) for i, m in enumerate(others))
    out.update((m, _darker(out[m.removesuffix(SPARSE)])) for m in names if m.endswith(SPARSE))
    return {m: out[m] for m in names}


def _darker(colour: str) -> str:
    """A compressed Jacobian's (``name+sparse``) colour: its method's, 45% darker.

    Example:
        >>> _darker("#ffffff")
        '#8c8c8c'
    """
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c * 0.55):02x}" for c in rgb)


def pyplot() -> Any:
    """matplotlib.pyplot, the one set-up of every plot: the non-interactive Agg backend
    (headless PNGs for the command line), except inside a Jupyter kernel, where the
    notebook's own backend (inline) is left alone so that ``plt.show()`` still shows."""
    import matplotlib

    if not _inside_jupyter():
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _inside_jupyter() -> bool:
    """Whether this process is a Jupyter (IPython) kernel: its shell has a kernel."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def plot_results(results: Results, folder: Path) -> list[Path]:
    """One PNG per (problem, dtype): run time (primal dotted) with each method's fitted
    log-log slope drawn dashed and given in the legend, derivative/primal ratio, and rho
    against the float64 reference, each against n (m where only the outputs vary, the size
    where neither does: steps, depth). Where every method has one size only, a dot plot
    instead: one labelled row per method. Each method has its colour of :func:`colours`."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    ok = results.filter(outcome="ok")
    fits = {(f["problem"], f["method"], f["dtype"]): f for f in ok.fit_exponents()}
    palette = colours(r["method"] for r in results)
    for problem, dtype in sorted({(r["problem"], r["dtype"]) for r in ok}):
        recs = ok.filter(problem=problem, dtype=dtype).records
        fig = figure(recs, problem, dtype, fits, plt, palette)
        paths.append(_save(fig, folder / f"{problem}-{dtype}.png"))
    return paths


_PANELS = (
    ("time_median", "run time [s]", "run time"),
    ("ratio", "derivative / primal time", "cost ratio"),
    ("rho_max", "max rho vs float64 reference", "accuracy"),
)


def figure(
    recs: list[Record],
    problem: str,
    dtype: str,
    fits: dict[Any, Any],
    plt: Any,
    palette: dict[str, str] | None = None,
) -> Any:
    """The three panels of one (problem, dtype) as a matplotlib figure; ``palette`` maps
    methods to colours (default: :func:`colours` of these records' methods)."""
    methods = sorted({r["method"] for r in recs})
    rows = -(-len(methods) // 2)  # many methods: the legends go under the panels, 2 columns
    below = len(methods) > 6 and len({r["size"] for r in recs}) > 1
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2 + (0.2 * rows if below else 0.0)))
    palette = palette or colours(methods)
    sizes = sorted({r["size"] for r in recs})
    dots = len(sizes) == 1
    if dots:
        _dots(recs, methods, axes, problem, dtype, palette)
    else:
        sizes = _lines(recs, methods, axes, problem, dtype, fits, palette)
    for ax in axes:
        # Plain "1e-05" labels and no minor ticks (drawing cost: benchmarks/README.md).
        ax.minorticks_off()
        _plain_ticks(ax.xaxis)
        if not dots:  # (a dot plot's y axis names the methods)
            _plain_ticks(ax.yaxis)
            if len(sizes) <= 8:  # few sizes: tick exactly the sizes measured
                ax.set_xticks(sizes)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0] and below:
            ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
        elif ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    height = fig.get_figheight()
    bottom = (0.55 + 0.2 * rows) / height if below else 0.13
    fig.subplots_adjust(left=0.08, right=0.98, bottom=bottom, top=0.9, wspace=0.35)
    return fig


def _dots(  # type: ignore[no-untyped-def]
    recs: list[Record], methods: list[str], axes: Any, problem: str, dtype: str, palette
):
    """One size: a row per method, its value marked and written next to the dot."""
    r0 = recs[0]
    rows = range(len(methods))
    for ax, (field, label, title) in zip(axes, _PANELS, strict=True):
        got = {r["method"]: r.get(field) for r in recs}
        for i, method in enumerate(methods):
            value = got.get(method)
            if value:
                ax.plot([value], [i], "o", color=palette[method])
                ax.annotate(f" {value:.3g}", (value, i), va="center", fontsize=8)
        if field == "time_median":
            primal = r0.get("primal_median")
            if primal:
                ax.axvline(primal, ls=":", color="gray", label=f"primal {primal:.3g} s")
        ax.set_xscale("log")
        ax.margins(x=0.3)  # room for the values written right of the dots
        ax.set_yticks(list(rows), methods)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.set(xlabel=label, title=title if field != "time_median" else "")
    where = f"n={r0.get('n')}, m={r0.get('m')}"
    axes[0].set_title(f"{problem} {dtype} ({where})")


def _lines(recs, methods, axes, problem, dtype, fits, palette) -> list[Any]:  # type: ignore[no-untyped-def]
    """Each method's series against n, else m, else the size (what varies); returns the
    x values measured."""
    ax_t, ax_r, ax_a = axes
    varies = {k: len({r[k] for r in recs}) > 1 for k in ("n", "m")}
    axis = "n" if varies["n"] else "m" if varies["m"] else "size"
    # Markers of methods that land on one another stay visible: each its own shape and size.
    shapes = "os^vD<>ph*"
    for i, method in enumerate(methods):
        rs = sorted((r for r in recs if r["method"] == method), key=lambda r: r[axis])
        xs = [r[axis] for r in rs]
        colour = palette[method]
        filled = colour if method.endswith(SPARSE) else "none"  # compressed: filled markers
        style = dict(marker=shapes[i % len(shapes)], ms=9 - 0.6 * (i % 6), mfc=filled, color=colour)
        times = [r["time_median"] for r in rs]
        fit = fits.get((problem, method, dtype), {})
        slope = fit.get("slope_time") if fit.get("against") == axis else None
        label = method if slope is None else f"{method} (slope {slope:.2f})"
        if slope is not None and fit.get("noisy"):
            label += ", noisy"
        ax_t.loglog(xs, times, "-", label=label, **style)
        ax_t.loglog(xs, [r["primal_median"] for r in rs], ":", color=colour)
        if slope is not None:  # the fitted power law over the sizes it was fitted on
            lo, hi = fit["range"]
            used = [(x, t) for x, t in zip(xs, times, strict=True) if lo <= x <= hi]
            cx, ct = (float(np.exp(np.mean(np.log(v)))) for v in zip(*used, strict=True))
            ends = np.array([lo, hi], dtype=float)
            ax_t.loglog(ends, ct * (ends / cx) ** slope, "--", color=colour)
        ax_r.loglog(xs, [r["ratio"] for r in rs], "-", label=method, **style)
        rho = [(x, r["rho_max"]) for x, r in zip(xs, rs, strict=True) if r.get("rho_max")]
        if rho:
            ax_a.loglog(*zip(*rho, strict=True), "-", label=method, **style)
    xlabel = {"n": "n (inputs)", "m": "m (outputs)"}.get(axis) or _size_label(problem, recs)
    ax_t.set(xlabel=xlabel, ylabel="run time [s] (dotted: primal)", title=f"{problem} {dtype}")
    ax_r.set(xlabel=xlabel, ylabel="derivative / primal time", title="cost ratio")
    ax_a.set(xlabel=xlabel, ylabel="max rho vs float64 reference", title="accuracy")
    return sorted({r[axis] for r in recs})


def _size_label(problem: str, recs: list[Record]) -> str:
    """The x label of a problem whose n and m stay put: what its size means (steps, depth),
    with the fixed n and m."""
    from diffkit._core.errors import DiffkitError
    from diffkit.harness.families import get_problem

    try:
        means = get_problem(problem).size_means
    except DiffkitError:  # records of a family not registered here
        means = "size"
    return f"{means} (n={recs[0].get('n')}, m={recs[0].get('m')} fixed)"


def _plain_ticks(axis: Any) -> None:
    """Plain labels on a log axis, with at least three ticks even within one decade."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    if axis.get_scale() != "log":
        return
    lo, hi = sorted(axis.axes.get_ylim() if axis.axis_name == "y" else axis.axes.get_xlim())
    if lo <= 0 or not np.isfinite([lo, hi]).all():
        return
    inside = [t for t in axis.get_majorticklocs() if lo <= t <= hi]
    if len(inside) < 3:  # round values spread over the range, with as many significant
        for digits in (2, 3, 4, 6):  # digits as a narrow range (ratios near 1) needs
            rounded = {float(f"{t:.{digits}g}") for t in np.geomspace(lo, hi, 5)}
            ticks = sorted(t for t in rounded if lo <= t <= hi)
            if len(ticks) >= 3:
                break
        axis.set_major_locator(FixedLocator(ticks))


def swell_figure(reports: list[tuple[int, Any]], name: str, size_means: str, path: Path) -> Path:
    """Expression swell against size: the derivative as a tree, after CSE and as a DAG, the
    function as a tree and its jaxpr; ``reports`` are (size, SwellReport) pairs."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    xs = [s for s, _ in reports]
    for label, get in (
        ("f' as a tree", lambda r: r.derivative.tree_ops),
        ("f' after CSE", lambda r: r.derivative.cse_ops),
        ("f' DAG nodes", lambda r: r.derivative.dag_nodes),
        ("f as a tree", lambda r: r.function.tree_ops),
        ("jaxpr equations", lambda r: r.jaxpr_eqns),
    ):
        ys = [get(r) for _, r in reports]
        if all(y for y in ys):
            ax.semilogy(xs, ys, "o-", label=label)
    ax.set(xlabel=size_means, ylabel="operations", title=f"expression swell: {name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def steps_figure(sweeps: dict[str, Any], eps: float, title: str, path: Path) -> Path:
    """Finite-difference error against step size, one curve per rule (``fd.step_sweep``
    results by rule name), each rule's optimal step starred; errors floored at eps/10."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    floor = eps / 10
    for spec, s in sweeps.items():
        (line,) = ax.loglog(s.steps, np.maximum(s.errors, floor), "o-", ms=3, label=spec)
        ax.loglog(
            [s.optimal_step], [max(s.optimal_error, floor)], "*", ms=14, color=line.get_color()
        )
    ax.set(xlabel="step h", ylabel="max rho vs float64 reference", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="* optimal step")
    fig.tight_layout()
    return _save(fig, path)


def memory_figure(front: Any, path: Path) -> Path:
    """A :class:`~diffkit.harness.memory.MemoryFront`: XLA temporaries against run time at
    the deepest depth, both relative to the baseline method, one point per method, the
    essay's checkpointing claim (1.3x time, 0.4x memory) marked; and temporaries against
    depth, log-log, each method's fitted slope in the legend."""
    fig, (ax_f, ax_d) = pyplot().subplots(1, 2, figsize=(13, 4.8))
    slopes = front.slopes()
    for i, (label, (t, m)) in enumerate(front.relative().items()):
        ax_f.plot([t], [m], "o", ms=9, color=f"C{i % 10}", label=label)
        ax_f.annotate(f" {label}", (t, m), fontsize=8, va="center")
    claim = front.claim
    ax_f.plot(
        [claim["time"]], [claim["memory"]], "k*", ms=16, label="essay: +30% time, -60% memory"
    )
    ax_f.set(xscale="log", yscale="log", title=f"{front.problem}, L={front.depths[-1]}")
    ax_f.set(xlabel=f"run time / {front.baseline}", ylabel=f"XLA temporaries / {front.baseline}")
    for i, label in enumerate(front.labels):
        pts = sorted(
            (r["size"], r["xla_temp_bytes"])
            for r in front.records
            if r["label"] == label and r["outcome"] == "ok" and r.get("xla_temp_bytes")
        )
        if pts:
            slope = f" (slope {slopes[label]:.2f})" if label in slopes else ""
            ax_d.loglog(*zip(*pts, strict=True), "o-", color=f"C{i % 10}", label=label + slope)
    ax_d.set(
        xlabel="depth L (scan steps)", ylabel="XLA temporaries [bytes]", title="memory vs depth"
    )
    for ax in (ax_f, ax_d):
        ax.minorticks_off()
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_d.set_xticks(front.depths)  # the depths measured
    fig.tight_layout()
    return _save(fig, path)
