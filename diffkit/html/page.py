"""The one page template of :mod:`diffkit.html`: a self-contained HTML file (inline CSS, inline
hand-written JavaScript, the page's data as inline JSON), and its notebook form (an iframe).

Example:
    >>> html = page("Demo", "<p id=x></p>", {"answer": 42}, "report")
    >>> html.startswith("<!DOCTYPE html>"), '"answer": 42' in html, "src=" in html, "<link" in html
    (True, True, False, False)
    >>> read_data(html)
    {'answer': 42}
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Page", "iframe", "jsonable", "page", "read_data"]

_DATA_ID = "diffkit-data"


@cache
def _static(name: str) -> str:
    return resources.files("diffkit.html").joinpath("static", name).read_text(encoding="utf-8")


def jsonable(x: Any) -> Any:
    """``x`` with NumPy/JAX numbers and arrays as plain floats and lists (NaN and infinities
    as None, which JSON has no word for); dicts, lists and tuples walked.

    Example:
        >>> import numpy as np
        >>> jsonable({"a": np.float32(0.5), "b": np.array([1.0, np.inf])})
        {'a': 0.5, 'b': [1.0, None]}
    """
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, bool | str) or x is None:
        return x
    if hasattr(x, "tolist"):  # NumPy and JAX arrays and scalars
        return jsonable(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def page(title: str, body: str, data: Any, script: str) -> str:
    """One HTML file: ``body`` (static markup), ``data`` as inline JSON, the shared CSS and
    JavaScript and ``static/<script>.js``. Nothing is fetched: it works opened from disk."""
    blob = json.dumps(jsonable(data), allow_nan=False, indent=None)
    blob = blob.replace("</", "<\\/")  # a string holding "</script>" must not end the block
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_html.escape(title)}</title>\n<style>\n{_static('common.css')}</style>\n"
        f"</head>\n<body>\n{body}\n"
        f'<script type="application/json" id="{_DATA_ID}">{blob}</script>\n'
        f"<script>\n{_static('common.js')}\n{_static(script + '.js')}\n</script>\n"
        "</body>\n</html>\n"
    )


def read_data(html: str) -> Any:
    """The data a page built by :func:`page` carries (what its script draws from)."""
    match = re.search(
        rf'<script type="application/json" id="{_DATA_ID}">(.*?)</script>', html, re.S
    )
    if match is None:
        raise ValueError("not a diffkit page: no inline data block")
    return json.loads(match.group(1))  # JSON reads "<\\/" as "</"


@dataclass(frozen=True)
class Page:
    """A page: ``data`` (what it shows, computed by the library), ``html`` (the one file),
    ``save(path)``; renders inline in notebooks. Subclasses name their ``script`` (in
    ``static/``) and ``body`` (the static markup the script fills).

    Example:
        >>> class Demo(Page):
        ...     script, body = "report", "<main></main>"
        >>> Demo({"title": "t"}).html.count("<title>diffkit report: t</title>")
        1
    """

    data: dict[str, Any]
    script: ClassVar[str]
    body: ClassVar[str]

    @property
    def html(self) -> str:
        return page(
            f"diffkit {self.script}: {self.data['title']}", self.body, self.data, self.script
        )

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (one HTML file); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        return iframe(self.html, 900)


def iframe(html: str, height: int = 720) -> str:
    """``html`` in an iframe (``srcdoc``), for notebooks: the page's script and styles run
    apart from the notebook's own.

    Example:
        >>> iframe("<p>hi</p>", 100)[:40]
        '<iframe title="diffkit page" srcdoc="&lt'
    """
    return (
        f'<iframe title="diffkit page" srcdoc="{_html.escape(html, quote=True)}" '
        f'style="width:100%;height:{height}px;border:1px solid #ccc"></iframe>'
    )
