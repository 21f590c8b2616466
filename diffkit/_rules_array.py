"""Rows of the rule table (:mod:`diffkit._rules`): array primitives beyond the core
table: convolutions, windows (pooling), stacking, tiling, scatter variants.

Each row is built by one of the constructors in :mod:`diffkit._rules`; ``_rules`` merges
``ROWS`` into its ``RULES`` table.
"""

from __future__ import annotations

from diffkit._rules import Rule

ROWS: dict[str, Rule] = {}
