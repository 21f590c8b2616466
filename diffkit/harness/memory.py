"""Memory against compute: reverse mode's checkpointing schedules measured on deep problems.

Three families whose ``size`` is a depth ``L`` (the number of steps of one ``lax.scan``):
``deep-mlp`` (``h = tanh(h W_l + b_l)``, per-layer weights scanned over), ``resnet``
(``h = h + tanh(h W_l + b_l) / sqrt(L)``) and ``rnn`` (``h = tanh(h W + x_t U + b)``, one set
of weights, ``L`` time steps). :func:`memory_sweep` measures each method (a differentiator
with a schedule or a policy, written ``"name@option+option"``: ``"tape@sqrt"``,
``"tape@revolve(8)"``, ``"jax-rev@sqrt+nothing_saveable"``) at each depth with
:func:`~diffkit.harness.measure.run_case`, in this process: run time, XLA's compiled
``memory_analysis()`` (``xla_temp_bytes``: the temporaries, the activations a schedule
keeps; deterministic, the figure to trust on the CPU) and the process's peak RSS (noisy).

Example:
    >>> import diffkit as dk
    >>> front = dk.harness.memory_sweep("rnn", [4, 16], ["tape", "tape@sqrt"], min_time=0.01)
    >>> [r["label"] for r in front], front[3]["recomputed"]
    (['tape', 'tape@sqrt', 'tape', 'tape@sqrt'], 9)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from diffkit import checkpoint as _checkpoint
from diffkit._core.errors import DiffkitError
from diffkit._core.registry import resolve
from diffkit.harness.families import Problem, get_problem, register_problem
from diffkit.harness.measure import run_case
from diffkit.harness.record import OK, Record, field_named

__all__ = ["CLAIM", "DEFAULT_METHODS", "MemoryFront", "memory_sweep", "method_spec"]

#: The front measured when no methods are given: JAX's store-all (the baseline), its
#: checkpointed variants, and the tape's schedules.
DEFAULT_METHODS = (
    "jax-rev",
    "jax-rev@nothing_saveable",
    "jax-rev@sqrt+nothing_saveable",
    "tape",
    "tape@sqrt",
    "tape@revolve(8)",
)
#: The essay's claim for gradient checkpointing: ~30 % more compute, ~60 % less memory.
CLAIM = {"time": 1.3, "memory": 0.4}


# --------------------------------------------------------------------------- problems


def _layers(rng: np.random.Generator, depth: int, width: int, dtype: np.dtype) -> dict:
    w = rng.standard_normal((depth, width, width)) / math.sqrt(width)
    b = 0.1 * rng.standard_normal((depth, width))
    return {"W": w.astype(dtype), "b": b.astype(dtype)}


def _deep_mlp(size, dtype, rng, width, batch):
    params = _layers(rng, size, width, dtype)
    x = rng.standard_normal((batch, width)).astype(dtype)

    def loss(params, x):
        def layer(h, wb):
            return jnp.tanh(h @ wb[0] + wb[1]), None

        h, _ = lax.scan(layer, x, (params["W"], params["b"]))
        return jnp.mean(h**2)

    return loss, (params, x)


def _resnet(size, dtype, rng, width, batch):
    params = _layers(rng, size, width, dtype)
    x = rng.standard_normal((batch, width)).astype(dtype)
    scale = 1.0 / math.sqrt(size)

    def loss(params, x):
        def block(h, wb):
            return h + scale * jnp.tanh(h @ wb[0] + wb[1]), None

        h, _ = lax.scan(block, x, (params["W"], params["b"]))
        return jnp.mean(h**2)

    return loss, (params, x)


def _rnn(size, dtype, rng, width, batch, inputs):
    params = {
        "W": (rng.standard_normal((width, width)) / math.sqrt(width)).astype(dtype),
        "U": (rng.standard_normal((inputs, width)) / math.sqrt(inputs)).astype(dtype),
        "b": np.zeros(width, dtype),
    }
    xs = rng.standard_normal((size, batch, inputs)).astype(dtype)

    def loss(params, xs):
        def cell(h, x):
            return jnp.tanh(h @ params["W"] + x @ params["U"] + params["b"]), None

        h, _ = lax.scan(cell, jnp.zeros((xs.shape[1], params["W"].shape[0]), xs.dtype), xs)
        return jnp.mean(h**2)

    return loss, (params, xs)


_DEPTHS = (8, 32, 128, 512)
for _problem in (
    Problem(
        "deep-mlp",
        "tanh MLP of L layers as one lax.scan over stacked weights (width 32, batch 64)",
        "depth L (layers)",
        _DEPTHS,
        _deep_mlp,
        {"width": 32, "batch": 64},
    ),
    Problem(
        "resnet",
        "residual net h + tanh(h W + b) / sqrt(L), L blocks as one lax.scan",
        "depth L (blocks)",
        _DEPTHS,
        _resnet,
        {"width": 32, "batch": 64},
    ),
    Problem(
        "rnn",
        "tanh RNN over L time steps (lax.scan), one set of weights; loss on the last state",
        "depth L (time steps)",
        _DEPTHS,
        _rnn,
        {"width": 32, "batch": 64, "inputs": 8},
    ),
):
    register_problem(_problem)


# --------------------------------------------------------------------------- methods


def method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name@option+option"`` to ``(name, options)``: each option is a schedule
    (``store-all``, ``sqrt``, ``every(k)``, ``revolve(c)``: ``checkpoint=``) or, for
    jax-rev, a ``jax.checkpoint`` policy name (``policy=``).

    Example:
        >>> method_spec("jax-rev@sqrt+nothing_saveable")
        ('jax-rev', {'checkpoint': 'sqrt', 'policy': 'nothing_saveable'})
    """
    name, _, rest = str(spec).partition("@")
    options: dict[str, Any] = {}
    for token in filter(None, rest.split("+")):
        try:
            schedule = _checkpoint.parse(token)
        except DiffkitError:
            schedule = None
        key = "checkpoint" if schedule is not None else "policy"
        if key in options:
            raise DiffkitError(f"method {spec!r}: two {key} options ({options[key]}, {token})")
        options[key] = schedule.spec if schedule is not None else token
    if "policy" in options and name != "jax-rev":
        raise DiffkitError(
            f"method {spec!r}: {options['policy']!r} is not a schedule (store-all, sqrt, "
            "every(k), revolve(c)); jax.checkpoint policies are jax-rev's"
        )
    return name, options


