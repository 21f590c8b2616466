"""The `diffkit` command, run in-process and as `python -m diffkit`."""

from __future__ import annotations

import subprocess
import sys

import diffkit as dk
from diffkit.cli import main


def test_compare_default_prints_every_differentiator(capsys) -> None:
    assert main(["compare"]) == 0
    out = capsys.readouterr().out
    for name in dk.names():
        assert name in out
    assert "0.46285625" in out or "0.46285626" in out
    w11 = next(line for line in out.splitlines() if line.startswith("w11"))
    assert w11.split()[1:] == ["-0.22231013"] * len(dk.names())


def test_compare_unknown_method_is_one_line_error(capsys) -> None:
    assert main(["compare", "--methods", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown differentiator 'nope'" in err


def test_python_dash_m_and_list() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "diffkit", "list"], capture_output=True, text=True, check=True
    )
    assert "jax-rev" in done.stdout and "reverse" in done.stdout
