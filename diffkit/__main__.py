"""``python -m diffkit`` is the ``diffkit`` command."""

from diffkit.cli import main

raise SystemExit(main())
