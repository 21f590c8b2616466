"""Two studies beyond timing, as the ``diffkit swell`` and ``diffkit steps`` commands show
them: symbolic expression swell size by size, and finite-difference error by step size.
Each returns its results with the rows of its table (strings) and its closing sentences.

Example:
    >>> study = swell_study("logistic-map", [1, 2], "float64", budget=30)
    >>> [size for size, _ in study.reports]
    [1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import jax
import numpy as np

from diffkit import fd
from diffkit._core.errors import DiffkitError
from diffkit._core.registry import get, names
from diffkit.harness.families import Problem, get_problem

if TYPE_CHECKING:
    from diffkit.symbolic.differentiator import Symbolic

__all__ = ["DEFAULT_RULES", "StepStudy", "SwellStudy", "parse_rule", "step_study", "swell_study"]

#: ``step_study``'s rules by default (the complex step left out where it is invalid).
DEFAULT_RULES = ("forward", "central", "central:4", "complex")

#: Called with a description before each stage of a study.
Progress = Callable[[str], None]

SWELL_HEADERS: tuple[str, ...] = ("size", "jaxpr eqns", "f tree ops", "f' tree ops", "growth")
SWELL_HEADERS += ("f' DAG nodes", "f' ops after CSE", "growth (CSE)", "differentiate", "compile")
#: the same derivative at the array level (issue 27): its array operations, and the scalar
#: operations that array expression stands for
SWELL_HEADERS += ("f' array ops", "f' array ops scalarised")


@dataclass
class SwellStudy:
    """Symbolic swell reports by size; ``stopped`` says where the budget ended it."""

    problem: Problem
    dtype: str
    reports: list[tuple[int, Any]] = field(default_factory=list)
    stopped: str = ""

    def rows(self) -> list[list[str]]:
        """One row per size, under :data:`SWELL_HEADERS`."""
        rows, prev = [], None
        for size, rep in self.reports:
            f, df, times = rep.function, rep.derivative, rep.times
            rows.append(
                [
                    str(size), str(rep.jaxpr_eqns), f"{f.tree_ops:,}", f"{df.tree_ops:,}",
                    _growth(prev, rep, "tree_ops"), f"{df.dag_nodes:,}",
                    "-" if df.cse_ops is None else f"{df.cse_ops:,}",
                    _growth(prev, rep, "cse_ops"),
                    f"{times.get('differentiate', 0):.3g} s", f"{times.get('compile', 0):.3g} s",
                    *_array_cells(rep),
                ]
            )  # fmt: skip
            prev = rep
        return rows

    def summary(self) -> str:
        """The growth per step from the second size to the last (the first is tiny)."""
        if len(self.reports) < 3:
            return ""
        (s0, r0), (s1, r1) = self.reports[1], self.reports[-1]
        per = (r1.derivative.tree_ops / max(r0.derivative.tree_ops, 1)) ** (1 / max(s1 - s0, 1))
        last = _growth(self.reports[-2][1], r1, "tree_ops")
        return (
            f"Written out as a tree, the derivative grows {per:.2f}x per step from size {s0} to "
            f"{s1} ({r0.derivative.tree_ops:,} -> {r1.derivative.tree_ops:,} operations; "
            f"{last} at the last step); after CSE it has {r1.derivative.cse_ops or 0:,} "
            f"operations and the function's jaxpr {r1.jaxpr_eqns} equations."
        )


def _array_cells(rep: Any) -> list[str]:
    a = getattr(rep, "array_derivative", None)
    return ["-", "-"] if a is None else [f"{a.array_nodes:,}", f"{a.scalar_ops:,}"]


def _growth(prev: Any, rep: Any, key: str) -> str:
    if prev is None:
        return "-"
    a, b = getattr(prev.derivative, key), getattr(rep.derivative, key)
    return f"{b / a:.2f}x" if a and b is not None else "-"


def swell_study(
    problem: str | Problem,
    sizes: Sequence[int],
    dtype: str = "float64",
    budget: float = 30.0,
    progress: Progress | None = None,
) -> SwellStudy:
    """The symbolic differentiator's swell report at each size, until one exceeds ``budget``
    seconds per stage (then ``stopped`` says so). See the module's example."""
    if "symbolic" not in names():
        raise DiffkitError(
            "swell needs the symbolic differentiator, which is not registered in this install"
        )
    study = SwellStudy(get_problem(problem), dtype)
    d = cast("Symbolic", get("symbolic", time_budget=budget))
    for size in sizes:
        if progress is not None:
            progress(f"{study.problem.name} size {size}")
        inst = study.problem.build(size, dtype)
        try:
            with jax.enable_x64(dtype == "float64"):
                study.reports.append((size, d.swell(inst.fun, *inst.args)))
        except DiffkitError as exc:
            if "budget" not in type(exc).__name__.lower():
                raise
            study.stopped = f"stopped at size {size}: {str(exc).splitlines()[0]}"
            break
    return study


