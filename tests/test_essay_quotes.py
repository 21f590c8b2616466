"""The notebooks quote the backpropagation essay word for word, and cite their measurements.

Every notebook and ``notebooks/README.md`` set the essay's claims beside what was measured.
A quotation of the essay is written in curly quotes followed by its section,
``“the gradient signal decays by at least a factor of 4” (§ When the Signal Dies)``; the
section may be given by the start of its heading (a quotation repeated in running prose may
omit it). These tests check every such quotation occurs, word for word (whitespace aside), in
that section of the essay (or anywhere in it, where no section is named), which lives beside
the repository at ``../shared/essay.txt`` (as CI has it; it is not copied into the
repository, and the tests skip where it is absent). Figures from elsewhere (papers, surveys,
the project's own anchors) go in a separate "literature" column, never in curly quotes.

The claims table of ``notebooks/README.md`` is checked row by row: each row quotes the essay
or is marked ``—`` there with a literature figure instead, says what was measured, and names
where (a notebook's code cell, counted from 0 with markdown included, or a command).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
ESSAY = REPO.parent / "shared" / "essay.txt"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
README = REPO / "notebooks" / "README.md"

# “quotation” (§ section): the section's heading, or its start, up to the closing parenthesis
QUOTE = re.compile(r"“([^”]+)”(?:\s*\(§\s*([^)]+)\))?")

needs_essay = pytest.mark.skipif(not ESSAY.exists(), reason=f"no essay at {ESSAY}")


def _squash(text: str) -> str:
    return " ".join(text.split())


def essay_sections() -> dict[str, str]:
    """The essay's text by section heading (the Contents list's, plus the opening, the
    "Why This Matters" section and the closing list), whitespace squashed."""
    lines = ESSAY.read_text(encoding="utf-8").splitlines()
    start = lines.index("Contents")
    end = lines.index("Resources", start)
    headings = [
        lines[0],
        lines[2],
        *lines[start + 1 : end + 1],
        "What You Should Now Be Able To Do",
    ]
    body_starts = []
    for heading in headings:  # the body's heading: its last occurrence (not the Contents')
        where = max(i for i, line in enumerate(lines) if line == heading)
        body_starts.append((where, heading))
    body_starts.sort()
    sections = {}
    for k, (where, heading) in enumerate(body_starts):
        stop = body_starts[k + 1][0] if k + 1 < len(body_starts) else len(lines)
        sections[heading] = _squash(" ".join(lines[where + 1 : stop]))
    return sections


def quotations(text: str) -> list[tuple[str, str | None]]:
    """Every “quotation” in ``text`` with the section it names (None where it names none)."""
    return [(_squash(q), _squash(s) if s else None) for q, s in QUOTE.findall(text)]


def check_quotation(quote: str, section: str | None, sections: dict[str, str]) -> str | None:
    """None if ``quote`` is in the essay's ``section``, else what is wrong, on one line."""
    if len(quote) < 3:
        return f"“{quote}”: too short to be a quotation"
    if section is None:  # a quotation repeated in prose: anywhere in the essay
        if not any(quote in body for body in sections.values()):
            return f"“{quote}” is not in the essay"
        return None
    named = [h for h in sections if h.startswith(section)]
    if len(named) != 1:
        return f"“{quote}”: (§ {section}) is not the start of one essay heading: {list(sections)}"
    if quote not in sections[named[0]]:
        elsewhere = [h for h, body in sections.items() if quote in body]
        hint = f"; it is in § {elsewhere[0]}" if elsewhere else "; it is not in the essay"
        return f"“{quote}” is not in § {named[0]}{hint}"
    return None


def _sources(path: Path) -> str:
    if path.suffix == ".md":
        return path.read_text(encoding="utf-8")
    return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)


@needs_essay
@pytest.mark.parametrize("path", [*NOTEBOOKS, README], ids=lambda p: p.stem)
def test_every_quotation_is_the_essays_own_words(path: Path) -> None:
    sections = essay_sections()
    found = quotations(_sources(path))
    problems = [p for q, s in found if (p := check_quotation(q, s, sections))]
    assert not problems, f"{path.name}: " + "\n".join(problems)
    assert found, f"{path.name} quotes the essay nowhere (“words” (§ heading))"


def _readme_claims() -> tuple[list[str], list[list[str]]]:
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.startswith("|")
    ]
    tables = [i for i, row in enumerate(rows) if any("essay says" in c for c in row)]
    assert tables, "notebooks/README.md has no table with an 'essay says' column"
    header = rows[tables[0]]
    body = []
    for row in rows[tables[0] + 2 :]:
        if len(row) != len(header):
            break
        body.append(row)
    return header, body


@needs_essay
def test_every_readme_row_quotes_the_essay_or_is_literature() -> None:
    header, body = _readme_claims()
    column = {name: next(i for i, h in enumerate(header) if name in h) for name in
              ("essay says", "literature", "we measured", "where")}  # fmt: skip
    assert len(body) >= 20, f"only {len(body)} claims in the README's table"
    notebooks = {p.name[:2]: nbformat.read(p, as_version=4) for p in NOTEBOOKS}
    for row in body:
        essay, literature = row[column["essay says"]], row[column["literature"]]
        where, measured = row[column["where"]], row[column["we measured"]]
        assert quotations(essay) or (essay == "—" and literature not in ("", "—")), (
            f"README row {row[0]!r}: quote the essay (“…” (§ …)) or mark it — with literature"
        )
        assert all(section for _, section in quotations(essay)), (
            f"README row {row[0]!r}: each quotation needs its section, (§ heading)"
        )
        assert measured not in ("", "—"), f"README row {row[0]!r}: nothing measured"
        cells = re.findall(r"\b(\d\d) cells? (\d+(?:[-,] ?\d+)*)", where)
        assert cells or "`" in where, f"README row {row[0]!r}: name a cell (NN cell K) or command"
        for number, indices in cells:
            assert number in notebooks, f"README row {row[0]!r}: no notebook {number}"
            for index in re.findall(r"\d+", indices):
                cell = notebooks[number].cells[int(index)] if int(index) < len(
                    notebooks[number].cells) else None  # fmt: skip
                assert cell is not None and cell.cell_type == "code", (
                    f"README row {row[0]!r}: notebook {number}'s cell {index} is not a code cell"
                )


@needs_essay
def test_the_check_catches_a_misquote_and_a_wrong_section() -> None:
    sections = essay_sections()
    good = quotations("“roughly 2× a single forward pass” (§ The Brute Force)")
    assert good and check_quotation(*good[0], sections) is None
    misquote = quotations("“roughly 2-3x a single forward pass” (§ The Brute Force)")
    assert "not in the essay" in str(check_quotation(*misquote[0], sections))
    moved = quotations("“roughly 2× a single forward pass” (§ Rest Stop)")
    assert "it is in § The Brute Force" in str(check_quotation(*moved[0], sections))
    assert check_quotation(*quotations("“≈ 0.4629”")[0], sections) is None  # anywhere
    assert "not in the essay" in str(check_quotation(*quotations("“≈ 0.46285625”")[0], sections))
