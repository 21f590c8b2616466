"""The worker process of a sweep: ``python -m diffkit.harness._worker``.

It reads one JSON case per line on stdin and answers on its original stdout, one JSON message
per line: ``ready`` once imports are done, ``start`` (with n and m) when a case begins,
``result`` with the record when it ends. Anything the measured code prints goes to stderr, so
it cannot corrupt the protocol. The float64 reference of a problem size is computed once and
reused by every method of that size.

It never outlives the sweep that started it: on Linux the kernel kills it when its parent
dies (``PR_SET_PDEATHSIG``), and a thread checks every 0.2 s that the parent (named by
``DIFFKIT_PARENT_PID``) is still its parent, and exits otherwise. Each case's
``memory_limit`` is also set as the process's ``RLIMIT_DATA``, so an allocation past it fails
in the worker (MemoryError, RESOURCE_EXHAUSTED) before the machine runs short.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from typing import Any

_PR_SET_PDEATHSIG = 1
_SIGKILL = 9


def die_with_parent() -> None:
    """Exit when the process that started this one exits (even by ``kill -9``)."""
    parent = int(os.environ.get("DIFFKIT_PARENT_PID", os.getppid()))
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before the signal was asked for
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

        def started(rec: dict[str, Any], case_id: Any = case_id) -> None:
            send({"event": "start", "id": case_id, "n": rec["n"], "m": rec["m"]})

        rec = run_case(**case, reference_cache=cache, on_start=started)
        send({"event": "result", "id": case_id, "record": rec})


if __name__ == "__main__":
    main()
