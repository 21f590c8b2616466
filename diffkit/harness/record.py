"""A harness record: one measured case, stored as one JSON line of a results file.

:class:`Record` names every field once, with its type; :data:`OUTCOMES` the outcomes a case
can have; :func:`case_key` the identity of a case. The JSON lines on disk are these dicts as
they are, so results written before this module existed load unchanged.

Example:
    >>> from diffkit.harness.record import case_key, OK
    >>> rec: Record = {"problem": "mlp", "size": 10, "method": "tape", "dtype": "float32",
    ...                "outcome": OK, "meta": {"backend": "cpu"}}
    >>> case_key(rec)
    '["mlp", null, 10, "tape", null, "float32", null, "cpu"]'
"""

from __future__ import annotations

import json
import re
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

__all__ = [
    "OUTCOMES",
    "REQUIRED",
    "RETRYABLE",
    "Record",
    "case_key",
    "field_named",
    "format_bytes",
    "is_out_of_memory",
    "summarize_error",
]

OK, TIMEOUT, OUT_OF_MEMORY, UNSUPPORTED, ERROR, SKIPPED = (
    "ok",
    "timeout",
    "out-of-memory",
    "unsupported",
    "error",
    "skipped",
)
#: A method named with this suffix (``"jax-fwd+sparse"``) measures the method's compressed
#: Jacobian (:mod:`diffkit.sparse`): the pattern detected, coloured, one pass per colour.
SPARSE = "+sparse"
#: Every outcome a case can have.
OUTCOMES = (OK, TIMEOUT, OUT_OF_MEMORY, UNSUPPORTED, ERROR, SKIPPED)
#: Outcomes a resumed sweep retries when given more time or memory.
RETRYABLE = (TIMEOUT, SKIPPED, OUT_OF_MEMORY)


class Record(TypedDict, total=False):
    """One case. Fields that name it come first; the others are filled in as far as the
    case got (a case that failed early has no timings)."""

    # the case: what was asked for
    problem: str
    problem_options: dict[str, Any]
    size: int
    method: str
    method_options: dict[str, Any]
    dtype: str
    seed: int
    # the instance and the method
    n: int | None
    m: int | None
    quantity: str  # "grad" or "jacobian"
    mode: str  # the differentiator's mode: forward, reverse, symbolic, numerical
    passes: int | None
    evaluations: int | None
    # outcome
    outcome: str  # one of OUTCOMES
    message: str
    outcome_by: str  # "harness" when the sweep, not the case, decided the outcome
    failed_in: str  # "primal": the work shared by a size; "startup": the worker's start;
    # "setup": building the problem refused its input (a sweep stops with the message)
    cause: str  # a skipped case: the outcome of the case it was skipped after
    # timings (seconds) and statistics of the samples
    primal_prepare_s: float
    reference_s: float | None
    trace_s: float
    compile_s: float
    first_call_s: float
    time_min: float
    time_median: float
    time_iqr: float
    time_n: int
    primal_min: float
    primal_median: float
    primal_iqr: float
    primal_n: int
    ratio: float  # time_median / primal_median
    case_s: float
    wall_s: float
    worker_start_s: float | None
    # memory (bytes)
    estimated_bytes: int
    primal_xla_bytes: int | None
    xla_temp_bytes: int | None
    xla_bytes: int | None
    rss_peak_bytes: int
    # accuracy against the float64 reference
    rho_max: float | None
    rho_mean: float | None
    reference_crosscheck: float
    tolerance: float
    accurate: bool  # stochastic methods: bias <= 3 bias_se (harness.estimators)
    # stochastic methods: quality over `repeats` keys (harness.estimators.quality)
    cosine: float
    cosine_se: float
    bias: float
    bias_se: float
    second_moment: float
    second_moment_se: float
    second_moment_theory: float
    repeats: int
    # provenance
    date: str
    meta: dict[str, Any]  # backend, versions, matmul_precision, ... (measure.metadata)
    run: str
    budget: float
    memory_limit: float | None
    key: str  # case_key(record)
    host: str  # the machine, and
    device: str  # the GPU ids or "cpu", of a case run by the Ray executor (harness.executors)
    # a compressed Jacobian (method "name+sparse", harness.measure.SPARSE): the pattern's
    # nonzeros, the colours (= passes), "fwd" (columns) or "rev" (rows), the detection's and
    # the colouring's times (s, apart from the derivative's), and the pattern drawn small
    nnz: int
    colours: int
    sparse_mode: str
    detect_s: float
    colour_s: float
    pattern_cells: dict[str, Any]
    # memory fronts (harness.memory): the method spec, and the tape's recomputed steps per scan
    label: str
    recomputed: int | None


