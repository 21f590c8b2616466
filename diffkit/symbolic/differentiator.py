"""The ``symbolic`` differentiator: exact derivative expressions with SymPy, compiled to JAX.

The function is traced to a jaxpr and evaluated on symbols, one per input element
(:mod:`diffkit.symbolic.translate` maps each primitive to SymPy). SymPy differentiates every output
expression with respect to every input symbol; common subexpressions are eliminated (CSE); the
expressions are printed as a JAX program, jit-compiled and cached per (jaxpr, shapes, dtypes),
so repeated calls do no symbolic work. One evaluation of the compiled program gives the outputs
and the full Jacobian, from which ``jvp`` and ``vjp`` (and so ``grad``, ``jacobian``,
``hessian``) are products.

Every stage is measured -- :meth:`Symbolic.swell` reports how much the expressions swell -- and
every stage honours a time and a size budget: going over raises :class:`BudgetExceeded` naming
the stage and the size reached. The budget is checked between per-equation and
per-derivative steps; SymPy cannot be interrupted cooperatively within one step, so on the
main thread a ``SIGALRM`` timer (``setitimer``) also stops a stage that runs past
``time_budget``, ringing again every 50 ms in case an alarm is lost (raised inside a
garbage-collector callback, where Python drops it). XLA compilation
is never interrupted: it is held back by the size budget on the generated program and its time
is checked when it returns.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import graphlib
import hashlib
import math
import re
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import jax.scipy.special  # the generated programs call jax.scipy.special.erf
import numpy as np
from jax.extend import core as jex_core
from jax.flatten_util import ravel_pytree

from diffkit._core.errors import DiffkitError, UnsupportedPrimitiveError
from diffkit._core.interface import Differentiator
from diffkit._core.jaxpr import inner_jaxpr, interpret, trace
from diffkit._core.registry import register
from diffkit._core.trees import TracedFun, flatten_fun, select_args, unravel_like
from diffkit.symbolic import arrays, translate

if TYPE_CHECKING:
    from diffkit.symbolic.printing import ArrayExpression

__all__ = [
    "BudgetExceeded",
    "Sizes",
    "SpotCheckError",
    "Swell",
    "Symbolic",
    "SymbolicForm",
]

_CACHE: collections.OrderedDict[Any, _Program] = collections.OrderedDict()
_CACHE_SIZE = 128


class BudgetExceeded(DiffkitError):
    """A stage of the symbolic pipeline went over its time or size budget.

    ``stage`` names the stage (trace, build, differentiate, simplify, cse, codegen, compile)
    and ``size`` the size it had reached (in the unit the message names).
    """

    def __init__(self, message: str, stage: str, size: int) -> None:
        super().__init__(message)
        self.stage, self.size = stage, size


class _Alarm(BaseException):
    """Raised by the interval timer; a BaseException so that SymPy's handlers let it through."""


def _ring(signum: int, frame: Any) -> None:
    raise _Alarm


class _Budget:
    """Times the stages and holds each to ``seconds`` and ``limit``."""

    def __init__(self, seconds: float, limit: int, advice: str = "") -> None:
        self.seconds, self.limit, self.advice = seconds, limit, advice
        self.times: dict[str, float] = {}
        self.stage_name, self.unit, self.size, self.deadline = "", "", 0, math.inf
        self.armed = False

    @contextlib.contextmanager
    def stage(self, name: str, unit: str, interruptible: bool = True) -> Iterator[_Budget]:
        self.stage_name, self.unit, self.size = name, unit, 0
        start = time.perf_counter()
        self.deadline = start + self.seconds
        previous = self._arm() if interruptible else None
        try:
            try:
                yield self
            finally:  # later rings are ignored from here; one that came before is caught below
                self.armed = False
        except _Alarm:  # (a second ring while the first was unwinding is an _Alarm too)
            raise self._error("time") from None
        finally:
            if previous is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            self.times[name] = time.perf_counter() - start
        if self.times[name] > self.seconds:
            raise self._error("time")

    def check(self, size: int) -> None:
        """Record the size reached; raise when it or the clock is over budget."""
        self.size = size
        if size > self.limit:
            raise self._error("size")
        if time.perf_counter() > self.deadline:
            raise self._error("time")

    def _arm(self) -> Any:
        if not (
            hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0
        ):
            return None
        previous = signal.signal(signal.SIGALRM, self._alarm)
        self.armed = True
        # rings again every 50 ms past the deadline: Python drops an exception raised inside a
        # garbage-collector callback (JAX installs one), which would swallow a single alarm
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 0.05)
        return previous

    def _alarm(self, signum: int, frame: Any) -> None:
        if self.armed:  # not once the stage is over
            _ring(signum, frame)

    def _error(self, kind: str) -> BudgetExceeded:
        reached = f"{self.size:,} {self.unit}"
        if kind == "size":
            what = f"reached {reached}, over size_budget={self.limit:,}"
        else:
            what = f"ran past time_budget={self.seconds:g} s (size reached: {reached})"
        return BudgetExceeded(
            f"symbolic: the '{self.stage_name}' stage {what}; raise the budget, "
            f"{self.advice}or differentiate a smaller problem",
            self.stage_name,
            self.size,
        )


