"""``python -m clientlb ...``: the same as the ``clientlb`` command."""

from ._cli import main

raise SystemExit(main())
