"""The sweep's worker process, in a module that imports neither JAX nor the rest of diffkit,
so that the command line can start a worker before it imports JAX itself (both start-ups
then overlap): :func:`prestart` starts one, :func:`take` hands it to the next sweep.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

from diffkit._errors import DiffkitError

#: Seconds the work shared by the methods of one size (compiling the primal, computing the
#: float64 reference) may take, apart from each method's budget.
SHARED_TIMEOUT = 300.0

#: Seconds a fresh worker may take to import JAX and diffkit.
STARTUP_TIMEOUT = 120.0


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _meminfo(field: str) -> int | None:
    """A field of ``/proc/meminfo`` in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


#: Share of the memory available at the start of a sweep that its worker may use: the rest
#: is head-room for this process and whatever else runs on the machine.
MEMORY_SHARE = 0.7


def default_memory_limit() -> float | None:
    """Bytes a sweep's worker may use by default: ``MEMORY_SHARE`` of the memory *available*
    now (``MemAvailable`` of ``/proc/meminfo``, not physical memory, so other programs keep
    theirs), or half of physical memory where that is not known; None if neither is.

    Example:
        >>> from diffkit._process import default_memory_limit
        >>> limit = default_memory_limit()
        >>> limit is None or 0 < limit < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        True
    """
    available = _meminfo("MemAvailable")
    if available is not None:
        return MEMORY_SHARE * available
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


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


_MEMORY_WORDS = ("bad_alloc", "MemoryError", "RESOURCE_EXHAUSTED", "Cannot allocate memory")


class Worker:
    """One ``python -m diffkit.harness._worker`` process and a thread reading its answers.
    It starts in the background; the first :meth:`run` waits until it is ready."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.startup_s: float | None = None
        self.env = env = _environment()
        self.errors: IO[str] = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "diffkit.harness._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env=env,
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _wait_ready(self) -> None:
        if self.startup_s is not None:
            return
        ready = self._next(self.started + STARTUP_TIMEOUT, None)
        if not isinstance(ready, dict) or ready.get("event") != "ready":
            self.close()
            raise DiffkitError(f"the sweep's worker process failed to start: {self._last_error()}")
        self.startup_s = time.perf_counter() - self.started

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.messages.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        self.messages.put(None)

    def _next(self, deadline: float, memory_limit: float | None) -> dict[str, Any] | str | None:
        """The next message; "timeout" or "out-of-memory" (after killing the process); or
        None when the process has died."""
        while True:
            try:
                return self.messages.get(timeout=0.05)
            except queue.Empty:
                pass
            if time.perf_counter() > deadline:
                self.kill()
                return "timeout"
            rss = _rss_bytes(self.proc.pid) if memory_limit else None
            if rss is not None and memory_limit is not None and rss > memory_limit:
                self.kill()
                return "out-of-memory"

    def run(
        self, case: dict[str, Any], budget: float, memory_limit: float | None
    ) -> tuple[dict[str, Any] | None, str, str, dict[str, Any]]:
        """Run one case: ``(record or None, outcome, message, start message)``."""
        self._wait_ready()
        assert self.proc.stdin is not None
        case = {**case, "memory_limit": memory_limit}  # the worker limits itself too
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        # The shared work of a size (primal, reference) gets its own deadline; the budget
        # clock starts when the worker reports the method's own work has begun.
        deadline = time.perf_counter() + max(SHARED_TIMEOUT, budget)
        start: dict[str, Any] = {}
        while True:
            msg = self._next(deadline, memory_limit)
            if msg == "timeout":
                if not start:
                    what = "the primal and float64 reference of this size"
                    return None, "timeout", f"{what} took over {SHARED_TIMEOUT:g} s", start
                return None, "timeout", f"exceeded the budget of {budget:g} s", start
            if msg == "out-of-memory":
                limit = format_bytes(memory_limit) if memory_limit else "?"
                return None, "out-of-memory", f"resident memory passed {limit}", start
            if msg is None:
                code = self.proc.wait()
                last = self._last_error()
                # -9: the kernel's out-of-memory killer; an allocation refused under the
                # worker's own limit (RLIMIT_DATA) aborts C++ code with bad_alloc.
                memory = code == -9 or any(s in last for s in _MEMORY_WORDS)
                outcome = "out-of-memory" if memory else "error"
                return None, outcome, f"worker died (exit {code}): {last}", start
            assert isinstance(msg, dict)
            if msg.get("event") == "start":
                start = msg
                deadline = time.perf_counter() + budget
            elif msg.get("event") == "result":
                return msg["record"], msg["record"]["outcome"], msg["record"]["message"], start

    def _last_error(self) -> str:
        self.errors.seek(0)
        lines = [ln.strip() for ln in self.errors.read().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "no message"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """End the process: it holds nothing unsaved once its last answer is in, and a
        graceful exit (JAX's teardown) would cost a second."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.kill()
        self.errors.close()


_SPARE: list[Worker] = []


def _environment() -> dict[str, str]:
    """The worker's environment: this process's, with its import path."""
    paths = [p or os.getcwd() for p in sys.path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env["DIFFKIT_PARENT_PID"] = str(os.getpid())  # the worker exits once this process is gone
    return env


def prestart() -> None:
    """Start a worker in the background for the next :func:`take` (the environment, such as
    ``JAX_PLATFORMS``, must be final by now: the worker inherits it)."""
    if not _SPARE:
        _SPARE.append(Worker())


def take() -> Worker:
    """The worker started by :func:`prestart` if it has this process's environment and
    import path still, else a new one."""
    while _SPARE:
        spare = _SPARE.pop()
        if spare.env == _environment() and spare.proc.poll() is None:
            return spare
        spare.close()
    return Worker()


@atexit.register
def close_spares() -> None:
    """End a started worker that no sweep took."""
    while _SPARE:
        _SPARE.pop().close()
