"""Where a sweep's cases run: ``local`` (the sweep's own worker process on this machine; the
default, nothing to install) or ``ray`` (a Ray cluster, ``pip install 'diffkit[ray]'``).

With ``ray`` each case is a Ray task in a fresh Ray worker process (``max_calls=1``) holding
the resources the case declares: ``num_gpus`` GPUs (1, or the ``devices`` of a sharded
problem, on a GPU backend) or ``cpus_per_case`` CPU cores (default: every core of a node, so
two timed cases never share a machine's cores; give fewer to trade timing quality for
throughput). Inside the task the case runs exactly as it does locally: in a
``python -m diffkit.harness.worker`` process (:class:`diffkit.harness.worker.Worker`) under the
same time budget and memory limit, so timeouts, out-of-memory and crashes of the measured
code become the same outcomes, and the record is the same JSON line, plus ``host`` and
``device`` (the GPU ids Ray assigned, or ``cpu``). Records stream back into the sweep's
append-only file as tasks finish. Cases of one series (problem, options, method, dtype) run
in ascending size, one after another, so a timeout or out-of-memory skips the larger sizes
as locally; different series run side by side.

Ray sets ``OMP_NUM_THREADS`` to the cores a task holds, and XLA's CPU backend runs that many
threads: with fewer cores than a local run has, a float64 sum can be reduced in another order
and differ in its last bit (measured on the quick suite with ``cpus_per_case=1`` on 2 cores:
the float64 reference's cross-check at ``mlp`` n=1e4, 1.0e-16 against 2.0e-16 locally, and
the stochastic estimators' statistics there in the 16th digit; every other field equal).

A Ray worker or node that dies takes only its running cases with it: they are *not*
recorded (the sweep reports them as lost), so ``resume`` runs them again. Ray is imported
only when this executor is used: ``import diffkit`` and the local executor never import it.

Example:
    >>> from diffkit.harness.executors import executor_of
    >>> executor_of("local") is None, type(executor_of("ray")).__name__
    (True, 'RayExecutor')
"""

from __future__ import annotations

import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diffkit._core.errors import DiffkitError

if TYPE_CHECKING:
    from diffkit.harness.record import Record

__all__ = ["EXECUTORS", "RayExecutor", "executor_of"]

#: The executors a sweep accepts by name.
EXECUTORS = ("local", "ray")