@dataclass
class StepStudy:
    """``fd.step_sweep`` results by rule, on one problem instance, at shared steps."""

    problem: Problem
    dtype: str
    n: int
    reference: str  # what the errors are measured against
    steps: np.ndarray
    sweeps: dict[str, Any]
    notes: list[str]  # why a default rule was left out

    @property
    def eps(self) -> float:
        return float(np.finfo(self.dtype).eps)

    def rows(self) -> list[list[str]]:
        """One row per step: the step, then each rule's error (``*`` at its optimal step)."""
        rows = []
        for k, h in enumerate(self.steps):
            cells = [
                "-"
                if not np.isfinite(s.errors[k])
                else f"{s.errors[k]:.1e}" + ("*" if h == s.optimal_step else "")
                for s in self.sweeps.values()
            ]
            rows.append([f"{h:.0e}", *cells])
        return rows

    def summary(self) -> list[str]:
        """Each rule's optimal step and error, next to the default step rule's error."""
        return [
            f"{spec}: optimal step {s.optimal_step:.0e} (error {s.optimal_error:.1e}, marked *); "
            f"the default step rule gives {s.default_error:.1e}"
            for spec, s in self.sweeps.items()
        ]


def parse_rule(spec: str) -> tuple[str, int | None]:
    """``"central:4"`` to ``("central", 4)``; a rule without an order gets None.

    Example:
        >>> parse_rule("central:4"), parse_rule("forward")
        (('central', 4), ('forward', None))
    """
    scheme, _, order = spec.partition(":")
    return scheme, int(order) if order.isdigit() else None


def step_study(
    problem: str | Problem,
    size: int = 10,
    dtype: str = "float64",
    rules: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> StepStudy:
    """The error of each finite-difference rule against the float64 reference at steps from
    1 down to below eps (``rules``: ``SCHEME[:ORDER]``; default :data:`DEFAULT_RULES`, the
    complex step only where the function is complex-analytic).

    Example:
        >>> study = step_study("lse", 3, rules=["central"])
        >>> study.sweeps["central"].optimal_error < 1e-8
        True
    """
    prob = get_problem(problem)
    inst = prob.build(size, dtype)

    def f(x0: Any) -> Any:
        return inst.fun(x0, *inst.args[1:])

    notes: list[str] = []
    default, rules = rules is None, list(DEFAULT_RULES if rules is None else rules)
    if default:
        try:
            with jax.enable_x64(dtype == "float64"):
                fd.check_analytic(f, inst.args[0])
        except DiffkitError as exc:
            rules.remove("complex")
            why = str(exc).partition(": ")[2].split(" (first from")[0].split(":")[0]
            notes.append(f"complex step left out: {why} (not complex-analytic)")
    for spec in rules:
        fd.stencil(*parse_rule(spec))  # fail early on an unknown scheme or order
    digits = math.floor(math.log10(float(np.finfo(dtype).eps)))
    steps = np.logspace(0, digits - 1, -digits + 2)
    sweeps = {}
    with jax.enable_x64(dtype == "float64"):
        for spec in rules:
            if progress is not None:
                progress(spec)
            scheme, order = parse_rule(spec)
            sweeps[spec] = fd.step_sweep(f, inst.args[0], steps, scheme=scheme, order=order)
    what = "jax.grad" if inst.quantity == "grad" else f"jax.jacrev, m={inst.m}"
    return StepStudy(prob, dtype, inst.n, what, steps, sweeps, notes)
