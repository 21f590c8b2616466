"""Reverse mode by a tape (Wengert list): ``tape``.

The forward sweep evaluates the function's jaxpr and records, for every equation that depends
on the inputs, one :class:`Node`: its primitive, the keys of its inputs and outputs, the primal
values its rule needs, and its *pullback* (the rule table's ``vjp`` with those values bound).
The backward sweep walks the nodes in reverse, accumulating cotangents in a dict keyed by value
(``x_bar[k] += ...``), and pops each output's cotangent as soon as its node is done.

Values that do not depend on the inputs, and integer or boolean values, are never recorded and
get no cotangent; ``stop_gradient`` detaches. Nodes hold values and closures, never the tape, so
there are no reference cycles. Under ``jax.jit`` both sweeps trace into one XLA program.

Control flow: ``cond`` (the taken branch is recorded again and swept back inside a switch) and
``scan`` (the carry entering each step is saved; a reverse scan sweeps each step back).
``while_loop`` has a trip count known only at run time and cannot be reversed: use ``dual``.
Custom rules are part of the program: a ``custom_vjp`` function is pulled back by its ``bwd``
rule, a ``custom_jvp`` function by the transpose of its JVP rule (linear in the tangents, so
recorded on a tape of its own and swept back), a ``custom_linear_solve`` by its transposed
solve.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from diffkit import checkpoint as _checkpoint
from diffkit._core.errors import UnsupportedPrimitiveError
from diffkit._core.interface import Differentiator
from diffkit._core.jaxpr import (
    Interpreter,
    carry_mask,
    closed_jaxpr,
    custom_jvp_rule,
    custom_vjp_backward,
    custom_vjp_forward,
    evaluate,
    interpret,
    is_float,
    located,
    registered_jvp,
    registered_transpose,
    split_solve,
    symbolic_zeros,
    transposable,
    user_site,
    zero_tangent,
)
from diffkit._core.registry import register
from diffkit.rules.table import REFUSED, RULES

__all__ = ["Node", "Tape", "TapeReverse"]


class Tracked(NamedTuple):
    """A value that depends on the inputs, under the key its cotangent is accumulated at."""

    value: Any
    key: int


class Node(NamedTuple):
    """One recorded equation: ``outputs = primitive(inputs)`` and how to pull back through it."""

    primitive: str
    in_keys: tuple[int | None, ...]  # None: a constant, which gets no cotangent
    out_keys: tuple[int | None, ...]
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    pullback: Callable[[list[Any]], list[Any]]  # output cotangents -> input cotangents
    #: the pullback takes ``None`` for an output without a cotangent (JAX's symbolic zero),
    #: rather than zeros: a library's rule may treat the two differently
    sparse: bool = False


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Tracked) else v


@dataclass(eq=False)
class Tape:
    """A recorded evaluation: the Wengert list of :class:`Node`, in evaluation order.

    ``str(tape)`` prints it node by node (and, after :meth:`backward`, each value's adjoint).

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> tape = dk.get("tape").record(lambda x, y: jnp.sin(x) * y, 0.0, 3.0)
        >>> [node.primitive for node in tape.nodes]
        ['sin', 'mul']
        >>> [float(g) for g in tape.backward()]
        [3.0, 0.0]
        >>> print(tape)  # doctest: +NORMALIZE_WHITESPACE
        tape: 2 nodes, inputs v0 v1, outputs v3
          v2 = sin(v0)     value 0   adjoint 3
          v3 = mul(v2, v1) value 0   adjoint 1
    """

    nodes: list[Node] = field(default_factory=list)
    in_keys: list[int | None] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    adjoints: dict[int, Any] = field(default_factory=dict)
    trees: tuple[Any, Any] | None = None  # (inputs, outputs) pytree structures, for users

    @classmethod
    def record(
        cls,
        closed: Any,
        args: Sequence[Any],
        needs: Sequence[bool],
        schedule: Any = None,
        linear: bool = False,
        site: Any = None,
    ) -> Tape:
        """Evaluate ``closed`` on ``args``, recording every equation that depends on the
        arguments flagged in ``needs``; each ``scan`` is reversed by ``schedule`` (a
        :class:`diffkit.checkpoint.Schedule`; ``None``: store every step's state).

        ``linear``: ``closed`` is a derivative rule, linear in the flagged arguments (its
        tangents), recorded only to be transposed: as in JAX, a custom_jvp function applied to
        a tangent is recorded by its body, and a library's primitive by its transpose rule.
        ``site``: the user's equation ``closed`` stands for, named in errors."""
        tape = cls()
        counter = itertools.count()
        tracked = [Tracked(a, next(counter)) if n else a for a, n in zip(args, needs, strict=True)]
        tape.in_keys = [t.key if isinstance(t, Tracked) else None for t in tracked]
        tape.inputs = list(args)
        recorder = _Recorder(tape.nodes, counter, schedule, linear)
        tape.outputs = recorder.run(closed, tracked, site)
        return tape

    def sweep(
        self, out_bars: Sequence[Any], keep: bool = False, instantiate: bool = True
    ) -> list[Any]:
        """The backward sweep: cotangents of the inputs (zeros where none flowed, or ``None``
        without ``instantiate``; ``None`` for inputs not recorded) from cotangents of the
        outputs (``None`` for none). A rule's pullback passes on ``None`` where nothing flowed,
        as JAX's symbolic zero: a library's transpose may refuse any other cotangent
        (equinox's ``nondifferentiable_backward``)."""
        bars: dict[int, Any] = {}
        for out, bar in zip(self.outputs, out_bars, strict=True):
            if isinstance(out, Tracked) and bar is not None:
                _accumulate(bars, out.key, bar)
        for node in reversed(self.nodes):
            y_bars = [None if k is None else bars.pop(k, None) for k in node.out_keys]
            if all(b is None for b in y_bars):
                continue
            if keep:
                self.adjoints.update(
                    (k, b) for k, b in zip(node.out_keys, y_bars, strict=True) if k is not None
                )
            if not node.sparse:
                y_bars = [
                    jnp.zeros_like(y) if b is None and k is not None else b
                    for y, k, b in zip(node.outputs, node.out_keys, y_bars, strict=True)
                ]
            for k, x_bar in zip(node.in_keys, node.pullback(y_bars), strict=True):
                if k is not None and x_bar is not None:
                    _accumulate(bars, k, x_bar)
        if keep:
            self.adjoints.update((k, bars[k]) for k in self.in_keys if k in bars)
        return [
            None
            if k is None
            else bars[k]
            if k in bars
            else jnp.zeros_like(_value(x))
            if instantiate
            else None
            for k, x in zip(self.in_keys, self.inputs, strict=True)
        ]

    def backward(self, y_bar: Any = None) -> Any:
        """Sweep back from ``y_bar`` (default: ones, the gradient of a scalar output) and keep
        every adjoint for printing; returns the cotangents shaped like the recorded arguments.
        """
        in_tree, out_tree = self.trees or (None, None)
        n_out = out_tree.num_leaves if out_tree else len(self.outputs)
        outs = [_value(o) for o in self.outputs[:n_out]]
        leaves = [jnp.ones_like(o) for o in outs] if y_bar is None else jax.tree.leaves(y_bar)
        x_bars = self.sweep([*leaves, *[None] * (len(self.outputs) - n_out)], keep=True)
        return jax.tree.unflatten(in_tree, x_bars) if in_tree else x_bars

    def walk(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Sweep back (:meth:`backward`) and describe both sweeps as rows of plain data:
        ``inputs`` (name, value); ``forward`` (node, primitive, arguments, values), an
        argument being a name or, for a constant, its value; ``output`` (name, value);
        ``backward`` (node, primitive, argument, local derivative or None where the node is
        not scalar, upstream adjoints, what it passes on); ``gradient`` (name, value,
        gradient). Values are NumPy arrays; recorded values are named ``names`` (inputs, in
        order) or ``t<key>``.

        Example:
            >>> import diffkit as dk
            >>> walk = dk.get("tape").record(lambda x: x * x, 3.0).walk(["x"])
            >>> walk["forward"][0][:3], float(walk["backward"][0][3]), float(walk["gradient"][0][2])
            (('t1', 'mul', ['x', 'x']), 3.0, 6.0)
        """
        grads = jax.tree.leaves(self.backward())
        label = {k: n for k, n in zip(self.in_keys, names or [], strict=False) if k is not None}
        name = lambda k: label.get(k, f"t{k}")  # noqa: E731
        show = lambda k, x: name(k) if k is not None else np.asarray(x)  # noqa: E731
        forward = [
            (", ".join(name(k) for k in node.out_keys if k is not None), node.primitive,
             [show(k, x) for k, x in zip(node.in_keys, node.inputs, strict=True)],
             [np.asarray(y) for y in node.outputs])
            for node in self.nodes
        ]  # fmt: skip
        backward = []
        for node in reversed(self.nodes):
            y_bars = [self.adjoints.get(k) if k is not None else None for k in node.out_keys]
            if all(b is None for b in y_bars):
                continue
            y_bars = [
                jnp.zeros_like(y) if b is None else b
                for y, b in zip(node.outputs, y_bars, strict=True)
            ]
            scalar = len(node.outputs) == 1 and np.size(node.outputs[0]) == 1
            local = node.pullback([jnp.ones_like(node.outputs[0])]) if scalar else None
            passed = node.pullback(y_bars)
            for i, k in enumerate(node.in_keys):
                if k is not None:
                    backward.append(
                        (name(node.out_keys[0]), node.primitive, name(k),
                         None if local is None else np.asarray(local[i]),
                         [np.asarray(b) for b in y_bars], np.asarray(passed[i]))
                    )  # fmt: skip
        out = self.outputs[0]
        ins = list(names) if names else [name(k) for k in self.in_keys]
        return {
            "inputs": [(n, np.asarray(v)) for n, v in zip(ins, self.inputs, strict=True)],
            "forward": forward,
            "output": (name(getattr(out, "key", None)), np.asarray(_value(out))),
            "backward": backward,
            "gradient": [
                (n, np.asarray(v), np.asarray(g))
                for n, v, g in zip(ins, self.inputs, grads, strict=True)
            ],
        }

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        name = lambda k, v: f"v{k}" if k is not None else _short(v)  # noqa: E731
        ins = " ".join(f"v{k}" for k in self.in_keys if k is not None)
        outs = " ".join(name(getattr(o, "key", None), _value(o)) for o in self.outputs)
        lines = [f"tape: {len(self.nodes)} nodes, inputs {ins}, outputs {outs}"]
        for node in self.nodes:
            lhs = ", ".join(f"v{k}" for k in node.out_keys if k is not None)
            args = ", ".join(name(k, x) for k, x in zip(node.in_keys, node.inputs, strict=True))
            value = " ".join(_short(y) for y in node.outputs)
            line = f"  {lhs + ' = ' + node.primitive + '(' + args + ')':<24} value {value:<8}"
            adj = [self.adjoints[k] for k in node.out_keys if k in self.adjoints]
            lines.append(line + (f" adjoint {' '.join(map(_short, adj))}" if adj else ""))
        return "\n".join(lines)


def _short(x: Any) -> str:
    """A value in a few characters: the number for small concrete arrays, else dtype[shape]."""
    try:
        a = np.asarray(x)
    except Exception:  # a tracer: shape only
        a = None
    if a is not None and a.size <= 4:
        text = ", ".join(f"{v:.4g}" for v in a.ravel().tolist())
        return text if a.ndim == 0 else f"[{text}]"
    shaped = x if a is None else a  # a tracer has its aval's dtype and shape
    return f"{shaped.dtype}{list(shaped.shape)}"


def _accumulate(bars: dict[int, Any], key: int, bar: Any) -> None:
    bars[key] = bars[key] + bar if key in bars else bar


class _Recorder(Interpreter):
    """The forward sweep: evaluate each equation, recording a node where it depends on the
    inputs. It holds the node list, not the tape (no reference cycle)."""

    who = "tape"
    rules = RULES
    refused = REFUSED

    def __init__(
        self,
        nodes: list[Node],
        counter: itertools.count,
        schedule: Any = None,
        linear: bool = False,
    ) -> None:
        self.nodes, self.counter, self.schedule = nodes, counter, schedule
        self.linear = linear

    def handle(self, eqn: Any, invals: list[Any], site: Any = None) -> list[Any]:
        if (
            self.linear
            and eqn.primitive.name == "custom_jvp_call"
            and any(map(self.active, invals))
        ):
            # a rule applying its own function to a tangent (optimistix's, lineax's _asarray):
            # linear there, so its body is what is transposed (as JAX does), not its rule again
            return self.run(eqn.params["call_jaxpr"], invals, site or eqn)
        return super().handle(eqn, invals, site)

    def foreign(self, eqn: Any, invals: list[Any], xs: list[Any], site: Any) -> list[Any]:
        """A library's primitive: in a rule being transposed, by its transpose rule; else by
        its JVP rule, recorded (linear in the tangents) on a tape of its own and swept back."""
        needs = [isinstance(v, Tracked) and is_float(v.value) for v in invals]
        if self.linear:
            if not transposable(eqn):
                raise UnsupportedPrimitiveError(
                    f"no transpose rule for primitive '{eqn.primitive.name}', which its "
                    "derivative applies to a tangent (JAX has none either)"
                )
            ys = evaluate(eqn, xs)

            def pullback(y_bars):
                with located(self.who, eqn, site):
                    return registered_transpose(eqn, xs, needs, y_bars)

            return self.record(eqn, invals, ys, pullback, sparse=True)

        def rule(*dots: Any) -> list[Any]:
            it = iter(dots)
            ys, y_dots = registered_jvp(eqn, xs, [next(it) if n else None for n in needs])
            return [
                *ys,
                *(zero_tangent(y) if t is None else t for y, t in zip(ys, y_dots, strict=True)),
            ]

        dots = [zero_tangent(x) for x, n in zip(xs, needs, strict=True) if n]
        closed = jax.make_jaxpr(rule)(*dots)
        tape = Tape.record(closed, dots, [True] * len(dots), linear=True, site=site or eqn)
        n_out = len(eqn.outvars)
        ys = [_value(y) for y in tape.outputs[:n_out]]

        def sweep(y_bars):
            it = iter(tape.sweep([None] * n_out + list(y_bars), instantiate=False))
            return [next(it) if n else None for n in needs]

        return self.record(eqn, invals, ys, sweep, sparse=True)

    def active(self, v: Any) -> bool:
        return isinstance(v, Tracked)

    def primal(self, v: Any) -> Any:
        return _value(v)

    def apply(self, eqn: Any, invals: list[Any], xs: list[Any], rule: Any) -> list[Any]:
        found = rule.outputs(eqn, xs)
        ys = found[: len(eqn.outvars)]  # after them: the extras the rule computed
        if rule.kind == "zero":
            return ys
        needs = [isinstance(v, Tracked) for v in invals]
        pullback = _bind_rule(rule.vjp, eqn, xs, found, needs)
        return self.record(eqn, invals, ys, pullback)

    def record(
        self,
        eqn: Any,
        invals: list[Any],
        ys: Sequence[Any],
        pullback: Callable,
        sparse: bool = False,
    ) -> list:
        """Append the node for ``eqn`` (outputs ``ys``) and return its tracked outputs."""
        out_keys = tuple(next(self.counter) if is_float(v.aval) else None for v in eqn.outvars)
        in_keys = tuple(v.key if isinstance(v, Tracked) else None for v in invals)
        xs = tuple(_value(v) for v in invals)
        node = Node(eqn.primitive.name, in_keys, out_keys, xs, tuple(ys), pullback, sparse)
        self.nodes.append(node)
        return [y if k is None else Tracked(y, k) for y, k in zip(ys, out_keys, strict=True)]


def _bind_rule(vjp, eqn, xs, ys, needs) -> Callable[[list[Any]], list[Any]]:
    def pullback(y_bars: list[Any]) -> list[Any]:
        with located("tape", eqn), jax.named_scope(f"d_{eqn.primitive.name}"):
            return vjp(eqn.primitive, xs, ys, y_bars, needs, eqn.params)

    return pullback


def _recorded(make: Callable, sparse: bool = False) -> Callable:
    """A handler for ``special`` from ``make(eqn, xs, needs, site) -> (ys, pullback)``: the
    equation is recorded as one node whose pullback ``make`` wrote (``sparse``: it takes
    ``None`` for an output without a cotangent)."""

    def handle(recorder: _Recorder, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
        xs = [_value(v) for v in invals]
        if not any(is_float(v.aval) for v in eqn.outvars):
            return evaluate(eqn, xs)
        ys, pullback = make(eqn, xs, [isinstance(v, Tracked) for v in invals], site)
        return recorder.record(eqn, invals, ys, pullback, sparse)

    return handle


def _pullback(closed: Any, args: Sequence[Any], needs: Sequence[bool], out_bars: Sequence[Any]):
    """Record ``closed`` at ``args`` and sweep it back: the cotangents of the needed inputs
    (the forward work is redone: what control flow saves is its inputs, not every residual)."""
    return Tape.record(closed, args, needs).sweep(out_bars)


# ------------------------------------------------------------ control flow


def _cond(eqn: Any, xs: list[Any], needs: list[bool], site: Any):
    index, ops, op_needs = xs[0], xs[1:], needs[1:]
    ys = evaluate(eqn, xs)
    out_float = [is_float(v.aval) for v in eqn.outvars]

    def branch(closed: Any) -> Callable:
        def run(ops, y_bars):
            bars = iter(y_bars)
            full = [next(bars) if f else None for f in out_float]
            return [b for b in _pullback(closed, ops, op_needs, full) if b is not None]

        return run

    def pullback(y_bars):
        floats = [b for b, f in zip(y_bars, out_float, strict=True) if f]
        bars = iter(lax.switch(index, [branch(b) for b in eqn.params["branches"]], ops, floats))
        return [None, *[next(bars) if n else None for n in op_needs]]

    return ys, pullback


def _scan(eqn: Any, xs: list[Any], needs: list[bool], site: Any, schedule: Any = None):
    plan = None if schedule is None else schedule.plan(eqn.params["length"])  # budget checked
    if plan is not None and schedule.kind != "store-all":
        return _scan_checkpointed(eqn, xs, needs, plan)
    p = eqn.params
    nc, nk = p["num_consts"], p["num_carry"]
    consts, init, seq = xs[:nc], xs[nc : nc + nk], xs[nc + nk :]
    body = p["jaxpr"]
    cneeds, xneeds = needs[:nc], needs[nc + nk :]
    cmask = carry_mask(body.jaxpr, cneeds, needs[nc : nc + nk], xneeds)
    body_needs = [*cneeds, *cmask, *xneeds]
    kw = dict(length=p["length"], unroll=p["unroll"])

    def step(carry, x):
        outs = interpret(body, [*consts, *carry, *x], evaluate)
        return outs[:nk], (outs[nk:], carry)

    final, (ys, carries) = lax.scan(step, list(init), list(seq), reverse=p["reverse"], **kw)

    def pullback(y_bars):
        carry_bar0 = [b if m else None for b, m in zip(y_bars[:nk], cmask, strict=True)]
        ys_bar = [b for b in y_bars[nk:]]

        def back(acc, inp):
            carry_bar, consts_bar = acc
            carry_i, x_i, ys_bar_i = inp
            bars = _pullback(body, [*consts, *carry_i, *x_i], body_needs, [*carry_bar, *ys_bar_i])
            new_carry = [b if m else None for b, m in zip(bars[nc : nc + nk], cmask, strict=True)]
            total = [
                None if a is None else a + b for a, b in zip(consts_bar, bars[:nc], strict=True)
            ]
            return (new_carry, total), bars[nc + nk :]

        zero_consts = [
            jnp.zeros_like(c) if n else None for c, n in zip(consts, cneeds, strict=True)
        ]
        carry_bar0 = [
            jnp.zeros_like(c) if m and b is None else b
            for c, m, b in zip(init, cmask, carry_bar0, strict=True)
        ]
        (carry_bar, consts_bar), seq_bar = lax.scan(
            back,
            (carry_bar0, zero_consts),
            (carries, list(seq), ys_bar),
            reverse=not p["reverse"],
            **kw,
        )
        init_bar = [b if n else None for b, n in zip(carry_bar, needs[nc : nc + nk], strict=True)]
        return [*consts_bar, *init_bar, *seq_bar]

    return [*final, *ys], pullback


def _while(eqn: Any, xs: list[Any], needs: list[bool], site: Any):
    raise UnsupportedPrimitiveError(
        f"tape: cannot reverse the while_loop at {user_site(eqn, site)}: its trip count is known "
        "only at run time; use dk.get('dual') for this function, or write the loop with a "
        "fixed trip count (lax.scan, or lax.fori_loop with Python int bounds)"
    )


# ------------------------------------------------------------ custom rules


def _custom_jvp(eqn: Any, xs: list[Any], needs: list[bool], site: Any):
    """The library's JVP rule gives the outputs (as in JAX, where they come from the rule)
    and, being linear in the tangents, is recorded with the tangents as the tracked inputs on
    a tape of its own, swept back for the cotangents (its transpose). Inactive inputs get
    symbolic zeros where the rule asked for them."""
    nc = eqn.params["num_consts"]
    rest = xs[nc:]
    zeros = symbolic_zeros(eqn, needs)
    rule, out_zeros = custom_jvp_rule(eqn, zeros)
    given = [x for x, z in zip(rest, zeros, strict=True) if not z]
    tangent_needs = [
        n and is_float(x) for x, n, z in zip(rest, needs[nc:], zeros, strict=True) if not z
    ]
    args = [*rest, *map(zero_tangent, given)]
    tape = Tape.record(
        rule, args, [False] * len(rest) + tangent_needs, linear=True, site=site or eqn
    )
    ys = [_value(y) for y in tape.outputs[: len(eqn.outvars)]]

    def pullback(y_bars):
        out_bars = [b for b, z in zip(y_bars, out_zeros, strict=True) if not z]
        bars = iter(tape.sweep([None] * len(ys) + out_bars, instantiate=False)[len(rest) :])
        return [None] * nc + [None if z else next(bars) for z in zeros]

    return ys, pullback


def _custom_vjp(eqn: Any, xs: list[Any], needs: list[bool], site: Any):
    """The library's ``fwd`` saves its residuals, its ``bwd`` gives the cotangents."""
    ys, res = custom_vjp_forward(eqn, xs, needs)

    def pullback(y_bars):
        cts = [zero_tangent(y) if b is None else b for y, b in zip(ys, y_bars, strict=True)]
        return custom_vjp_backward(eqn, res, cts)

    return ys, pullback


def _linear_solve(eqn: Any, xs: list[Any], needs: list[bool], site: Any):
    """``x = A^-1 b``: ``b_bar = A^-T x_bar`` by the transposed solve, and the matvec's
    constants get minus the matvec's cotangent at ``x`` pulled back from ``b_bar``."""
    p = eqn.params
    if p["jaxprs"].transpose_solve is None:
        raise UnsupportedPrimitiveError(
            f"tape: the custom_linear_solve at {user_site(eqn, site)} has no transpose_solve, "
            "which reverse mode needs (JAX refuses too); pass transpose_solve, or use dual"
        )
    ys = evaluate(eqn, xs)
    (matvec, vecmat, solve, t_solve), b = split_solve(xs, eqn)
    matvec_needs = split_solve(needs, eqn)[0][0]

    def pullback(y_bars):
        x_bars = [
            zero_tangent(y) if c is None else c for y, c in zip(ys[: len(b)], y_bars, strict=False)
        ]
        b_bars = eqn.primitive.bind(
            *vecmat,
            *matvec,
            *t_solve,
            *solve,
            *x_bars,
            const_lengths=p["const_lengths"].transpose(),
            jaxprs=p["jaxprs"].transpose(),
        )[: len(b)]
        bars = [None] * (len(xs) - len(b)) + list(b_bars)
        if any(matvec_needs):
            back = _pullback(
                closed_jaxpr(p["jaxprs"].matvec),
                [*matvec, *ys[: len(b)]],
                [*matvec_needs, *[False] * len(b)],
                [-t for t in b_bars],
            )
            bars[: len(matvec)] = back[: len(matvec)]
        return bars

    return ys, pullback


def _scan_checkpointed(eqn: Any, xs: list[Any], needs: list[bool], plan: Any):
    """``scan`` reversed by a checkpointing plan (:mod:`diffkit.checkpoint`): the first sweep
    keeps only the states the plan stores; the backward sweep runs the plan's actions,
    recomputing states from snapshots and recording each step once, as it is swept back."""
    p = eqn.params
    nc, nk, n = p["num_consts"], p["num_carry"], p["length"]
    consts, init, seq = xs[:nc], xs[nc : nc + nk], xs[nc + nk :]
    body = p["jaxpr"]
    cneeds, xneeds = needs[:nc], needs[nc + nk :]
    cmask = carry_mask(body.jaxpr, cneeds, needs[nc : nc + nk], xneeds)
    body_needs = [*cneeds, *cmask, *xneeds]
    index = (lambda j: n - 1 - j) if p["reverse"] else (lambda j: j)  # step j's xs index

    def step(carry, x):
        outs = interpret(body, [*consts, *carry, *x], evaluate)
        return outs[:nk], outs[nk:]

    final, ys, snaps = _checkpoint.run_forward(plan, step, init, seq, p["reverse"])

    def advance(carry, j):
        x = [lax.dynamic_index_in_dim(s, index(j), keepdims=False) for s in seq]
        return step(carry, x)[0]

    move = _checkpoint.mover(plan, advance)

    def pullback(y_bars):
        def back(acc, inp):
            (work, snaps), carry_bar, consts_bar = acc
            x_i, ys_bar_i, j = inp
            work, snaps = move(work, snaps, j)
            bars = _pullback(body, [*consts, *work, *x_i], body_needs, [*carry_bar, *ys_bar_i])
            carry_bar = [b if m else None for b, m in zip(bars[nc : nc + nk], cmask, strict=True)]
            consts_bar = [
                None if a is None else a + b for a, b in zip(consts_bar, bars[:nc], strict=True)
            ]
            return ((work, snaps), carry_bar, consts_bar), bars[nc + nk :]

        carry_bar0 = [
            (jnp.zeros_like(c) if b is None else b) if m else None
            for c, m, b in zip(init, cmask, y_bars[:nk], strict=True)
        ]
        zero_consts = [
            jnp.zeros_like(c) if m else None for c, m in zip(consts, cneeds, strict=True)
        ]
        steps = np.arange(n)[::-1] if p["reverse"] else np.arange(n)  # step j at xs index i
        start = ((_checkpoint.working(plan, snaps), snaps), carry_bar0, zero_consts)
        (_, carry_bar, consts_bar), seq_bar = lax.scan(
            back, start, (list(seq), list(y_bars[nk:]), steps), reverse=not p["reverse"]
        )
        init_bar = [b if m else None for b, m in zip(carry_bar, needs[nc : nc + nk], strict=True)]
        return [*consts_bar, *init_bar, *seq_bar]

    return [*final, *ys], pullback


def _scan_handler(recorder: _Recorder, eqn: Any, invals: list[Any], site: Any) -> list[Any]:
    make = functools.partial(_scan, schedule=recorder.schedule)
    return _recorded(make)(recorder, eqn, invals, site)


_Recorder.special = {
    name: _recorded(make)
    for name, make in {
        "cond": _cond,
        "while": _while,
        "custom_vjp_call": _custom_vjp,
        "custom_linear_solve": _linear_solve,
    }.items()
}
_Recorder.special["custom_jvp_call"] = _recorded(_custom_jvp, sparse=True)
_Recorder.special["scan"] = _scan_handler


@register("tape")
class TapeReverse(Differentiator):
    """Reverse mode by a hand-written tape over the function's jaxpr: one forward sweep
    records the nodes, one backward sweep accumulates cotangents in reverse order.

    Options: ``checkpoint`` reverses each ``lax.scan`` by a schedule of
    :mod:`diffkit.checkpoint` (``"store-all"``, the default: every step's state kept;
    ``"sqrt"``; ``"every(k)"`` or ``dk.checkpoint.every(k)``; ``"revolve"`` with
    ``budget`` snapshots), trading recomputed steps for memory; ``budget`` caps the
    snapshots a schedule may hold (an impossible one is an error). A schedule's backward sweep
    replays its actions in a loop whose trip count varies per step, which reverse mode cannot
    reverse: differentiate a checkpointed gradient again forward-over-reverse (``jax.jacfwd``
    of its ``grad``), not with this tape's ``hessian``.

    Example:
        >>> import diffkit as dk, jax.numpy as jnp
        >>> dk.get("tape").grad(lambda x: jnp.sum(jnp.sin(x) * x))(jnp.zeros(2)).tolist()
        [0.0, 0.0]
        >>> f = lambda x: jax.lax.scan(lambda c, _: (jnp.sin(c), None), x, length=50)[0]
        >>> g = dk.get("tape", checkpoint="revolve", budget=3).grad(f)(1.0)
        >>> bool(jnp.allclose(g, jax.grad(f)(1.0)))
        True
    """

    mode = "reverse"
    native = frozenset({"vjp"})
    traced = True
    description = "hand-written tape (Wengert list) over the jaxpr, swept backward; one rule table"

    def __init__(
        self,
        *,
        checkpoint: str | _checkpoint.Schedule | None = None,
        budget: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.schedule = _checkpoint.parse(checkpoint, budget)

    def _vjp(self, fun, primals):
        tape = Tape.record(fun.closed, primals, [True] * len(primals), self.schedule)
        values = [_value(o) for o in tape.outputs]
        n, n_aux = fun.n_outs, fun.n_aux

        def vjp_fn(out_bars):
            return tuple(tape.sweep([*out_bars, *[None] * n_aux]))

        return tuple(values[:n]), vjp_fn, tuple(values[n:])

    def record(self, f: Callable, *args: Any) -> Tape:
        """Record ``f(*args)`` (pytrees of float arrays) on a printable :class:`Tape`.

        Example:
            >>> import diffkit as dk
            >>> len(dk.get("tape").record(lambda x: x * x + 1.0, 2.0))
            2
        """
        leaves, in_tree = jax.tree.flatten(jax.tree.map(jnp.asarray, args))
        out_tree = []

        def flat(*xs):
            out = f(*jax.tree.unflatten(in_tree, list(xs)))
            out_leaves, tree = jax.tree.flatten(out)
            out_tree.append(tree)
            return out_leaves

        closed = jax.make_jaxpr(flat)(*leaves)
        tape = Tape.record(closed, leaves, [True] * len(leaves))
        tape.trees = (in_tree, out_tree[0])
        return tape