@dataclass
class RayExecutor:
    """Run a sweep's cases as Ray tasks.

    ``address``: the cluster (``"auto"``: the one ``ray start`` runs on this machine; None:
    a local instance started for this sweep with ``num_cpus`` cores); ``cpus_per_case``:
    cores each case holds (None: a whole node's); ``gpus_per_case``: GPUs each case holds
    (None: 1 on a GPU backend, times a sharded problem's ``devices``; 0 on CPU).
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_case: int | None = None
    gpus_per_case: int | None = None

    def start(self) -> Any:
        try:
            import ray
        except ImportError:
            raise DiffkitError(
                "the ray executor needs Ray: pip install 'diffkit[ray]' (or use --executor local)"
            ) from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": False}
            if self.address is None:
                kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
            try:
                with warnings.catch_warnings():  # JAX warns of any fork once it runs threads;
                    warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)  # Ray's is exec'd
                    ray.init(**kwargs)
            except ConnectionError as e:
                raise DiffkitError(
                    f"cannot reach the Ray cluster at {self.address!r} ({e}); start one with "
                    "`ray start --head` or leave --address out for a local instance"
                ) from None
        return ray

    def resources(self, ray: Any, case: Record, backend: str) -> dict[str, Any]:
        """The Ray resources a case declares (see the class docstring)."""
        gpus = self.gpus_per_case
        if gpus is None:
            devices = int(case["problem_options"].get("devices", 1) or 1)
            gpus = devices if backend in ("gpu", "cuda", "rocm") else 0
        cpus = self.cpus_per_case
        if cpus is None:
            nodes = [n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")]
            cpus = int(min(nodes)) if nodes else 1
        return {"num_cpus": cpus, "num_gpus": gpus}


def executor_of(spec: str | RayExecutor | None, address: str | None = None) -> RayExecutor | None:
    """The executor a sweep's ``executor`` argument names: None for ``"local"``.

    Example:
        >>> executor_of("ray", address="auto").address
        'auto'
    """
    if spec is None or spec == "local":
        return None
    if isinstance(spec, RayExecutor):
        return spec
    if spec == "ray":
        return RayExecutor(address=address)
    raise DiffkitError(f"unknown executor {spec!r}; choose one of: {', '.join(EXECUTORS)}")


def _run_case(request: dict[str, Any], budget: float, memory_limit: float | None) -> dict[str, Any]:
    """The Ray task: one case in a fresh ``diffkit.harness.worker`` process, as locally."""
    from diffkit.harness import worker as workers

    started = time.perf_counter()
    worker = workers.Worker()
    try:
        answer = worker.run(request, budget, memory_limit)
    finally:
        worker.close()
    try:
        import ray

        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    except Exception:
        gpus = []
    return {
        **answer._asdict(),  # record, outcome, message, start, stage
        "host": socket.gethostname(),
        "device": ",".join(f"gpu:{g}" for g in gpus) or "cpu",
        "worker_start_s": worker.startup_s,
        "wall_s": time.perf_counter() - started,
    }


def remote_sweep(
    executor: RayExecutor,
    groups: list[tuple[Any, str, list[Record]]],
    done: dict[str, Record],
    append: Callable[[Record], None],
    skipped: Callable[[Record, Record], Record],
    settings: dict[str, Any],
    progress: Callable[[Record, int, int], None] | None,
) -> list[Record]:
    """Run the cases of ``groups`` not in ``done`` on ``executor``, passing each new record to
    ``append`` (the sweep's results file) as it arrives; returns every record (stored ones
    included) in plan order. ``skipped(case, cause)`` is the record of a size skipped after
    ``cause``; ``settings``: budget, memory_limit, min_time, accuracy, run (the sweep's)."""
    from diffkit.harness.measure import finish_record, harness_record, metadata
    from diffkit.harness.record import ERROR, OUT_OF_MEMORY, TIMEOUT

    ray = executor.start()
    backend = metadata()["backend"]
    task = ray.remote(max_calls=1, max_retries=0)(_run_case)
    order = [finish_record(c.copy(), ERROR)["key"] for *_, cases in groups for c in cases]
    by_series: dict[tuple[Any, ...], list[Record]] = {}
    for _, dtype, cases in groups:
        for case in cases:
            key = (case["problem"], repr(case["problem_options"]), case["method"], dtype)
            by_series.setdefault(key, []).append(case)
    found: dict[str, Record] = {}
    lost: list[str] = []
    running: dict[Any, tuple[tuple[Any, ...], Record, float]] = {}
    pending = {k: iter(v) for k, v in by_series.items()}
    total = len(order)

    def finish(rec: Record, new: bool) -> None:
        if new:
            rec.update({"run": settings["run"], "budget": settings["budget"]})
            rec["memory_limit"] = settings["memory_limit"]
            append(rec)
        found[rec["key"]] = rec
        if progress is not None:
            progress(rec, len(found) + len(lost), total)

    def submit_next(key: tuple[Any, ...]) -> None:
        for case in pending[key]:
            stored = done.get(finish_record(case.copy(), ERROR)["key"])
            if stored is not None:
                finish(stored, False)
                if stored["outcome"] in (TIMEOUT, OUT_OF_MEMORY):
                    _skip_rest(key, stored)
                    return
                continue
            request = {
                "id": 0,
                **{k: case[k] for k in ("problem", "problem_options", "size", "method")},
                **{k: case[k] for k in ("dtype", "seed")},
                "min_time": settings["min_time"],
                "accuracy": settings["accuracy"],
            }
            options = executor.resources(ray, case, backend)
            ref = task.options(**options).remote(
                request, settings["budget"], settings["memory_limit"]
            )
            running[ref] = (key, case, time.perf_counter())
            return

    def _skip_rest(key: tuple[Any, ...], cause: Record) -> None:
        for case in pending[key]:
            stored = done.get(finish_record(case.copy(), ERROR)["key"])
            finish(stored or skipped(case, cause), stored is None)

    try:
        for key in pending:
            submit_next(key)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            key, case, started = running.pop(ready[0])
            try:
                answer = ray.get(ready[0])
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.ObjectLostError, ray.exceptions.TaskCancelledError):  # fmt: skip
                # not recorded: resume runs it
                lost.append(finish_record(case.copy(), ERROR)["key"])
                if progress is not None:
                    progress({**case, "outcome": "lost"}, len(found) + len(lost), total)
                submit_next(key)
                continue
            rec = answer["record"]
            if rec is None:  # the worker could not answer: the outcome the task saw
                rec = harness_record(
                    case, answer["outcome"], answer["message"], answer["start"],
                    answer["stage"], time.perf_counter() - started,
                )  # fmt: skip
            if rec.get("failed_in") == "setup":  # bad input: one line, as a local sweep
                raise DiffkitError(rec["message"].removeprefix("DiffkitError: "))
            rec.update(
                {"host": answer["host"], "device": answer["device"], "wall_s": answer["wall_s"]}
            )
            rec["worker_start_s"] = answer["worker_start_s"]
            finish(rec, True)
            if rec["outcome"] in (TIMEOUT, OUT_OF_MEMORY):
                _skip_rest(key, rec)
            else:
                submit_next(key)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
    if lost:
        print(
            f"diffkit: {len(lost)} case(s) lost with their Ray worker or node; run the sweep "
            "again with resume to measure them",
            file=sys.stderr,
        )
    return [found[k] for k in order if k in found]
