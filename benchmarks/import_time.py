"""Import-time benchmark: the cost of ``import ditcache`` as a ratio to ``import torch``, measured in one run.

Each sample starts a fresh interpreter (``python -c``) and times, inside it, the import of the module under test after
its prerequisites (torch is imported first when timing ditcache, so the figure is ditcache's own cost on top of torch).
Samples of the two kinds are interleaved so machine load affects both alike; the medians are compared.

Run: ``python benchmarks/import_time.py [--repeats 15] [--json out.json]``. Prints the medians, the ratio
``ditcache / torch`` and the modules that ``import ditcache`` adds beyond torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_PROBE = """
import sys, time
{pre}
t0 = time.perf_counter()
import {module}
dt = time.perf_counter() - t0
print(dt)
"""

_ADDED = """
import sys
import torch
before = set(sys.modules)
import ditcache
print("\\n".join(sorted(set(sys.modules) - before)))
"""


def _sample(module: str, pre: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, pre=pre)], check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def measure(repeats: int) -> dict[str, object]:
    """Interleaved medians of ``import torch`` (cold) and ``import ditcache`` (after torch), in seconds."""
    torch_times: list[float] = []
    ditcache_times: list[float] = []
    for _ in range(repeats):
        torch_times.append(_sample("torch", ""))
        ditcache_times.append(_sample("ditcache", "import torch"))
    added = subprocess.run([sys.executable, "-c", _ADDED], check=True, capture_output=True, text=True).stdout.split()
    torch_s = statistics.median(torch_times)
    ditcache_s = statistics.median(ditcache_times)
    return {
        "repeats": repeats,
        "import_torch_s": torch_s,
        "import_ditcache_after_torch_s": ditcache_s,
        "ratio_ditcache_to_torch": ditcache_s / torch_s,
        "modules_added_beyond_torch": len(added),
        "third_party_added": sorted({m.split(".")[0] for m in added if not m.startswith("ditcache")}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved samples of each import (default 15)")
    parser.add_argument("--json", help="write the result to this JSON file")
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    print(
        f"import torch: {result['import_torch_s']:.3f} s; import ditcache after torch: "
        f"{result['import_ditcache_after_torch_s']:.3f} s; ratio {result['ratio_ditcache_to_torch']:.3f}"
    )
    print(f"third-party packages ditcache adds beyond torch: {', '.join(result['third_party_added']) or 'none'}")  # type: ignore[arg-type]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
