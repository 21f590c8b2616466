"""The sweep's worker process, both sides, in a module that imports neither JAX nor the rest of
diffkit at import time, so that the command line can start a worker before it imports JAX
itself (both start-ups then overlap).

**Parent side.** :class:`Worker` is one worker process and a thread reading its answers;
:func:`prestart` starts one, :func:`take` hands it to the next sweep. :meth:`Worker.run`
runs one case and returns an :class:`Answer`: the worker's record, or the outcome the parent
decided (a timeout or the memory limit: it kills the process; a death; a failed start). A
start may take :func:`startup_timeout` (scaled by the machine's load) and is tried twice.

**Child side** (:func:`main`, run as ``python -m diffkit.harness.worker``). It reads one JSON
case per line on stdin and answers on its original stdout, one JSON message per line:
``ready`` once imports are done, ``start`` (with n and m) when the method's own work begins,
``result`` with the record when it ends. Anything the measured code prints goes to stderr,
so it cannot corrupt the protocol. The work shared by the methods of a size (loading the
user's target, building the inputs, the primal, the float64 reference) is done once and
reused by every method of that size; the user's code runs only here.

It never outlives the sweep that started it: on Linux a boot script (``_BOOT``) asks the
kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``) before Python imports anything
else, then becomes the worker; and a thread checks every 0.2 s that the parent (named by
``DIFFKIT_PARENT_PID``) is still its parent, and exits otherwise. Each case's
``memory_limit`` is also set as the process's ``RLIMIT_DATA``, so an allocation past it fails
in the worker (MemoryError, RESOURCE_EXHAUSTED) before the machine runs short.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any, NamedTuple

from diffkit.harness.record import (
    ERROR,
    OUT_OF_MEMORY,
    TIMEOUT,
    Record,
    format_bytes,
    is_out_of_memory,
    summarize_error,
)

#: Seconds a fresh worker may take to import JAX and diffkit on an idle machine; scaled by
#: the load per core (:func:`startup_timeout`), and doubled for the second try.
STARTUP_TIMEOUT = 120.0


def startup_timeout() -> float:
    """Seconds a fresh worker may take to start here and now: :data:`STARTUP_TIMEOUT`, times
    the load average per core when the machine is busier than one runnable process per core
    (imports then take as many times longer).

    Example:
        >>> from diffkit.harness.worker import STARTUP_TIMEOUT, startup_timeout
        >>> startup_timeout() >= STARTUP_TIMEOUT
        True
    """
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):  # not on every platform
        load = 1.0
    return STARTUP_TIMEOUT * max(1.0, load)


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
        >>> from diffkit.harness.worker import default_memory_limit
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


class Answer(NamedTuple):
    """What :meth:`Worker.run` saw of a case: the worker's ``record``, or None when the
    parent decided the ``outcome`` (with its ``message``); ``start``: the worker's start
    message (n, m) if the method's own work began; ``stage``: where the case ended
    (``"startup"``: the worker never started; ``"primal"``: in the work shared by its size;
    ``"method"``)."""

    record: Record | None
    outcome: str
    message: str
    start: dict[str, Any]
    stage: str


#: A child's first statements, before Python imports anything of diffkit or JAX (``-S``: not
#: even the site packages): ask the kernel to kill it when its parent dies, exit if that
#: happened already, then become the worker (the request survives ``exec``).
_BOOT = """
import ctypes, os, sys
try:
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
except Exception:
    pass
if os.environ.get("DIFFKIT_PARENT_PID", str(os.getppid())) != str(os.getppid()):
    os._exit(1)
