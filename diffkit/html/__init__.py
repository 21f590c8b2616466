"""Self-contained HTML pages: the explorable backprop page (:func:`explain`) and the results
report (:func:`report`). One file each, with inline CSS, hand-written JavaScript and the data
the library computed; nothing is fetched, so a page works opened from disk.

Example:
    >>> import jax.numpy as jnp
    >>> from diffkit.html import explain
    >>> explain(lambda x: jnp.exp(x), 0.0, methods=False).data["gradient"]
    [{'name': 'x', 'value': 0.0, 'grad': 1.0}]
"""

from __future__ import annotations

from diffkit.html.explain import Explained, explain
from diffkit.html.report import Report, load_results, report

__all__ = ["Explained", "Report", "explain", "load_results", "report"]
