"""Shared fixtures. Float64 is opted into per test with a scoped setting, never globally.

The suite opts into JAX's persistent compilation cache (a directory under the user's cache,
``~/.cache/diffkit/jax-tests``; ``DIFFKIT_TEST_CACHE=off`` turns it off): a warm run skips
most XLA compilation. Subprocesses (the CLI, notebooks) inherit it through the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import jax
import pytest

if os.environ.get("DIFFKIT_TEST_CACHE", "on") != "off":
    _cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffkit"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache / "jax-tests"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
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
