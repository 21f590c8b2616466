"""The HTML pages in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright through ``executable_path``; never a downloaded browser) opens each page from
disk, clicks through it, reads the numbers back and compares them with the library's and
with hand-computed ones, checks the console stays clean and the controls are labelled and
reachable by keyboard, and saves screenshots at 1280x800 and 390x844 (into the folder named
by ``DIFFKIT_SCREENSHOTS``, else a temporary folder).

No browser is an error, not a skip: ``.ci/run`` installs ``chromium``; run as root, this
module installs it with apt-get itself when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _html import hand_worked_example, records, worked_page

from diffkit.harness import Results
from diffkit.harness.measure import pattern_cells
from diffkit.harness.sparse_families import pde_1d_pattern
from diffkit.html import report

pytestmark = pytest.mark.browser  # the unit tier deselects it: -m "not browser"

SIZES = {"wide": (1280, 800), "narrow": (390, 844)}


def find_chromium() -> str:
    """Chromium's executable; installed with apt-get when missing and running as root."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                        ["apt-get", "install", "-y", "chromium"]):  # fmt: skip
            subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
            found = shutil.which("chromium")
            if found:
                break
    if not found:
        pytest.fail(
            "no Chromium: install Debian's package (apt-get install -y chromium; .ci/run does) "
            "so that the HTML pages can be tested in a real browser"
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("no Playwright: python3 -m pip install -e '.[test]' (the test extra has it)")
    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to run as root (containers, CI)
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("DIFFKIT_SCREENSHOTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser: Any, path: Path, size: str) -> tuple[Any, list[str]]:
    """The page at ``path`` in a fresh window; the list collects console errors."""
    width, height = SIZES[size]
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request", lambda r: errors.append(f"fetched {r.url}") if r.url != path.as_uri() else None
    )
    page.goto(path.as_uri())
    page.wait_for_function("window.diffkitReady === true")
    return page, errors


def number(text: str) -> float:
    """The last number in ``text`` (thin spaces between thousands allowed)."""
    found = re.findall(r"-?\d[\d\u2009]*\.?\d*(?:e[-+]\d+)?", text)
    assert found, text
    return float(found[-1].replace("\u2009", ""))


UNLABELLED = """() => {
  const byId = (id) => (document.getElementById(id || "-") || { textContent: "" }).textContent;
  const name = (e) => (e.getAttribute("aria-label")
    || (e.labels ? [...e.labels].map((l) => l.textContent).join(" ") : "")
    || byId(e.getAttribute("aria-labelledby")) || e.textContent || "").trim();
  const controls = "button, input, select, [tabindex], [role=button], svg[role]";
  return [...document.querySelectorAll(controls)].filter((e) => !name(e))
    .map((e) => e.outerHTML.slice(0, 80));
}"""


def accessible(page: Any) -> None:
    """The smoke check: a language, a title, every control and figure named."""
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.title()
    assert page.evaluate(UNLABELLED) == []


def test_explain_page_in_the_browser(browser: Any, tmp_path: Path, shots: Path) -> None:
    path = worked_page().save(tmp_path / "explain.html")
    data = worked_page().data
    loss, grads = hand_worked_example()
    page, errors = open_page(browser, path, "wide")
    accessible(page)
    assert page.inner_text("#loss") == f"loss = {loss:.8g}" == "loss = 0.46285625"
    # step through the forward pass: each step computes one node, in the tape's order
    total = len(data["steps"]["forward"]) + len(data["steps"]["backward"]) + 1
    assert page.inner_text("#step-number") == f"0 of {total}"
    assert page.text_content(".node[data-id=t9] .val") == "value ?"
    for _ in range(3):
        page.click("#next")
    assert page.inner_text("#step-number") == f"3 of {total}"
    third = data["steps"]["forward"][2]
    assert page.inner_text("#status").startswith(f"forward: {third} = add(t9, t10) = 0.65")
    assert page.text_content(".node[data-id=t9] .val") == "value 0.3"
    # the end: the output node holds the loss, every input node its gradient (by hand)
    page.click("#last")
    out = data["output"]["id"]
    assert page.text_content(f".node[data-id={out}] .val") == "value 0.46285625"
    for name, g in grads.items():
        shown = page.text_content(f".node[data-id={name}] .adj")
        assert shown == f"adjoint {g:.8g}", (name, shown)
        row = page.inner_text(f"#gradient tr[data-name={name}] td.grad")
        assert number(row) == pytest.approx(g, rel=1e-7)
    # one edge: its local derivative and the product it passes on (v1 -> t19 = v1 * h1)
    page.click(".edge[data-from=v1][data-to=t19] path.hit", force=True)
    lines = page.inner_text("#edge-lines")
    h1 = 0.3 * 1.0 + 0.7 * 0.5 + 0.1
    assert f"Local derivative \u2202t19/\u2202v1 = {h1:.8g}" in lines
    assert f"= {grads['v1']:.8g} \u2192 v1" in lines
    page.screenshot(path=str(shots / "explain-1280x800.png"))
    # the dual view: one forward pass per input; its table fills pass by pass
    page.click("#method-dual")
    assert page.inner_text("#pass-counter").startswith("Pass 1 of 9")
    page.click("#last")
    cells = page.locator("#dual-table td").all_inner_texts()
    assert [number(c) for c in cells[1::2]] == pytest.approx(list(grads.values()), rel=1e-7)
    # fd: its estimates, their error bounds and the evaluation count, as the library gave them
    page.click("#method-fd")
    assert page.inner_text("#pass-counter").startswith(
        f"{data['methods']['fd']['evaluations']} evaluations"
    )
    rows = page.locator("#fd-table tr").all_inner_texts()[1:]
    for row, g in zip(rows, grads.values(), strict=True):
        assert number(row.split("\t")[1]) == pytest.approx(g, rel=1e-6)
    page.click("#method-symbolic")
    assert "exp(" in page.inner_text("#method-view")
    assert errors == []
    page.close()


def test_explain_step_through_by_keyboard(browser: Any, tmp_path: Path, shots: Path) -> None:
    path = worked_page().save(tmp_path / "explain.html")
    page, errors = open_page(browser, path, "narrow")
    accessible(page)
    page.focus("#first")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "next"
    page.keyboard.press("Enter")
    page.keyboard.press("Space")
    assert page.inner_text("#step-number").startswith("2 of")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "step"
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#step-number").startswith("3 of")
    page.keyboard.press("End")
    assert page.inner_text("#status").startswith("Done: one forward and one backward pass")
    page.focus("#play")  # play, then pause, from the keyboard
    page.keyboard.press("Enter")
    assert page.get_attribute("#play", "aria-pressed") == "true"
    page.keyboard.press("Enter")
    assert page.get_attribute("#play", "aria-pressed") == "false"
    page.focus(".edge[data-from=b3]")  # an edge, chosen from the keyboard
    page.keyboard.press("Enter")
    assert "\u2202t22/\u2202b3 = 1" in page.inner_text("#edge-lines")
    page.screenshot(path=str(shots / "explain-390x844.png"))
    assert errors == []
    page.close()


def test_report_page_in_the_browser(browser: Any, tmp_path: Path, shots: Path) -> None:
    recs = records()
    path = report(Results(recs), title="test records").save(tmp_path / "report.html")
    for size in SIZES:
        page, errors = open_page(browser, path, size)
        accessible(page)
        assert page.evaluate("typeof window.diffkitRenderMs") == "number"
        # every heat-map cell is its record: the ratio to three digits, or the failure
        cells = page.locator("#heat td.cell")
        assert cells.count() == len(recs)
        for i in range(cells.count()):
            cell = cells.nth(i)
            rec = recs[int(cell.get_attribute("data-index"))]
            assert (cell.get_attribute("data-method"), cell.get_attribute("data-problem")) == (
                rec["method"], rec["problem"])  # fmt: skip
            if rec["outcome"] == "ok":
                assert number(cell.inner_text()) == pytest.approx(rec["ratio"], rel=5e-3)
            else:
                assert cell.inner_text() == "timeout" and "failed" in cell.get_attribute("class")
                assert cell.get_attribute("title") == "timeout: over the 60 s budget"
        # a filter: without fd, no fd cell, point or fitted line
        assert page.locator("circle[aria-label^='fd,']").count() > 0
        page.click("#f-method-fd")
        assert page.locator("#heat td[data-method=fd]").count() == 0
        assert page.locator("circle[aria-label^='fd,']").count() == 0
        page.click("#f-dtype-float64")
        assert page.locator("#heat td.cell").count() == len(recs) // 2 - 6  # f32, not fd
        # a point shows its record and the command that measures it again
        point = page.locator("circle[aria-label^='tape, mlp n=1000']").first
        point.click()
        rec = recs[int(point.get_attribute("data-index"))]
        assert page.inner_text("#command") == report(Results([rec])).data["records"][0]["command"]
        assert (rec["method"], rec["n"], rec["dtype"]) == ("tape", 1000, "float32")
        page.screenshot(
            path=str(shots / f"report-{'x'.join(map(str, SIZES[size]))}.png"),
            full_page=size == "wide",
        )
        assert errors == []
        page.close()


def test_report_draws_the_sparsity_pattern(browser: Any, tmp_path: Path, shots: Path) -> None:
    """A compressed Jacobian's record carries its pattern drawn small; the page draws one
    block per cell, and says the colours and the speedup; a report without one hides it."""
    pattern = pde_1d_pattern(40)
    cells = pattern_cells(pattern, grid=16)
    base = {"problem": "pde-1d", "size": 40, "n": 40, "m": 40, "dtype": "float64",
            "outcome": "ok", "primal_median": 1e-6, "meta": {"backend": "cpu"}}  # fmt: skip
    recs = [
        base | {"method": "jax-fwd", "time_median": 4e-5, "ratio": 40.0, "key": "a"},
        base | {"method": "jax-fwd+sparse", "time_median": 2e-6, "ratio": 2.0, "key": "b",
                "nnz": pattern.nnz, "colours": 3, "sparse_mode": "fwd", "pattern_cells": cells},
    ]  # fmt: skip
    path = report(Results(recs)).save(tmp_path / "sparse.html")
    page, errors = open_page(browser, path, "wide")
    accessible(page)
    assert page.is_visible("#patterns-section")
    figure = page.locator("#patterns figure[data-problem=pde-1d]")
    assert figure.locator("svg.pattern rect").count() == len(cells["cells"]) + 1  # + the frame
    text = figure.inner_text()
    assert f"{pattern.nnz} nonzeros" in text and "jax-fwd: 3 column colours, 20x faster" in text
    figure.screenshot(path=str(shots / "report-pattern.png"))
    assert errors == []
    page.close()
    plain = report(Results(records())).save(tmp_path / "plain.html")
    page, errors = open_page(browser, plain, "wide")
    assert page.is_hidden("#patterns-section") and errors == []
    page.close()
