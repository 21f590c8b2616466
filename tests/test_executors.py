"""Sweep executors (:mod:`diffkit.harness.executors`): the local one stays the default and
never imports Ray; a sweep through a local Ray instance (2 CPUs) writes the same records as
the local executor (apart from timing fields), and ``kill -9`` of the Ray worker running a
case loses only that case, which a resumed sweep runs again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import diffkit as dk
from diffkit._core.errors import DiffkitError
from diffkit.harness.executors import RayExecutor, executor_of

CASES = {"problems": ["mlp"], "sizes": [10], "methods": ["jax-rev", "tape"]}
#: Fields that differ between two runs of the same case: timings, memory use, provenance.
VARYING = {"date", "run", "memory_limit", "rss_peak_bytes", "ratio", "host", "device"}


def _comparable(rec: dict) -> dict:
    return {
        k: v
        for k, v in rec.items()
        if k not in VARYING and not k.endswith("_s") and not k.startswith(("time_", "primal_"))
    }


@pytest.mark.slow  # a fresh interpreter: ~1.6 s on 2 cores
def test_import_and_the_local_executor_do_not_import_ray() -> None:
    code = (
        "import sys, diffkit as dk\n"
        "res = dk.harness.sweep('rosenbrock', [10], ['tape'], min_time=0.01, isolate=False)\n"
        "assert res[0]['outcome'] == 'ok'\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_executor_names() -> None:
    assert executor_of("local") is None
    assert executor_of("ray", address="auto") == RayExecutor(address="auto")
    with pytest.raises(DiffkitError, match="unknown executor 'dask'; choose one of: local, ray"):
        executor_of("dask")


def test_command_line_options(monkeypatch) -> None:
    from diffkit.cli import _host_devices, build_parser

    args = build_parser().parse_args(
        ["compare", "--problem", "mlp-sharded", "--devices", "1,2,8", "--executor", "ray",
         "--address", "auto"]
    )  # fmt: skip
    assert (args.executor, args.address, args.devices) == ("ray", "auto", "1,2,8")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    with _host_devices(args.devices):  # simulated devices for the largest count, then restored
        assert os.environ["XLA_FLAGS"].endswith("--xla_force_host_platform_device_count=8")
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"


def _ray_case_pids() -> list[int]:
    """Ray worker processes running a case (Ray titles them after the task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"_run_case" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _kill_first_case(killed: list[int], stop: threading.Event) -> None:
    while not stop.is_set() and not killed:
        for pid in _ray_case_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            break
        time.sleep(0.05)


@pytest.fixture(scope="module")
def local_ray():
    executor = RayExecutor(num_cpus=2, cpus_per_case=1)
    executor.start()
    yield executor
    import ray  # the ray extra: only the slow test below needs it (never skipped)

    ray.shutdown()


@pytest.mark.slow  # a Ray instance and four worker processes: ~40 s on 2 loaded cores
def test_ray_sweep_matches_local_and_a_killed_case_is_rerun(tmp_path, local_ray) -> None:
    out = tmp_path / "ray.jsonl"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_case, args=(killed, stop), daemon=True)
    killer.start()
    try:
        first = dk.harness.sweep(**CASES, min_time=0.01, out=out, executor=local_ray)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    assert len(first) == 1 and first[0]["outcome"] == "ok"  # only the killed case is lost
    stored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(stored) == 1

    resumed = dk.harness.sweep(**CASES, min_time=0.01, out=out, executor=local_ray)
    stored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(stored) == 2  # the lost case alone was measured again
    assert {r["key"] for r in stored} == {r["key"] for r in resumed}
    assert stored[1]["run"] != stored[0]["run"]
    assert stored[1]["host"] and stored[1]["device"] == "cpu"

    local = dk.harness.sweep(**CASES, min_time=0.01, out=tmp_path / "local.jsonl")
    assert [_comparable(r) for r in resumed] == [_comparable(r) for r in local]
    assert all(r["accurate"] for r in local)
