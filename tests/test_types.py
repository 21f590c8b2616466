"""The package type-checks: mypy, configured in pyproject.toml ([tool.mypy]), reports no error."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~15 s with a cold mypy cache: the full suite runs it, the unit tier not
def test_mypy_reports_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the configuration's files (diffkit) are relative to the root
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, f"mypy exited with {status}:\n{stdout}{stderr}"
