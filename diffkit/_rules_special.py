"""Rows of the rule table (:mod:`diffkit._rules`): Special functions and complex numbers.

Each row is built by one of the constructors in :mod:`diffkit._rules`; ``_rules`` merges
``ROWS`` into its ``RULES`` table.
"""

from __future__ import annotations

from diffkit._rules import Rule

ROWS: dict[str, Rule] = {}
