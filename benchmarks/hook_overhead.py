"""Per-call cost of forward hooks: ditcache's HookRegistry against diffusers' HookRegistry and torch's own hooks.

The measurement lives in :mod:`ditcache.tools.hook_overhead` (``ditcache bench`` runs it too); see its docstring for the
method. Run::

    python benchmarks/hook_overhead.py --out results/

It writes ``hook_overhead.json`` into the directory and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ditcache.tools.hook_overhead import HOOK_COUNTS, NoopForwardHook, build_variants, noop_middleware, print_table, run

__all__ = ["HOOK_COUNTS", "NoopForwardHook", "build_variants", "main", "noop_middleware", "print_table", "run"]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for hook_overhead.json")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--calls", type=int, default=10_000, help="calls per variant per round (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be >= 1")
    result = run(args.rounds, args.calls, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "hook_overhead.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
