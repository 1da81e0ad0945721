"""``python -m ditcache``: the same command line as the ``ditcache`` script (see :mod:`ditcache.tools.cli`)."""

from __future__ import annotations

from ditcache.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
