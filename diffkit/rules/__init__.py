"""The one table of derivative rules that the hand-written interpreters (``dual``, ``tape``)
read, keyed by jaxpr primitive name.

* :mod:`~diffkit.rules.kinds`: the constructors of rows (``elementwise``, ``linear``,
  ``zero``, ``reduction``, ``permutation``, ``cumulative``), each writing its chain rule once;
* :mod:`~diffkit.rules.table`: the core rows, the merged :data:`RULES` and :data:`REFUSED`;
* :mod:`~diffkit.rules.array`, :mod:`~diffkit.rules.linalg`, :mod:`~diffkit.rules.special`,
  :mod:`~diffkit.rules.collectives`: one section of rows each.

The symbolic differentiator's table (primitive -> SymPy expression) is a different thing and
lives with it, :data:`diffkit.symbolic.translate.TRANSLATIONS`.

Example:
    >>> from diffkit.rules import RULES
    >>> sorted(RULES)[:3]
    ['abs', 'acos', 'acosh']
"""

from diffkit.rules.table import REFUSED as REFUSED
from diffkit.rules.table import RULES as RULES
from diffkit.rules.table import Rule as Rule
from diffkit.rules.table import refused_markdown as refused_markdown

__all__ = ["REFUSED", "RULES", "Rule", "refused_markdown"]