os.execv(sys.executable, [sys.executable, "-m", "diffkit.harness.worker"])
"""


class Worker:
    """One ``python -m diffkit.harness.worker`` process and a thread reading its answers.
    It starts in the background; the first :meth:`run` waits until it is ready (within
    :func:`startup_timeout`, and a second start with twice as long if the first fails)."""

    def __init__(self) -> None:
        self.startup_s: float | None = None
        self.env = _environment()
        self.errors: IO[str] = tempfile.TemporaryFile("w+")
        self._spawn()

    def _spawn(self) -> None:
        self.started = time.perf_counter()
        boot = ["-S", "-c", _BOOT] if sys.platform.startswith("linux") else []
        self.proc = subprocess.Popen(
            [sys.executable, *(boot or ["-m", "diffkit.harness.worker"])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env=self.env,
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=_read, args=(self.proc, self.messages), daemon=True).start()

    def start(self) -> str | None:
        """Wait until the worker is ready: None once it is, else why it failed to start
        (twice; the process is then ended)."""
        if self.startup_s is not None:
            return None
        why = ""
        for attempt in (1, 2):
            if attempt == 2:
                self._spawn()
            timeout = attempt * startup_timeout()
            ready = self._next(self.started + timeout, None)
            if isinstance(ready, dict) and ready.get("event") == "ready":
                self.startup_s = time.perf_counter() - self.started
                return None
            self.kill()
            why = (
                f"not ready after {timeout:.3g} s"
                if ready == "timeout"
                else f"exit {self.proc.returncode}: {self._errors_since(0)}"
            )
        return f"the worker process failed to start, twice ({why})"

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

    def run(self, case: dict[str, Any], budget: float, memory_limit: float | None) -> Answer:
        """Run one case. The work shared by the methods of a size (loading the target,
        building the inputs, the primal, the float64 reference) and the method's own work
        each get ``budget`` seconds; the process is killed past either, or past
        ``memory_limit`` bytes resident."""
        why = self.start()
        if why is not None:
            return Answer(None, ERROR, why, {}, "startup")
        assert self.proc.stdin is not None
        case = {**case, "memory_limit": memory_limit}  # the worker limits itself too
        mark = self._errors_size()
        try:
            self.proc.stdin.write(json.dumps(case) + "\n")
            self.proc.stdin.flush()
        except OSError:  # it died since it was ready: the messages say how
            pass
        deadline = time.perf_counter() + budget
        start: dict[str, Any] = {}
        while True:
            msg = self._next(deadline, memory_limit)
            stage = "method" if start else "primal"
            if msg == "timeout":
                what = "" if start else SHARED_WORK
                return Answer(
                    None, TIMEOUT, f"exceeded the budget of {budget:g} s{what}", start, stage
                )
            if msg == "out-of-memory":
                limit = format_bytes(memory_limit) if memory_limit else "?"
                what = f"resident memory passed {limit}" + ("" if start else SHARED_WORK)
                return Answer(None, OUT_OF_MEMORY, what, start, stage)
            if msg is None:
                code = self.proc.wait()
                printed = self._errors_since(mark)
                # -9: the kernel's out-of-memory killer; an allocation refused under the
                # worker's own limit (RLIMIT_DATA) aborts C++ code with bad_alloc.
                memory = code == -9 or is_out_of_memory(printed)
                outcome = OUT_OF_MEMORY if memory else ERROR
                return Answer(None, outcome, f"worker died (exit {code}): {printed}", start, stage)
            assert isinstance(msg, dict)
            if msg.get("event") == "start":
                start = msg
                deadline = time.perf_counter() + budget
            elif msg.get("event") == "result":
                rec: Record = msg["record"]
                if rec["outcome"] == ERROR and is_out_of_memory(
                    rec["message"], self._errors_since(mark, summary=False)
                ):  # e.g. YNNPACK's "operation failed" after failed allocations
                    rec["outcome"] = OUT_OF_MEMORY
                    rec["message"] += " (allocations failed: out of memory)"
                return Answer(rec, rec["outcome"], rec["message"], start, stage)

    def _errors_size(self) -> int:
        try:
            return os.fstat(self.errors.fileno()).st_size
        except (OSError, ValueError):  # closed
            return 0

    def _errors_since(self, mark: int, summary: bool = True) -> str:
        """What the worker printed on stderr since byte ``mark`` (its last megabyte): in one
        line (:func:`~diffkit.harness.record.summarize_error`), or all of it."""
        size = self._errors_size()
        try:
            start = max(mark, size - 2**20)
            text = os.pread(self.errors.fileno(), size - start, start).decode(errors="replace")
        except (OSError, ValueError):
            text = ""
        if not summary:
            return text
        return summarize_error(text) or "no message"

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


#: Said of a time-out or memory limit reached before the method's own work began.
SHARED_WORK = (
    " (loading the target, building the inputs, compiling and running the primal, "
    "the float64 reference)"
)


def _read(proc: subprocess.Popen[str], messages: queue.Queue[dict[str, Any] | None]) -> None:
    """Put each JSON line ``proc`` writes on ``messages``, then None once it ends."""
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            messages.put(json.loads(line))
        except json.JSONDecodeError:
            continue
    messages.put(None)


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


# ------------------------------------------------------------ the child side


def die_with_parent() -> None:
    """Exit when the process that started this one exits (even by ``kill -9``): at once if
    it has already, else from a thread that watches it. (On Linux the kernel's parent-death
    signal, asked for by ``_BOOT``, is quicker still.)"""
    parent = int(os.environ.get("DIFFKIT_PARENT_PID", os.getppid()))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    if os.getppid() != parent:  # the parent died while this process started
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def limit_memory(limit: float | None) -> None:
    """Set the soft ``RLIMIT_DATA`` to ``limit`` bytes (None: the hard limit)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        want = hard if not limit else int(limit)
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        if want != soft:
            resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
    except (ValueError, OSError, AttributeError):
        pass


def main() -> None:
    die_with_parent()
    started = time.perf_counter()
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints go to stderr

    def send(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    from diffkit.harness.measure import metadata, run_case

    metadata()  # initialise the backend before the first case is timed
    send({"event": "ready", "import_s": time.perf_counter() - started})
    cache: dict[Any, Any] = {}
    for line in sys.stdin:  # ends when the parent closes the pipe (or dies)
        case = json.loads(line)
        case_id = case.pop("id")
        limit_memory(case.get("memory_limit"))

        def on_start(rec: Record, case_id: Any = case_id) -> None:
            send({"event": "start", "id": case_id, "n": rec["n"], "m": rec["m"]})

        rec = run_case(**case, reference_cache=cache, on_start=on_start)
        send({"event": "result", "id": case_id, "record": rec})


if __name__ == "__main__":
    main()
