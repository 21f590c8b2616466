"""PNG plots of sweep results (matplotlib, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffkit.harness.results import Results

__all__ = ["plot_results"]


def plot_results(results: Results, folder: Path) -> list[Path]:
    """One PNG per (problem, dtype): run time (primal dashed), derivative/primal ratio and
    rho against the float64 reference, each against n (m for wide outputs)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    ok = results.filter(outcome="ok")
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
            (line,) = ax_t.loglog(xs, [r["time_median"] for r in rs], "o-", label=method)
            ax_t.loglog(xs, [r["primal_median"] for r in rs], ":", color=line.get_color())
            ax_r.loglog(xs, [r["ratio"] for r in rs], "o-", label=method)
            rho = [(x, r["rho_max"]) for x, r in zip(xs, rs, strict=True) if r.get("rho_max")]
            if rho:
                ax_a.loglog(*zip(*rho, strict=True), "o-", label=method)
        ax_t.set(xlabel=axis, ylabel="run time [s] (dotted: primal)", title=f"{problem} {dtype}")
        ax_r.set(xlabel=axis, ylabel="derivative / primal time", title="cost ratio")
        ax_a.set(xlabel=axis, ylabel="max rho vs float64 reference", title="accuracy")
        for ax in (ax_t, ax_r, ax_a):
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.subplots_adjust(left=0.05, right=0.98, bottom=0.13, top=0.92, wspace=0.28)
        path = folder / f"{problem}-{dtype}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
