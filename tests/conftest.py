"""Shared fixtures. Float64 is opted into per test with a scoped setting, never globally.

The suite opts into JAX's persistent compilation cache, one per checkout (``.jax-cache/`` at
the repository's root, ignored by git; ``DIFFKIT_TEST_CACHE=off`` turns it off): a warm run
skips most XLA compilation. Every program is kept, however fast it compiled (JAX's default
keeps those over 1 s): the suite's programs are thousands of small ones, each primitive
compiled eagerly in every worker and subprocess, and reading one back is faster than
compiling it (the unit tier on 2 idle cores, side by side: warm, 1 min 53 s keeping those
over 0.1 s, 1 min 15 s keeping all; cold, 2 min 4 s and 2 min 1 s; ~35 MB of cache).
Suites of different checkouts running at once never share it (a shared entry was once seen
truncated; two xdist workers of one suite may still write one entry at once, which JAX
reads as a warning and compiles again). Subprocesses (the CLI, notebooks) inherit it through
the environment.

XLA compiles fast rather than well here (``DIFFKIT_TEST_FAST_COMPILE=off`` turns it off):
most of the suite's time is compiling thousands of small programs (the spec rows, the
gradient doctor's eager walk, one primitive at a time, the notebooks' and the command line's
subprocesses), not running them. LLVM's optimisation level 0 and the CPU backend's elemental
emitters instead of its MLIR fusion emitters compile a small program 2-2.5x faster (40 -> 17
ms for one primitive); the machine code runs slower. Neither is fast-math: the tests compare
derivatives with JAX's own, compiled with the same flags, to tolerances far above rounding.
Set in ``XLA_FLAGS`` before JAX starts its CPU client, so subprocesses inherit it too; a
flag the caller already gave is left as given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

#: Compile-time flags (see above); a flag already in XLA_FLAGS is left as the caller set it.
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")

if os.environ.get("DIFFKIT_TEST_FAST_COMPILE", "on") != "off":
    _given = os.environ.get("XLA_FLAGS", "")
    _added = [f for f in FAST_COMPILE if f.split("=")[0] not in _given]
    os.environ["XLA_FLAGS"] = " ".join([_given, *_added]).strip()

import jax  # noqa: E402  (after XLA_FLAGS: jax reads it when it starts its CPU client)
import pytest  # noqa: E402

if os.environ.get("DIFFKIT_TEST_CACHE", "on") != "off":
    _cache = Path(__file__).resolve().parents[1] / ".jax-cache"  # this checkout's own
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )


@pytest.fixture
def x64() -> Iterator[None]:
    """Run the test with 64-bit floats enabled (scoped to the test)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once in float32 and once in float64 (x64 scoped to the test)."""
    with jax.enable_x64(request.param == "float64"):
        yield request.param


#: Handed out first: xdist gives tests to its workers in collection order, and these long
#: single tests, collected last, kept one worker busy while the other waited (mypy over the
#: package, tests/test_types.py: ~15 s with a cold cache).
FIRST = ("tests/test_types.py::",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(FIRST))  # stable: order kept
