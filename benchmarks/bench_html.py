"""Sizes and browser render times of the HTML pages (issue 21: "diffkit report on the quick
suite renders in under 2 s in the browser").

Runs the quick suite (``diffkit compare``) into a temporary folder unless a results folder is
given, writes ``diffkit report`` of it and ``diffkit explain --html`` (the worked example),
then opens each page from disk in headless Chromium (Debian's /usr/bin/chromium through
Playwright) several times and prints the file size, the Python build time, and the render
time: from navigation start to the end of the page's first drawing
(``window.diffkitRenderMs``), median and maximum over the loads. It also checks that every
heat-map cell shows its record's ratio (three digits) or its failure.

    PYTHONPATH=. python benchmarks/bench_html.py [--results results/] [--loads 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from diffkit.html import load_results, report


def loads(browser, path: Path, n: int) -> tuple[list[float], list[str]]:
    times, errors = [], []
    for _ in range(n):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(path.as_uri())
        page.wait_for_function("window.diffkitReady === true")
        times.append(page.evaluate("window.diffkitRenderMs || performance.now()"))
        page.close()
    return times, errors


def cells_match(browser, path: Path, records: list[dict]) -> int:
    page = browser.new_page()
    page.goto(path.as_uri())
    page.wait_for_function("window.diffkitReady === true")
    cells = page.eval_on_selector_all(
        "#heat td.cell", "cs => cs.map(c => [Number(c.dataset.index), c.textContent])"
    )
    page.close()
    for index, text in cells:
        rec = records[index]
        if rec["outcome"] == "ok":
            shown = float(text.rstrip("x !").replace("\u2009", ""))
            assert abs(shown - rec["ratio"]) <= 5e-3 * rec["ratio"], (text, rec["ratio"])
        else:
            assert text == rec["outcome"], (text, rec["outcome"])
    return len(cells)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", help="a results folder (default: run the quick suite now)")
    ap.add_argument("--loads", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_html"))
    results = Path(args.results) if args.results else work / "quick"
    if not args.results:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "diffkit", "compare", "--out", str(results)]
        subprocess.run(cmd, check=True, capture_output=True)
        print(f"quick suite measured in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    res = load_results([results])
    page = report(res).save(work / "report.html")
    built_report = time.perf_counter() - start
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "diffkit", "explain", "--html", str(work / "explain.html")]
    subprocess.run(cmd, check=True, capture_output=True)
    built_explain = time.perf_counter() - start
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        matched = cells_match(browser, page, report(res).data["records"])
        print(f"heat map: {matched} cells, each equal to its record ({len(res)} records)")
        for name, path, built in (
            ("report (quick suite)", page, f"{built_report:.2f} s in Python"),
            ("explain (worked example)", work / "explain.html", f"{built_explain:.1f} s CLI"),
        ):
            times, errors = loads(browser, path, args.loads)
            print(
                f"{name}: {path.stat().st_size / 1024:.0f} KiB, built {built}; render "
                f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms over "
                f"{len(times)} loads; console errors: {len(errors)}"
            )
        browser.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