# ------------------------------------------------------------------ reports


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Sizes of one set of expressions (the function's, or its derivative's).

    ``tree_ops``: operations when written out as trees (what printing without CSE produces);
    ``dag_nodes``: distinct subexpressions; ``cse_ops`` / ``cse_subexpressions``: operations
    and temporaries after common-subexpression elimination (``None`` with ``cse=False``);
    ``program_chars`` / ``program_lines``: the generated JAX code.
    """

    tree_ops: int
    dag_nodes: int
    cse_ops: int | None
    cse_subexpressions: int | None
    program_chars: int
    program_lines: int


_SIZE_LABELS = {
    "tree_ops": "tree operations",
    "dag_nodes": "DAG nodes",
    "cse_ops": "operations after CSE",
    "cse_subexpressions": "subexpressions (CSE)",
    "program_chars": "program characters",
    "program_lines": "program lines",
}


@dataclasses.dataclass(frozen=True)
class Swell:
    """How much a derivative's expressions swell, stage by stage (:meth:`Symbolic.swell`).

    ``times`` holds seconds per stage: trace, build (jaxpr to expressions), differentiate,
    simplify (if asked), cse, codegen, compile, run (median of one compiled call).
    """

    n_inputs: int
    n_outputs: int
    jaxpr_eqns: int
    function: Sizes
    derivative: Sizes
    times: dict[str, float]
    backend: str
    cse: bool
    #: the same function and derivative as array expressions (the array level; ``None``
    #: where it could not build them): see :class:`diffkit.symbolic.arrays.ArraySizes`
    array_function: arrays.ArraySizes | None = None
    array_derivative: arrays.ArraySizes | None = None

    @property
    def ratios(self) -> dict[str, float]:
        """Derivative / function for each size."""
        out = {}
        for key in _SIZE_LABELS:
            f, d = getattr(self.function, key), getattr(self.derivative, key)
            if f is not None and d is not None:
                out[key] = d / f if f else math.inf
        return out

    def _rows(self) -> list[tuple[str, str, str, str]]:
        ratios = self.ratios
        fmt = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
        return [
            (
                label,
                fmt(getattr(self.function, key)),
                fmt(getattr(self.derivative, key)),
                f"{ratios[key]:.3g}" if key in ratios else "-",
            )
            for key, label in _SIZE_LABELS.items()
        ]

    def _head(self) -> str:
        return (
            f"Swell({self.backend}, cse={self.cse}): {self.n_inputs} inputs -> "
            f"{self.n_outputs} outputs, jaxpr of {self.jaxpr_eqns} equations"
        )

    def _times(self) -> str:
        return "  ".join(f"{k} {v:.3g}" for k, v in self.times.items())

    def __repr__(self) -> str:
        lines = [self._head(), f"  {'':22}{'function':>14}{'derivative':>14}{'ratio':>9}"]
        lines += [f"  {a:22}{b:>14}{c:>14}{d:>9}" for a, b, c, d in self._rows()]
        lines.append(f"  seconds: {self._times()}")
        if self.array_function is not None and self.array_derivative is not None:
            f, d = self.array_function, self.array_derivative
            lines.append(
                f"  array level: {f.array_nodes:,} -> {d.array_nodes:,} array operations "
                f"(scalarised: {f.scalar_ops:,} -> {d.scalar_ops:,} operations, "
                f"{f.scalar_tree:,} -> {d.scalar_tree:,} as trees)"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = lambda row, tag: "".join(f"<{tag}>{c}</{tag}>" for c in row)  # noqa: E731
        body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in self._rows())
        return (
            f"<p>{self._head()}</p><table><tr>"
            f"{cells(('', 'function', 'derivative', 'ratio'), 'th')}</tr>{body}</table>"
            f"<p>seconds: {self._times()}</p>"
        )


@dataclasses.dataclass(frozen=True)
class SymbolicForm:
    """The expressions behind a compiled derivative (:meth:`Symbolic.expressions`).

    ``inputs``: symbols shaped like the differentiated leaves; ``consts``: symbols for the
    floating-point arrays the function closes over, with ``const_values`` (they are arguments
    of the compiled program, so new data needs no new symbolic work); ``stops``: symbols that
    ``stop_gradient`` introduced, with their definitions; ``outputs``: expressions shaped like
    the outputs (and aux); ``jacobian``: ``(m, n)`` expressions; ``source``: the program.
    """

    inputs: tuple[np.ndarray, ...]
    consts: tuple[np.ndarray, ...]
    stops: tuple[tuple[Any, Any], ...]
    outputs: tuple[np.ndarray, ...]
    jacobian: np.ndarray
    source: str
    const_values: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Program:
    fn: Callable[..., Any]
    const_index: tuple[int, ...]
    form: SymbolicForm
    report: Swell
    primal: Callable[..., Any]  # the jaxpr itself, jitted: the spot-check's reference
    point: str | None = None  # digest of the inputs an order was decided at (sort, argmax)


# -------------------------------------------------------------- the class


@register("symbolic")
class Symbolic(Differentiator):
    """Symbolic differentiation with SymPy, compiled to JAX.

    Options: ``cse`` (eliminate common subexpressions before printing, default True),
    ``simplify`` (``sympy.simplify`` every derivative; slow), ``backend`` (``"sympy"`` or
    ``"symengine"``, the optional extra), ``memoize`` (differentiate each distinct
    subexpression once; ``False`` calls ``sympy.diff``, which walks shared expressions as
    trees), ``time_budget`` (seconds per stage), ``size_budget`` (expression nodes while
    building and differentiating, operations after CSE and in the printed program),
    ``spot_check`` (default True: on concrete inputs, the compiled program's values are
    compared with JAX's own evaluation of the function, NaN-aware, and a mismatch raises
    :class:`SpotCheckError` instead of returning a number from a wrong translation; one
    extra jitted primal call); ``level``: ``"array"`` (the default: one symbol per array, the
    derivative formed over whole arrays, :mod:`diffkit.symbolic.arrays`, its size independent
    of the number of elements; native VJPs, JVPs and Jacobians by rows of them; a program it
    cannot build falls back to the scalar level, with the reason in ``fallback``) or
    ``"scalar"`` (one SymPy symbol per element, as below: the level whose expression swell
    the essay describes). :meth:`expression`
    prints the array-level derivative as a textbook matrix expression at either level.

    Semantics at the array level: those of ``jax.grad`` (the adjoint of each primitive is the
    rule table's, custom rules are honoured, a NaN in a branch ``where`` did not take leaks in
    as it does through ``jax.grad``). At the scalar level: primitives are translated with
    JAX's meaning (NaN, infinities, integer conversions, rounding) and JAX's derivative
    conventions at kinks (``abs`` at 0: 1; ``max``/``min`` ties: 1/2 each; ``clamp`` at a
    bound: 0); ``custom_jvp`` functions are differentiated by their rule; ``custom_vjp`` ones
    are refused. ``select`` differentiates as JAX's JVP (the chosen branch's derivative), so
    a NaN derivative in the branch not taken does not leak in as it does through
    ``jax.grad``. ``sort``, ``argsort``, ``argmax`` and ``argmin`` of values that depend on
    the inputs use the order at the input point: such a program is valid only there, is
    rebuilt for new inputs, and is refused under ``jax.jit`` (inputs not concrete).

    Cost at the array level: a VJP is one call of the compiled adjoint program, as reverse
    mode. At the scalar level every operation is one call of the compiled program, which
    returns the outputs and the whole ``m x n`` Jacobian; JVPs and VJPs are products with it.
    The symbolic work is done once per function, shapes and dtypes, and cached.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> d = dk.get("symbolic")
        >>> float(d.grad(lambda x: jnp.sin(x) * x)(0.0))
        0.0
        >>> d.expressions(lambda x: jnp.sin(x) * x, 1.0).jacobian[0, 0]
        x0*cos(x0) + sin(x0)
    """

    mode = "symbolic"
    native = frozenset({"jvp", "vjp"})
    traced = True
    description = "SymPy: exact derivative expressions, CSE, compiled to JAX; swell measured"

    def __init__(
        self,
        *,
        cse: bool = True,
        simplify: bool = False,
        backend: str = "sympy",
        memoize: bool = True,
        time_budget: float = 300.0,
        size_budget: int = 200_000,
        spot_check: bool = True,
        level: str = "array",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if level not in ("array", "scalar"):
            raise DiffkitError(f"symbolic: level must be 'array' or 'scalar', got {level!r}")
        self.level = level
        if level == "array":  # the adjoint expression: VJPs native, JVPs through their rows
            self.__dict__["native"] = frozenset({"vjp"})
        options = (("cse", cse), ("simplify", simplify), ("memoize", memoize))
        for opt, value in (*options, ("spot_check", spot_check)):
            if not isinstance(value, bool):
                raise DiffkitError(f"symbolic: {opt} must be True or False, got {value!r}")
        if not (isinstance(time_budget, int | float) and time_budget > 0):
            raise DiffkitError(
                f"symbolic: time_budget must be positive seconds, got {time_budget!r}"
            )
        if not (isinstance(size_budget, int) and size_budget > 0):
            raise DiffkitError(f"symbolic: size_budget must be a positive int, got {size_budget!r}")
        self.backend = backend
        if backend != "sympy":  # SymPy is imported on first use; others (and unknown names)
            _ = self.S  # are checked now
        if simplify and backend != "sympy":
            raise DiffkitError("symbolic: simplify=True needs backend='sympy'")
        self.cse, self.simplify, self.memoize = cse, simplify, memoize
        self.spot_check = spot_check
        self.time_budget, self.size_budget = float(time_budget), size_budget

    @functools.cached_property
    def S(self) -> Any:
        """The expression backend's namespace (SymPy or SymEngine), imported on first use."""
        return translate.backend(self.backend)

    def passes(self, op: str, n: int, m: int = 1) -> int:
        """At the array level, reverse mode's passes (a VJP per row); at the scalar level one
        call of the compiled program (outputs and the full Jacobian) for any ``op``.

        Example:
            >>> import diffkit as dk
            >>> dk.get("symbolic").passes("jacobian", n=100, m=10)
            10
            >>> dk.get("symbolic", level="scalar").passes("jacobian", n=100, m=10)
            1
        """
        if self.level == "array":  # rows by VJPs of the adjoint expression
            return super().passes(op, n, m)
        super().passes(op, n, m)  # validates op
        return 1

    # ------------------------------------------------------- the primitives
    def _jvp(self, fun, primals, tangents):
        if self.level == "array" and self._array(fun, primals) is not None:
            return Differentiator._jvp(self, fun, primals, tangents)  # J x_dot by VJPs
        outs, aux, jac = self._evaluate(fun, primals)
        x_dot = ravel_pytree(tangents)[0].astype(jac.dtype)
        return outs, unravel_like(outs, jac @ x_dot), aux

    def _vjp(self, fun, primals):
        if self.level == "array":
            program = self._array(fun, primals)
            if program is not None:
                return program.vjp(fun, primals)
        outs, aux, jac = self._evaluate(fun, primals)

        def vjp_fn(out_bars):
            y_bar = ravel_pytree(out_bars)[0].astype(jac.dtype)
            return unravel_like(primals, y_bar @ jac)

        return outs, vjp_fn, aux

    def _evaluate(self, fun, primals):
        program, traced = self._program(fun, primals)
        consts = [traced.closed.consts[i] for i in program.const_index]
        strong = [jnp.asarray(a, a.dtype) for a in (*primals, *consts)]  # as compiled: not weak
        values, jac = program.fn(*strong)
        if self.spot_check and _concrete([*primals, *traced.closed.consts, *values]):
            want = program.primal(list(traced.closed.consts), *strong[: len(primals)])
            _spot_check(values, want)
        return tuple(values[: traced.n_outs]), tuple(values[traced.n_outs :]), jac

    def _rows(self, fun, primals, vjp_fn, outs):
        """As the base's, with the memory one direction needs read from the adjoint program
        (only the nodes that depend on the cotangent grow with the directions: the residuals
        of the forward program are shared by all of them)."""
        program = self._array(fun, primals) if self.level == "array" else None
        if program is None:
            return super()._rows(fun, primals, vjp_fn, outs)
        y, unravel = ravel_pytree(outs)
        n_dirs = 2 * y.size if jnp.iscomplexobj(y) else y.size

        def row(j: jax.Array) -> jax.Array:
            e = jax.nn.one_hot(j % y.size, y.size, dtype=y.dtype)
            e = jnp.where(j < y.size, e, 1j * e) if n_dirs > y.size else e
            return ravel_pytree(vjp_fn(unravel(e)))[0]

        return self._map_basis(row, n_dirs, program.bytes_per_direction)

    # ------------------------------------------------------ the array level
    def _array(self, fun: Any, primals: tuple) -> _ArrayProgram | None:
        """The array-level program of ``fun`` (cached), or ``None`` where the array level
        cannot build it (the scalar level is then used for this program: ``fallback`` on
        the instance says why)."""
        traced = fun if hasattr(fun, "closed") else trace(fun, primals)
        key = _array_key(traced, primals)
        found = _ARRAY_CACHE.get(key)
        if found is None:
            budget = _Budget(self.time_budget, self.size_budget)
            try:
                found = _ArrayProgram.build(traced, primals, budget)
            except BudgetExceeded:
                raise
            except DiffkitError as error:  # refused at the array level: the scalar level
                found = str(error)
            except Exception as error:
                found = f"symbolic: the array level failed ({type(error).__name__}: {error})"
            _ARRAY_CACHE[key] = found
            while len(_ARRAY_CACHE) > _CACHE_SIZE:
                _ARRAY_CACHE.popitem(last=False)
        _ARRAY_CACHE.move_to_end(key)
        if isinstance(found, str):
            self.fallback = found
            return None
        return found

    def expression(
        self, f: Callable, *args: Any, argnums: int | Sequence[int] = 0
    ) -> ArrayExpression:
        """The derivative of ``f`` at the array level, printable as a matrix expression
        (``str``) and as LaTeX (``.latex``; Jupyter renders it): the gradient of a scalar
        output, or the adjoint of a cotangent ``ybar`` otherwise. Arguments are named as
        ``f``'s parameters; a constant equal to a dimension prints as its name (``n``).

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> def f(w, X, y):
            ...     return jnp.sum((X @ w - y) ** 2) / y.shape[0]
            >>> e = dk.get("symbolic").expression(f, jnp.ones(3), jnp.ones((5, 3)), jnp.ones(5))
            >>> print(e)
            2*X.T*(X*w - y)/n
        """
        from diffkit.symbolic import printing

        return printing.expression(f, args, argnums)

    # ------------------------------------------------------ public extras
    def swell(self, f: Callable, *args: Any, argnums: int | Sequence[int] = 0) -> Swell:
        """Build the derivative of ``f`` afresh and report its sizes and stage times.

        Example:
            >>> import diffkit as dk
            >>> r = dk.get("symbolic").swell(lambda x: 4 * x * (1 - x), 0.5)
            >>> r.function.tree_ops, r.derivative.tree_ops  # 4*x0*(1 - x0) and 4 - 8*x0
            (4, 2)
        """
        program, traced, leaves = self._prepare("swell", f, args, argnums, fresh=True)
        consts = [traced.closed.consts[i] for i in program.const_index]
        inputs = [jnp.asarray(a, a.dtype) for a in (*leaves, *consts)]
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            jax.block_until_ready(program.fn(*inputs))
            runs.append(time.perf_counter() - start)
        times = {**program.report.times, "run": statistics.median(runs[1:])}
        try:  # the array level's sizes beside: never the reason a scalar report fails
            found = self.array_sizes(f, *args, argnums=argnums)
        except DiffkitError:
            found = None
        return dataclasses.replace(
            program.report,
            times=times,
            array_function=found[0] if found else None,
            array_derivative=found[1] if found else None,
        )

    def array_sizes(
        self, f: Callable, *args: Any, argnums: int | Sequence[int] = 0
    ) -> tuple[arrays.ArraySizes, arrays.ArraySizes] | None:
        """Sizes of ``f`` and of its adjoint at the array level (whatever ``level`` is):
        ``(function, derivative)``, or ``None`` where the array level cannot build them.
        Cheap at any size: the expressions are over whole arrays.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> d = dk.get("symbolic")
            >>> small = d.array_sizes(lambda x: jnp.sum(jnp.sin(x) ** 2), jnp.ones(10))
            >>> large = d.array_sizes(lambda x: jnp.sum(jnp.sin(x) ** 2), jnp.ones(10_000))
            >>> small[1].array_nodes == large[1].array_nodes, large[1].scalar_ops > 1000
            (True, True)
        """
        g, diff_args, _ = select_args(f"{self.name}.array_sizes", f, args, {}, argnums)
        leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
        fun, _ = flatten_fun(g, in_tree, False)
        traced = trace(fun, tuple(leaves))
        program = self._array(traced, tuple(leaves))
        if program is None:
            return None
        form = program.form
        outs = form.outputs[: traced.n_outs]
        return arrays.sizes(outs), arrays.sizes([x for x in form.grads if x is not None])

    def expressions(
        self, f: Callable, *args: Any, argnums: int | Sequence[int] = 0
    ) -> SymbolicForm:
        """The symbols, output expressions, Jacobian expressions and program for ``f``.

        Example:
            >>> import diffkit as dk, jax.numpy as jnp
            >>> form = dk.get("symbolic").expressions(lambda x: jnp.sum(x**2), jnp.ones(2))
            >>> form.outputs[0][()], form.jacobian.tolist()
            (x0_0**2 + x0_1**2, [[2*x0_0, 2*x0_1]])
        """
        program, traced, _ = self._prepare("expressions", f, args, argnums, fresh=False)
        values = tuple(traced.closed.consts[i] for i in program.const_index)
        return dataclasses.replace(program.form, const_values=values)

    def _prepare(self, what: str, f: Callable, args: tuple, argnums: Any, fresh: bool):
        g, diff_args, _ = select_args(f"{self.name}.{what}", f, args, {}, argnums)
        leaves, in_tree = jax.tree_util.tree_flatten(diff_args)
        fun, _ = flatten_fun(g, in_tree, False)
        program, traced = self._program(fun, tuple(leaves), fresh)
        return program, traced, leaves

    # ------------------------------------------------------------ pipeline
    def _program(self, fun: Callable, primals: tuple, fresh: bool = False):
        advice = "" if self.cse else "use cse=True (the default), "
        advice += "" if self.S.name == "symengine" else "use backend='symengine', "
        budget = _Budget(self.time_budget, self.size_budget, advice)
        with budget.stage("trace", "equations"):
            # the record of grad/jvp/vjp/jacobian; swell and expressions trace here, timed
            traced = fun if isinstance(fun, TracedFun) else trace(fun, primals)
        key = (
            self.S.name,
            self.cse,
            self.simplify,
            self.memoize,
            re.sub(r" at 0x[0-9a-f]+", "", str(traced.closed.jaxpr)),
            traced.n_outs,
            tuple((tuple(p.shape), str(p.dtype)) for p in primals),
            tuple(_const_key(c) for c in traced.closed.consts),
        )
        program = None if fresh else _CACHE.get(key)
        if program is not None and program.point is not None:  # valid at one point only
            if not _concrete([*primals, *traced.closed.consts]):
                raise UnsupportedPrimitiveError(
                    "symbolic: this function sorts or takes argmax/argmin of values that depend "
                    "on the inputs; its expressions hold at concrete inputs only: call the "
                    "derivative outside jax.jit/vmap, or use jax-fwd/jax-rev"
                )
            if program.point != _digest([*primals, *traced.closed.consts]):
                program = None
        if program is None:
            program = self._build(traced, primals, budget, compile_now=fresh)
            _CACHE[key] = program
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return program, traced

    def _build(
        self, traced: Any, primals: tuple, budget: _Budget, compile_now: bool = False
    ) -> _Program:
        """The symbolic program of ``traced``. XLA compiles it here only for ``swell``
        (``compile_now``), which reports that stage; elsewhere the program is compiled where
        it is used (inlined into the caller's ``jax.jit``, or on its first eager call), so a
        jitted derivative is compiled once, not twice."""
        closed = traced.closed
        xs, cs, const_index, ctx, values = self._expressions(traced, primals, budget)
        outs, inputs = _flat(values[: traced.n_outs]), _flat(xs)
        jac = self._differentiate(outs, inputs, budget)
        stops = [e for _, e in ctx.stops]
        f_exprs, d_exprs = [*stops, *_flat(values)], list(jac.flat)
        f_cse, d_cse, f_lines, d_lines = self._codegen(xs, cs, ctx, f_exprs, d_exprs, budget)
        source = "\n".join([*f_lines, *d_lines, "    return values, jacobian", ""])

        fn = jax.jit(_compile(source, closed, traced.n_outs, primals, len(inputs)))
        if compile_now:
            with budget.stage("compile", "program characters", interruptible=False):
                budget.size = len(source)
                specs = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in primals]
                specs += [
                    jax.ShapeDtypeStruct(np.shape(closed.consts[i]), closed.consts[i].dtype)
                    for i in const_index
                ]
                fn.lower(*specs).compile()

        def sizes(exprs: list[Any], cse: tuple, lines: list[str]) -> Sizes:
            return Sizes(
                tree_ops=translate.tree_ops(exprs),
                dag_nodes=translate.dag_nodes(exprs),
                cse_ops=_cse_ops(*cse) if self.cse else None,
                cse_subexpressions=len(cse[0]) if self.cse else None,
                program_chars=sum(len(line) + 1 for line in lines),
                program_lines=len(lines),
            )

        report = Swell(
            n_inputs=len(inputs),
            n_outputs=len(outs),
            jaxpr_eqns=_count_eqns(closed.jaxpr),
            function=sizes(f_exprs, f_cse, f_lines),
            derivative=sizes(d_exprs, d_cse, d_lines),
            times=dict(budget.times),
            backend=self.S.name,
            cse=self.cse,
        )
        form = SymbolicForm(tuple(xs), tuple(cs), tuple(ctx.stops), tuple(values), jac, source)
        primal = jax.jit(functools.partial(jax.core.eval_jaxpr, closed.jaxpr))
        point = _digest([*primals, *closed.consts]) if ctx.decided else None
        return _Program(fn, const_index, form, report, primal, point)

    def _expressions(self, traced: Any, primals: tuple, budget: _Budget):
        """The ``build`` stage: symbols for the inputs and the run-time constants, and the
        jaxpr's outputs as expressions in them; ``(xs, cs, const_index, ctx, values)``."""
        S, closed = self.S, traced.closed
        xs = [_symbols(S, f"x{k}", tuple(p.shape)) for k, p in enumerate(primals)]
        const_index = tuple(i for i, c in enumerate(closed.consts) if _runtime(c))
        cs = [
            _symbols(S, f"c{j}", tuple(np.shape(closed.consts[i])))
            for j, i in enumerate(const_index)
        ]
        runtime = set(const_index)  # traced under jit: never converted to NumPy
        consts = [
            c if _extended(c) or i in runtime else np.asarray(c)
            for i, c in enumerate(closed.consts)
        ]
        for i, c in zip(const_index, cs, strict=True):
            consts[i] = c

        ctx = translate.Context(S)
        if _concrete([*primals, *closed.consts]):
            values_at = [*primals, *(closed.consts[i] for i in const_index)]
            ctx.point = _evaluator(S, [*xs, *cs], values_at, ctx)
        with budget.stage("build", "DAG nodes"), jax.ensure_compile_time_eval():
            seen: set[Any] = set()
            ctx.after = lambda outs: budget.check(
                budget.size
                + translate.dag_nodes(_flat([o for o in outs if translate.is_symbolic(o)]), seen)
            )
            sub = jex_core.ClosedJaxpr(closed.jaxpr, consts)
            values = [
                translate.as_expressions(S, v) for v in interpret(sub, xs, translate.handler(ctx))
            ]
        return xs, cs, const_index, ctx, values

    def _differentiate(self, outs: list[Any], inputs: list[Any], budget: _Budget) -> np.ndarray:
        """The ``differentiate`` (and ``simplify``) stages: the Jacobian of expressions."""
        S = self.S
        with budget.stage("differentiate", "DAG nodes"):
            seen: set[Any] = set()
            diff = S.diff if self.memoize else S.plain_diff
            jac = np.empty((len(outs), len(inputs)), dtype=object)
            for i, x in enumerate(inputs):
                memo: dict[Any, Any] = {}
                for j, e in enumerate(outs):
                    jac[j, i] = diff(e, x, memo)
                    budget.check(budget.size + translate.dag_nodes([jac[j, i]], seen))
        if self.simplify:
            with budget.stage("simplify", "entries"):
                for j, i in np.ndindex(*jac.shape):
                    jac[j, i] = S.simplify(jac[j, i])
                    budget.check(j * jac.shape[1] + i + 1)
        return jac

    def _codegen(self, xs: list, cs: list, ctx: Any, f_exprs: list, d_exprs: list, budget: _Budget):
        """The ``cse`` and ``codegen`` stages: ``(f_cse, d_cse, f_lines, d_lines)``, the
        program's lines for the values and for the Jacobian."""
        S, stops = self.S, [e for _, e in ctx.stops]
        with budget.stage("cse", "operations"):
            f_cse = self._cse(f_exprs, "f")
            d_cse = self._cse(d_exprs, "d")
            if self.cse:
                budget.check(_cse_ops(*f_cse) + _cse_ops(*d_cse))
        (f_repl, f_red), (d_repl, d_red) = f_cse, d_cse
        f_assign = [*f_repl, *((s, e) for (s, _), e in zip(ctx.stops, f_red, strict=False))]
        if self.cse and ctx.stops:
            f_assign = _ordered(f_assign)

        with budget.stage("codegen", "operations"):
            budget.check(_cse_ops(*f_cse) + _cse_ops(*d_cse))
            args = [*(f"a{k}" for k in range(len(xs))), *(f"k{j}" for j in range(len(cs)))]
            head = [f"def program({', '.join(args)}):"]
            head += [
                f"    {_tuple(map(str, s.flat))} = {a}"
                for a, s in zip(args, [*xs, *cs], strict=True)
                if s.size
            ]
            f_lines = (
                head
                + _assignments(S, f_assign)
                + [f"    values = {_printed(S, f_red[len(stops) :])}"]
            )
            d_lines = [*_assignments(S, d_repl), f"    jacobian = {_printed(S, d_red)}"]
        return f_cse, d_cse, f_lines, d_lines

    def _cse(self, exprs: list[Any], prefix: str) -> tuple[list[tuple[Any, Any]], list[Any]]:
        if not self.cse or not exprs:
            return [], list(exprs)
        replacements, reduced = self.S.cse(exprs, prefix)
        return list(replacements), list(reduced)


