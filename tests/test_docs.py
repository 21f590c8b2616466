"""The documentation renders: every markdown file of the repository is parsed with
markdown-it-py and checked for an unclosed code fence (which turns the rest of a page into one
code block) and for relative links to files that do not exist (a page moved, a module renamed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[1]

#: A line that opens or closes a fence of exactly three backticks (an info string may follow;
#: it holds no backtick, or the line would be inline code in a paragraph).
TRIPLE_BACKTICK = re.compile(r"^```(?!`)[^`]*$")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """Every ``*.md`` under ``root``, leaving out only ``.git`` and virtual environments."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if d != ".git" and not (Path(folder, d) / "pyvenv.cfg").exists()
        )
        found += [Path(folder, f) for f in sorted(files) if f.endswith(".md")]
    return found


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def _walk(tokens: list[Token], line: int = 0) -> list[tuple[Token, int]]:
    """Every token, inline ones included, with the line its block starts on (1-based)."""
    out = []
    for token in tokens:
        here = token.map[0] + 1 if token.map else line
        out.append((token, here))
        out += _walk(token.children or [], here)
    return out


def _bare(line: str) -> str:
    """A line without its indentation and blockquote markers."""
    return line.lstrip(" \t>")


def _closes(line: str, markup: str) -> bool:
    bare = _bare(line).rstrip()
    return len(bare) >= len(markup) and set(bare) == {markup[0]}


def fence_problems(text: str) -> list[str]:
    """Code fences that never close: a fence token running to the end of the document
    without a closing line, or an odd number of triple-backtick lines outside other blocks
    of code (fences of ``~~~`` or of four backticks, indented code, HTML)."""
    lines = text.splitlines()
    tokens = _walk(_parser().parse(text))
    problems = []
    other: set[int] = set()
    for token, _ in tokens:
        if token.map is None:
            continue
        start, end = token.map
        if token.type == "fence":
            last = lines[end - 1] if end > start + 1 else ""
            if end >= len(lines) and not _closes(last, token.markup):
                problems.append(
                    f"line {start + 1}: the code fence {token.markup}{token.info} is never "
                    "closed (it runs to the end of the file)"
                )
            if token.markup != "```":
                other.update(range(start, end))
        elif token.type in ("code_block", "html_block"):
            other.update(range(start, end))
    marks = [
        i + 1
        for i, line in enumerate(lines)
        if i not in other and TRIPLE_BACKTICK.match(_bare(line).rstrip())
    ]
    if len(marks) % 2:
        problems.append(f"an odd number ({len(marks)}) of ``` lines, at lines {marks}")
    return problems


def link_problems(text: str, where: Path) -> list[str]:
    """Relative links and images (no scheme) whose file, ``#anchor`` and ``?query`` left
    off, does not exist relative to ``where`` (the folder of the markdown file; a target
    starting with ``/`` is taken from the repository's root)."""
    problems = []
    for token, line in _walk(_parser().parse(text)):
        target = token.attrGet("href") if token.type == "link_open" else None
        if token.type == "image":
            target = token.attrGet("src")
        if not isinstance(target, str):
            continue
        parts = urlsplit(target)
        if parts.scheme or target.startswith("//") or not parts.path:
            continue
        path = unquote(parts.path)
        file = ROOT / path.lstrip("/") if path.startswith("/") else where / path
        if not file.exists():
            problems.append(f"line {line}: link to {target!r}: {file} does not exist")
    return problems


FILES = markdown_files()


def test_the_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    want = {"README.md", "docs/ARCHITECTURE.md", "notebooks/README.md", "benchmarks/README.md"}
    assert want <= names, sorted(names)


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_markdown_renders_with_closed_fences_and_live_links(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    problems = fence_problems(text) + link_problems(text, path.parent)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_checker_reports_an_unclosed_fence_and_a_broken_link(tmp_path: Path) -> None:
    """The checker itself: a fence left open (the mistake that turned half of
    ARCHITECTURE.md into one code block) and a link to a missing file are reported; closed
    fences, a fence inside a longer one, and links that resolve are not."""
    unclosed = "# Page\n\n```python\nx = 1\n```\n\nText.\n\n```\nmore\n"
    assert len(fence_problems(unclosed)) == 2  # the token runs to the end; 3 ``` lines
    stray = "# Page\n\n    indented code\n```\nthe rest of the page\n\nis code\n"
    assert fence_problems(stray)
    fine = "```bash\nls\n```\n\n````markdown\n```python\nx\n```\n````\n\n~~~\n```\n~~~\n"
    assert fence_problems(fine) == []

    (tmp_path / "there.md").write_text("# There\n")
    links = (
        "[ok](there.md#there) [ok](#local) [web](https://example.org/x.md) "
        "[mail](mailto:a@b.c)\n\n[broken](missing.md#anchor) ![img](gone.png)\n"
    )
    problems = link_problems(links, tmp_path)
    assert len(problems) == 2, problems
    assert "missing.md" in problems[0] and "gone.png" in problems[1]
    assert "line 3" in problems[0]
