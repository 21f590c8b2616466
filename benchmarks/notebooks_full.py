"""Every notebook in full mode (no ``DIFFKIT_QUICK``), with the test suite's checks.

    PYTHONPATH=. python benchmarks/notebooks_full.py            # notebooks/*.ipynb, in order
    PYTHONPATH=. python benchmarks/notebooks_full.py 03 05      # those whose names start so
    PYTHONPATH=. python benchmarks/notebooks_full.py 10 --images out/   # and save its figures

Each notebook runs top to bottom in a fresh kernel, as ``tests/test_notebooks.py`` runs the
quick mode: the inline backend renders every figure, each figure's axes must be labelled and
no series all NaN/inf, every figure made must be displayed (the executed notebook carries a
PNG per figure shown), no cell may print a warning, and every claim's assertion must hold on
the full-size numbers, the claims about time included (asserted here only: the test suite's
quick mode prints them). Prints one line per notebook (wall time, outcome, figures checked)
as it finishes; exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _runner():  # the test suite's runner and checks: one copy of them
    spec = importlib.util.spec_from_file_location(
        "test_notebooks", REPO / "tests" / "test_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _why(exc: Exception) -> str:
    """The failing cell's assertions (or last line) and the error, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # no terminal colours
    parts = text.split("-" * 18)
    source = parts[1] if len(parts) > 2 else ""
    asserts = [line.strip() for line in source.splitlines() if line.strip().startswith("assert")]
    error = [
        line for line in text.strip().splitlines() if re.match(r"^\w+(Error|Exception)\b", line)
    ]
    return "; ".join(
        [*(asserts or source.strip().splitlines()[-1:]), *(error[-1:] or [type(exc).__name__])]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose names start so")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell (1200)")
    parser.add_argument(
        "--images", type=Path, help="write each notebook's PNG outputs here, to look at them"
    )
    args = parser.parse_args(argv)
    tests = _runner()
    chosen = [
        p for p in tests.NOTEBOOKS if not args.prefixes or p.name.startswith(tuple(args.prefixes))
    ]
    if not chosen:
        parser.error(f"no notebook starts with {' or '.join(args.prefixes)}")
    failed = 0
    print(f"{'notebook':40s} {'wall s':>8s}  outcome")
    for path in chosen:
        start = time.perf_counter()
        try:
            nb = tests.run_notebook(path, quick=False, timeout=args.timeout)
            outcome = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
            if args.images is not None:
                args.images.mkdir(parents=True, exist_ok=True)
                for k, png in enumerate(tests.image_outputs(nb)):
                    (args.images / f"{path.stem}-{k}.png").write_bytes(base64.b64decode(png))
        except Exception as exc:  # report it and go on to the next notebook
            failed += 1
            outcome = f"FAILED: {_why(exc)}"
        print(f"{path.stem:40s} {time.perf_counter() - start:8.1f}  {outcome}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
