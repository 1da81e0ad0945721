"""``python -m ditcache``: the same command line as the ``ditcache`` script (see :mod:`ditcache.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