# ---------------------------------------------------------------- the array level

_ARRAY_CACHE: collections.OrderedDict[Any, _ArrayProgram | str] = collections.OrderedDict()


def _array_key(traced: Any, primals: tuple) -> tuple:
    return (
        re.sub(r" at 0x[0-9a-f]+", "", str(traced.closed.jaxpr)),
        traced.n_outs,
        tuple((tuple(np.shape(p)), str(jnp.result_type(p))) for p in primals),
        tuple(_array_const_key(c) for c in traced.closed.consts),
    )


def _array_const_key(c: Any) -> tuple:
    """A constant as the array level's program depends on it: by shape and dtype where it is
    an argument of the program (:func:`diffkit.symbolic.arrays.is_runtime`), else by value."""
    if arrays.is_runtime(c):
        return ("arg", tuple(np.shape(c)), str(c.dtype))
    data = np.asarray(jax.random.key_data(c) if _extended(c) else c)
    return ("value", str(c.dtype), data.shape, hashlib.sha1(data.tobytes()).hexdigest())


@dataclasses.dataclass
class _ArrayProgram:
    """The array-level program: ``forward(*primals, *consts) -> (*values, *residuals)`` and
    ``backward(*residuals, *out_bars) -> grads`` (only those that flow), both jitted."""

    form: arrays.ArrayForm
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    n_values: int
    given: tuple[bool, ...]
    times: dict[str, float]
    bytes_per_direction: float = 0.0

    @classmethod
    def build(cls, traced: Any, primals: tuple, budget: _Budget) -> _ArrayProgram:
        with budget.stage("build", "array nodes"):
            form = arrays.differentiate(
                traced.closed, primals, traced.n_outs, size_check=budget.check
            )
        with budget.stage("lower", "array nodes"):
            grads = [g for g in form.grads if g is not None]
            dep = arrays.depends_on(grads, form.bars)
            needed = arrays._needed(grads)
            residuals: dict[int, arrays.Expr] = {}
            for e in needed:
                if e.id in dep:
                    for a in e.args:
                        if a.id not in dep and a.op != "const":
                            residuals[a.id] = a
                elif e in grads and e.op != "const":
                    residuals[e.id] = e
            res = sorted(residuals.values(), key=lambda e: e.id)
            fwd = arrays.lower([*form.inputs, *form.consts], [*form.outputs, *res])
            bwd = arrays.lower([*res, *form.bars], grads)
            budget.check(len(needed))
        given = tuple(g is not None for g in form.grads)
        per_dir = float(
            sum(e.size * np.dtype(e.dtype).itemsize for e in needed if e.id in dep and e.dtype)
        )
        return cls(
            form, jax.jit(fwd), jax.jit(bwd), len(form.outputs), given, budget.times, per_dir
        )

    def vjp(self, fun: Any, primals: tuple) -> tuple[tuple, Callable, tuple]:
        consts = [fun.closed.consts[i] for i in self.form.const_index]
        found = self.forward(*(jnp.asarray(a, jnp.result_type(a)) for a in primals), *consts)
        values, res = found[: self.n_values], found[self.n_values :]
        n = fun.n_outs

        def vjp_fn(out_bars: tuple) -> tuple:
            bars = [
                jnp.asarray(b, o.dtype) if is_float_dtype(o.dtype) else jnp.zeros(o.shape, o.dtype)
                for b, o in zip(out_bars, values[:n], strict=True)
            ]
            it = iter(self.backward(*res, *bars))
            return tuple(
                next(it) if g else jnp.zeros_like(p)
                for g, p in zip(self.given, primals, strict=True)
            )

        return tuple(values[:n]), vjp_fn, tuple(values[n:])