def _recomputed(name: str, options: dict[str, Any], depth: int) -> int | None:
    """Steps the tape's schedule recomputes for one scan of ``depth`` steps."""
    schedule = _checkpoint.parse(options.get("checkpoint"))
    if name != "tape":
        return None
    return 0 if schedule is None else schedule.plan(depth).recomputed


# --------------------------------------------------------------------------- the front


class MemoryFront:
    """The records of :func:`memory_sweep` (one per method and depth; ``label`` is the
    method spec, ``size`` the depth) with the summaries a memory study needs.

    Example:
        >>> front = memory_sweep("rnn", [8, 32], ["tape", "tape@revolve(2)"], min_time=0.01)
        >>> front.slopes()["tape"] > front.slopes()["tape@revolve(2)"]
        True
    """

    claim = CLAIM

    def __init__(self, records: Sequence[Record], problem: str = "", baseline: str = "") -> None:
        self.records = list(records)
        self.problem = problem or (self.records[0]["problem"] if self.records else "")
        self.baseline = baseline or (self.records[0].get("label", "") if self.records else "")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.records)

    @property
    def labels(self) -> list[str]:
        """The methods, in the order measured."""
        return list(dict.fromkeys(r["label"] for r in self.records))

    @property
    def depths(self) -> list[int]:
        return sorted({r["size"] for r in self.records})

    def get(self, label: str, depth: int) -> Record | None:
        """The record of one method at one depth (None if it was not measured)."""
        found = [r for r in self.records if r["label"] == label and r["size"] == depth]
        return found[0] if found else None

    def slopes(self, field: str = "xla_temp_bytes") -> dict[str, float]:
        """Each method's log-log slope of ``field`` against depth (least squares over the
        depths that finished ok)."""
        out = {}
        for label in self.labels:
            pts = [
                (r["size"], field_named(r, field))
                for r in self.records
                if r["label"] == label and r["outcome"] == OK and r.get(field)
            ]
            if len(pts) >= 2:
                x, y = np.log(np.array(pts, float)).T
                out[label] = float(np.polyfit(x, y, 1)[0])
        return out

    def relative(self, depth: int | None = None) -> dict[str, tuple[float, float]]:
        """``label -> (time, memory)`` relative to the baseline method at ``depth`` (default:
        the deepest), time as the derivative's median run time, memory as XLA's temporaries."""
        depth = depth or self.depths[-1]
        base = self.get(self.baseline, depth)
        if base is None or base["outcome"] != OK:
            raise DiffkitError(f"memory front: baseline {self.baseline!r} has no result at {depth}")
        out = {}
        for label in self.labels:
            r = self.get(label, depth)
            if r is not None and r["outcome"] == OK:
                # FIXME: xla_temp_bytes is None where the backend has no XLA memory analysis
                mem = r["xla_temp_bytes"] / max(base["xla_temp_bytes"], 1)  # type: ignore[operator, type-var]
                out[label] = (r["time_median"] / base["time_median"], mem)
        return out

    def table(self) -> str:
        """One line per case: depth, method, time, temporaries, recomputed steps, rho."""
        head = f"{'L':>6}  {'method':<32} {'time':>10} {'XLA temp':>10} {'recomp':>7} {'rho':>9}"
        lines = [head]
        for r in sorted(self.records, key=lambda r: (r["size"], self.labels.index(r["label"]))):
            if r["outcome"] != OK:
                lines.append(f"{r['size']:>6}  {r['label']:<32} {r['outcome']}: {r['message']}")
                continue
            rec = "-" if r.get("recomputed") is None else str(r["recomputed"])
            lines.append(
                f"{r['size']:>6}  {r['label']:<32} {r['time_median'] * 1e3:>8.3f}ms "
                # FIXME: xla_temp_bytes is None where the backend has no XLA memory analysis
                f"{r['xla_temp_bytes'] / 2**20:>8.3f}MB "  # type: ignore[operator]
                f"{rec:>7} {r.get('rho_max') or 0:>9.2e}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | Path | None = None) -> Path:
        """The front as a PNG (default ``memory-<problem>.png``): memory against time at the
        deepest depth relative to the baseline, the essay's claim marked; and memory against
        depth, log-log, with each method's slope."""
        from diffkit.harness.plots import memory_figure

        return memory_figure(self, Path(path or f"memory-{self.problem}.png"))


def memory_sweep(
    problem: str | Problem,
    depth: Sequence[int] = _DEPTHS,
    methods: Sequence[str] | None = None,
    dtype: str = "float32",
    *,
    min_time: float = 0.1,
    accuracy: bool = True,
    progress: Callable[[Record], None] | None = None,
) -> MemoryFront:
    """Measure each method (a spec for :func:`method_spec`; default :data:`DEFAULT_METHODS`)
    at each depth of ``problem`` in this process: a :class:`MemoryFront`. Records carry
    ``label`` (the spec), ``recomputed`` (the tape's recomputed steps per scan, from its plan)
    and the harness's fields (``time_median``, ``xla_temp_bytes``, ``rss_peak_bytes``,
    ``rho_max``, ...). The first method is the baseline of :meth:`MemoryFront.relative`.

    Example:
        >>> front = memory_sweep("deep-mlp", [4], ["jax-rev", "tape@every(2)"], min_time=0.01)
        >>> [r["outcome"] for r in front], front[1]["recomputed"]
        (['ok', 'ok'], 1)
    """
    methods = list(methods or DEFAULT_METHODS)
    specs = [method_spec(m) for m in methods]
    for name, options in specs:  # an unknown name or option fails now, not after every depth
        resolve(name, **options)
    depths = [int(d) for d in depth]
    if not depths or min(depths) < 1:
        raise DiffkitError(f"memory_sweep: depths must be positive ints, got {list(depth)}")
    prob = get_problem(problem)
    records = []
    for d in depths:
        shared: dict[str, Any] = {}
        for label, (name, options) in zip(methods, specs, strict=True):
            with warnings.catch_warnings():  # the float64 reference, made outside x64 scope
                warnings.filterwarnings("ignore", "Explicitly requested dtype float64")
                rec = run_case(
                    prob, d, name, dtype, min_time=min_time, method_options=options,
                    accuracy=accuracy, reference_cache=shared,
                )  # fmt: skip
            rec["label"] = label
            rec["recomputed"] = _recomputed(name, options, d)
            records.append(rec)
            if progress is not None:
                progress(rec)
    return MemoryFront(records, prob.name, methods[0])
