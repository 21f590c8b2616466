"""Self-contained HTML pages: the explorable backprop page (:func:`explain`) and the results
report (:func:`report`). One file each, with inline CSS, hand-written JavaScript and the data
the library computed; nothing is fetched, so a page works opened from disk.

* :mod:`~diffkit.html.page`: the page template (:class:`~diffkit.html.page.Page`), JAX-free;
* :mod:`~diffkit.html.explainer`: :func:`explain`, the backprop page of a small function;
* the results report is built by the harness (:mod:`diffkit.harness.report_page`), whose
  :class:`~diffkit.harness.results.Results` show it inline in notebooks; :func:`report` is
  re-exported here.

The names load on first use.

Example:
    >>> import jax.numpy as jnp
    >>> from diffkit.html import explain
    >>> explain(lambda x: jnp.exp(x), 0.0, methods=False).data["gradient"]
    [{'name': 'x', 'value': 0.0, 'grad': 1.0}]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffkit._core.lazy import exports

_EXPORTS = {
    "Explained": "diffkit.html.explainer",
    "explain": "diffkit.html.explainer",
    "Report": "diffkit.harness.report_page",
    "load_results": "diffkit.harness.results",
    "report": "diffkit.harness.results",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from diffkit.harness.report_page import Report as Report
    from diffkit.harness.results import load_results as load_results
    from diffkit.harness.results import report as report
    from diffkit.html.explainer import Explained as Explained
    from diffkit.html.explainer import explain as explain
