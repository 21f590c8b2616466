"""Wall time of ``diffkit compare`` with no arguments (the quick suite), the whole command as
a user types it (issue 31: at most 30 s on 2 idle cores).

Runs the command ``--runs`` times, each into a fresh temporary folder (the ``--out`` the
command writes its results, CSV and PNGs to), and prints each run's wall time, its CPU time
(user + system of the command and its worker), the number of cases it recorded, the
machine's load average before each run, and the medians. The load average matters: on a
shared machine other processes' work slows the suite down; the CPU time much less so (on 2
idle cores the wall time is about the CPU time: the parent mostly waits for the worker).

    PYTHONPATH=. python benchmarks/bench_compare_default.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once() -> tuple[float, float, int]:
    """One ``diffkit compare`` into a fresh folder: its wall and CPU time, the cases recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cpu = _cpu()
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "diffkit", "compare", "--out", tmp],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall, cpu = time.perf_counter() - start, _cpu() - cpu
        if done.returncode != 0:
            raise SystemExit(f"diffkit compare failed ({done.returncode}):\n{done.stderr}")
        cases = sum(1 for line in (Path(tmp) / "results.jsonl").open() if line.strip())
    return wall, cpu, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of the command (default 3)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; diffkit compare (no arguments), {args.runs} runs")
    walls, cpus = [], []
    for i in range(args.runs):
        load = os.getloadavg()[0]
        wall, cpu, cases = run_once()
        walls.append(wall)
        cpus.append(cpu)
        print(
            f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, {cases} cases "
            f"(load average before: {load:.2f})"
        )
    print(f"median wall time: {statistics.median(walls):.1f} s")
    print(f"median CPU time: {statistics.median(cpus):.1f} s")


if __name__ == "__main__":
    main()