def is_float_dtype(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.inexact))


# ---------------------------------------------------------------- helpers


def _symbols(S: Any, prefix: str, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    names = [prefix] if shape == () else [f"{prefix}_{i}" for i in range(size)]
    out = np.empty(shape, dtype=object)
    out.flat[:] = [S.Symbol(n) for n in names]
    return out


def _flat(arrays: Sequence[np.ndarray]) -> list[Any]:
    return [e for a in arrays for e in a.flat]


def _extended(c: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(c, "dtype", np.float32), jax.dtypes.extended)


def _runtime(c: Any) -> bool:
    """Closed-over floating-point arrays (and anything not concrete) become symbols, passed
    to the compiled program at run time; concrete integers and booleans are folded in."""
    if isinstance(c, jax.core.Tracer):
        return True
    return not _extended(c) and np.issubdtype(np.asarray(c).dtype, np.inexact)


def _const_key(c: Any) -> tuple:
    if _runtime(c):
        return ("arg", tuple(np.shape(c)), str(c.dtype))
    data = np.asarray(jax.random.key_data(c) if _extended(c) else c)
    return ("value", str(c.dtype), data.shape, hashlib.sha1(data.tobytes()).hexdigest())


def _concrete(values: Sequence[Any]) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def _digest(values: Sequence[Any]) -> str:
    h = hashlib.sha1()
    for v in values:
        h.update(np.asarray(jax.random.key_data(v) if _extended(v) else v).tobytes())
    return h.hexdigest()


def _evaluator(S: Any, symbols: list[np.ndarray], values: list[Any], ctx: Any) -> Callable:
    """``point(expressions, dtype)``: their numeric values at the input point, computed by the
    printed JAX code (so exactly as the compiled program computes them)."""
    env: dict[str, Any] = {}
    for syms, v in zip(symbols, values, strict=True):
        flat = np.ravel(np.asarray(v))
        env.update((str(s), jnp.asarray(flat[i])) for i, s in enumerate(syms.flat))

    def point(exprs: np.ndarray, dtype: Any) -> np.ndarray:
        namespace = {**_namespace(), **env}
        try:
            for s, e in ctx.stops:
                namespace.setdefault(str(s), eval(_printed(S, [e]), namespace)[0])
            out = eval(_printed(S, list(exprs.flat)), namespace)
        except NameError:
            raise translate.Refusal("an order of values inside a custom_jvp function") from None
        return np.array([np.asarray(o, dtype) for o in out], dtype).reshape(exprs.shape)

    return point


class SpotCheckError(DiffkitError):
    """The compiled symbolic program disagrees with JAX's own value of the function."""


def _spot_check(got: Sequence[Any], want: Sequence[Any]) -> None:
    """Raise :class:`SpotCheckError` where the program's values differ from JAX's: NaN and
    infinities must sit at the same places, finite values agree to sqrt(eps) relative to
    each output's scale."""
    for j, (g, w) in enumerate(zip(got, want, strict=True)):
        g, w = np.asarray(g), np.asarray(w)
        if np.issubdtype(w.dtype, np.inexact):
            tol = float(np.sqrt(np.finfo(w.dtype).eps))
            finite = w[np.isfinite(w)]
            scale = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
            bad = ~np.isclose(g, w, rtol=tol, atol=tol * scale, equal_nan=True)
        else:
            bad = g != w
        if np.any(bad):
            i = tuple(int(k) for k in np.argwhere(bad)[0])
            raise SpotCheckError(
                f"symbolic: the compiled expressions give {g[i]} where JAX gives {w[i]} "
                f"(output {j}, element {i}) at this input: a translation differs from JAX's "
                "semantics here; use jax-fwd/jax-rev for this function"
            )


def _cse_ops(replacements: list[tuple[Any, Any]], reduced: list[Any]) -> int:
    return translate.tree_ops([r for _, r in replacements] + list(reduced))


def _ordered(assignments: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Order assignments so that each comes after the symbols it uses."""
    defs = dict(assignments)
    graph = {s: {t for t in e.free_symbols if t in defs} for s, e in assignments}
    return [(s, defs[s]) for s in graphlib.TopologicalSorter(graph).static_order()]


@functools.cache
def _printer() -> Any:
    from sympy.printing.numpy import JaxPrinter

    class Printer(JaxPrinter):
        def _print_erf(self, e: Any) -> str:
            return f"jax.scipy.special.erf({self._print(e.args[0])})"

        def _print_Heaviside(self, e: Any) -> str:  # SymPy's rewrite to Piecewise swells
            return f"jax.numpy.heaviside({self._print(e.args[0])}, 0.5)"

        def _print_JaxBase(self, e: Any) -> str:  # JAX-exact functions: their JAX call (the
            # name must end in "Base": SymPy only dispatches Function subclasses to those)
            return translate.print_jax(self, e)

        _print_JaxPredicate = _print_JaxBase

        def _print_Integer(self, e: Any) -> str:  # beyond int32 JAX refuses a Python int:
            if abs(int(e)) < 2**31:  # a float literal rounds (or overflows to inf) as JAX's
                return super()._print_Integer(e)  # arithmetic does in the array's dtype
            return (
                repr(float(e)) if abs(int(e)) < 2**1023 else f"({int(e) // abs(int(e))} * math.inf)"
            )

        def _print_ComplexInfinity(self, e: Any) -> str:  # x**y at x = 0, log(0) * 0, ...
            raise UnsupportedPrimitiveError(
                "symbolic: the derivative has an infinite constant (SymPy's zoo) at a special "
                "point, where JAX's rules give a finite value (e.g. d(x**y)/dy at x = 0); use "
                "dual, tape, jax-fwd or jax-rev for this function"
            )

    return Printer()


def _printed(S: Any, exprs: Sequence[Any]) -> str:
    return _tuple(_printer().doprint(S.to_sympy(e)) for e in exprs)


def _tuple(items: Any) -> str:
    items = list(items)
    return "(" + ", ".join(items) + ("," if items else "") + ")"


def _assignments(S: Any, pairs: Sequence[tuple[Any, Any]]) -> list[str]:
    return [f"    {s} = {_printer().doprint(S.to_sympy(e))}" for s, e in pairs]


def _compile(source: str, closed: Any, n_outs: int, primals: tuple, n: int) -> Callable:
    """Execute the generated source; wrap it to take and return shaped arrays."""
    namespace = _namespace()
    exec(compile(source, "<diffkit.symbolic program>", "exec"), namespace)
    program = namespace["program"]
    avals = [(tuple(v.aval.shape), v.aval.dtype) for v in closed.jaxpr.outvars]
    m = sum(int(np.prod(s)) for s, _ in avals[:n_outs])
    jac_dtype = jnp.result_type(*(d for _, d in avals[:n_outs]), *(p.dtype for p in primals))

    def run(*args: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array]:
        values, jacobian = program(*(jnp.ravel(a) for a in args))
        outs, start = [], 0
        for shape, dtype in avals:
            size = int(np.prod(shape))
            outs.append(_assemble(values[start : start + size], shape, dtype))
            start += size
        return tuple(outs), _assemble(jacobian, (m, n), jac_dtype)

    return run


def _namespace() -> dict[str, Any]:
    return {"jax": jax, "functools": functools, "math": math, "_custom": _CUSTOM_FUNCTIONS}


class _CustomFunctions:
    """``_custom[name]`` in a generated program: the ``jax.custom_jvp`` function of a
    custom_jvp rule met while building (:data:`diffkit.symbolic.translate.CUSTOM`), so that JAX
    (and symbolic, on the program) differentiates the printed program by the same rule."""

    def __init__(self) -> None:
        self.made: dict[str, Callable[..., Any]] = {}

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name not in self.made:
            cls = translate.CUSTOM[name]
            qs = ", ".join(map(str, cls.holders))
            nz = [i for i, p in enumerate(cls.partials) if p != 0]
            doprint = _printer().doprint
            source = (
                f"def value({qs}):\n    return {doprint(cls.value)}\n"
                f"def partials({qs}):\n    return {_tuple(doprint(cls.partials[i]) for i in nz)}\n"
            )
            namespace = _namespace()
            exec(compile(source, f"<diffkit.symbolic rule {name}>", "exec"), namespace)
            value, partials = namespace["value"], namespace["partials"]

            @jax.custom_jvp
            def f(*q: Any) -> Any:
                return jnp.asarray(value(*q), jnp.result_type(float, *q))

            @f.defjvp
            def f_jvp(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
                out = f(*primals)
                terms = (p * tangents[i] for p, i in zip(partials(*primals), nz, strict=True))
                return out, sum(terms, jnp.zeros_like(out))

            self.made[name] = f
        return self.made[name]


_CUSTOM_FUNCTIONS = _CustomFunctions()


def _assemble(values: Sequence[Any], shape: tuple[int, ...], dtype: Any) -> jax.Array:
    if not values:
        return jnp.zeros(shape, dtype)
    return jnp.stack([jnp.asarray(v, dtype) for v in values]).reshape(shape)


def _count_eqns(jaxpr: Any) -> int:
    """Equations of a jaxpr, nested calls inlined."""
    return sum(
        _count_eqns(sub.jaxpr) if (sub := inner_jaxpr(e)) is not None else 1 for e in jaxpr.eqns
    )
