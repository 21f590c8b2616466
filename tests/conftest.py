"""Shared fixtures. Float64 is opted into per test with a scoped setting, never globally."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import pytest


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