#: Fields every stored record has, with their types: a line without them is not a record.
REQUIRED: dict[str, type] = {
    "key": str,
    "outcome": str,
    "problem": str,
    "method": str,
    "dtype": str,
}


def case_key(rec: Record | dict[str, Any]) -> str:
    """The identity of a case: a resumed sweep skips cases whose key is already stored.
    The matmul precision enters only when it is not the default, so keys of results written
    before it was recorded still match."""
    fields = ("problem", "problem_options", "size", "method", "method_options", "dtype", "seed")
    meta = rec.get("meta", {})
    precision = meta.get("matmul_precision", "default")
    return json.dumps(
        [rec.get(f) for f in fields]
        + [meta.get("backend")]
        + ([precision] if precision != "default" else [])
    )


def field_named(rec: Record, name: str) -> Any:
    """``rec[name]``, for a field named at run time (a fit's axis, a column): a type checker
    takes only literal keys of a :class:`Record`. A missing field is a KeyError, as there.

    Example:
        >>> field_named({"problem": "mlp", "n": 10}, "n")
        10
    """
    fields: Mapping[str, Any] = rec
    return fields[name]


def format_bytes(n: float) -> str:
    """Bytes for people: ``"300 MiB"``, ``"1.5 GiB"``.

    Example:
        >>> format_bytes(300 * 2**20), format_bytes(1.5 * 2**30)
        ('300 MiB', '1.5 GiB')
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


#: Words of the runtime's messages (the exception's, or the worker's stderr) that mean an
#: allocation failed: NumPy's MemoryError, XLA's RESOURCE_EXHAUSTED and "Out of memory",
#: C++'s ``std::bad_alloc``, the kernel's ENOMEM.
MEMORY_WORDS = (
    "MemoryError",
    "RESOURCE_EXHAUSTED",
    "Out of memory",
    "out of memory",
    "bad_alloc",
    "Cannot allocate memory",
    "Failed to allocate",
    "failed to allocate",
)
#: A failure that is out of memory only when the worker's stderr shows a failed allocation:
#: XNNPACK/YNNPACK (XLA's CPU matrix kernels) report "operation failed" and print
#: ``allocate of <k> failed.`` lines for the buffers they could not get.
_KERNEL_FAILED = re.compile(r"[XY]NNPACK operation failed")
_ALLOCATION_FAILED = re.compile(r"allocat\w*\b.{0,40}\bfailed|failed to allocate", re.IGNORECASE)


def is_out_of_memory(message: str, stderr: str = "") -> bool:
    """Whether a failure's ``message`` (and the ``stderr`` printed meanwhile) says that an
    allocation failed.

    Example:
        >>> is_out_of_memory("JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory")
        True
        >>> msg = "JaxRuntimeError: INTERNAL: YNNPACK operation failed: error"
        >>> is_out_of_memory(msg), is_out_of_memory(msg, "allocate of <5> failed.\\n")
        (False, True)
    """
    if any(word in message for word in MEMORY_WORDS):
        return True
    return bool(_KERNEL_FAILED.search(message) and _ALLOCATION_FAILED.search(stderr))


#: Where library code lives: a traceback's frames there are not the user's.
_LIBRARY = tuple(
    {str(Path(p).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib")
     if (p := sysconfig.get_paths().get(k))}
    | {str(Path(__file__).resolve().parents[1])}  # diffkit itself
)  # fmt: skip
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def user_frame(frames: list[tuple[str, int, str]]) -> str | None:
    """``"file:line in function"`` of the innermost of ``frames`` (file, line, function)
    that is not library code (the standard library, site-packages, diffkit), or None."""
    for file, line, function in reversed(frames):
        if file.startswith("<") or str(Path(file).resolve()).startswith(_LIBRARY):
            continue
        return f"{file}:{line} in {function}"
    return None


def summarize_error(text: str, frames: list[tuple[str, int, str]] | None = None) -> str:
    """One line for a failure's text: its first line, or, when the text holds a Python
    traceback (an error raised in a callback, a worker's stderr), the traceback's last line
    (the exception); followed by the user's innermost frame, from ``frames`` or the
    traceback's ``File`` lines. At most 300 characters.

    Example:
        >>> text = (
        ...     "INTERNAL: CpuCallback error: Traceback (most recent call last):\\n"
        ...     '  File "/home/me/model.py", line 3, in bad\\n'
        ...     "ValueError: boom"
        ... )
        >>> summarize_error(text)
        'ValueError: boom (at /home/me/model.py:3 in bad)'
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    traceback = any("Traceback (most recent call last)" in ln for ln in lines)
    if traceback:
        frames = [(f, int(n), fn) for ln in lines for f, n, fn in _FRAME.findall(ln)]
    where = user_frame(frames or [])
    line = lines[-1] if traceback else lines[0]
    return (f"{line} (at {where})" if where else line)[:300]
