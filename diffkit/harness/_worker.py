"""The worker process of a sweep: ``python -m diffkit.harness._worker``.

It reads one JSON case per line on stdin and answers on its original stdout, one JSON message
per line: ``ready`` once imports are done, ``start`` (with n and m) when a case begins,
``result`` with the record when it ends. Anything the measured code prints goes to stderr, so
it cannot corrupt the protocol. The float64 reference of a problem size is computed once and
reused by every method of that size.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main() -> None:
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
    for line in sys.stdin:
        case = json.loads(line)
        case_id = case.pop("id")

        def started(rec: dict[str, Any], case_id: Any = case_id) -> None:
            send({"event": "start", "id": case_id, "n": rec["n"], "m": rec["m"]})

        rec = run_case(**case, reference_cache=cache, on_start=started)
        send({"event": "result", "id": case_id, "record": rec})


if __name__ == "__main__":
    main()
