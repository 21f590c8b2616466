"""PNG plots of sweep results (matplotlib, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffkit.harness.results import Results

__all__ = ["plot_results"]


def plot_results(results: Results, folder: Path) -> list[Path]:
    """One PNG per (problem, dtype): run time (primal dotted) with each method's fitted
    log-log slope drawn dashed and given in the legend, derivative/primal ratio, and rho
    against the float64 reference, each against n (m for wide outputs)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    ok = results.filter(outcome="ok")
    fits = {(f["problem"], f["method"], f["dtype"]): f for f in ok.fit_exponents()}
    for problem, dtype in sorted({(r["problem"], r["dtype"]) for r in ok}):
        recs = ok.filter(problem=problem, dtype=dtype).records
        axis = (
            "n"
            if len({r["n"] for r in recs}) > 1
            else "m"
            if len({r["m"] for r in recs}) > 1
            else "size"
        )
        fig, (ax_t, ax_r, ax_a) = plt.subplots(1, 3, figsize=(15, 4.2))
        for method in sorted({r["method"] for r in recs}):
            rs = sorted((r for r in recs if r["method"] == method), key=lambda r: r[axis])
            xs = [r[axis] for r in rs]
            times = [r["time_median"] for r in rs]
            fit = fits.get((problem, method, dtype), {})
            slope = fit.get("slope_time") if fit.get("against") == axis else None
            label = method if slope is None else f"{method} (slope {slope:.2f})"
            (line,) = ax_t.loglog(xs, times, "o-", label=label)
            ax_t.loglog(xs, [r["primal_median"] for r in rs], ":", color=line.get_color())
            if slope is not None:  # the fitted power law over the sizes it was fitted on
                lo, hi = fit["range"]
                used = [(x, t) for x, t in zip(xs, times, strict=True) if lo <= x <= hi]
                cx, ct = (float(np.exp(np.mean(np.log(v)))) for v in zip(*used, strict=True))
                ends = np.array([lo, hi], dtype=float)
                ax_t.loglog(ends, ct * (ends / cx) ** slope, "--", color=line.get_color())
            ax_r.loglog(xs, [r["ratio"] for r in rs], "o-", label=method)
            rho = [(x, r["rho_max"]) for x, r in zip(xs, rs, strict=True) if r.get("rho_max")]
            if rho:
                ax_a.loglog(*zip(*rho, strict=True), "o-", label=method)
        ax_t.set(xlabel=axis, ylabel="run time [s] (dotted: primal)", title=f"{problem} {dtype}")
        ax_r.set(xlabel=axis, ylabel="derivative / primal time", title="cost ratio")
        ax_a.set(xlabel=axis, ylabel="max rho vs float64 reference", title="accuracy")
        for ax in (ax_t, ax_r, ax_a):
            # Plain "1e-05" labels and no minor ticks: mathtext labels and the minor ticks of
            # log axes make drawing several times slower.
            ax.minorticks_off()
            ax.xaxis.set_major_formatter(plain)
            ax.yaxis.set_major_formatter(plain)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.subplots_adjust(left=0.065, right=0.98, bottom=0.13, top=0.92, wspace=0.28)
        path = folder / f"{problem}-{dtype}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
