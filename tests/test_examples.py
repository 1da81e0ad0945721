"""Every script in ``examples/`` runs to completion as a user would run it, and prints what it promises.

Each example asserts its own claims (exactness, skipped steps, hook order) and exits non-zero when one fails,
so a zero exit status here means those checks passed. The scripts run in a fresh interpreter from an empty
working directory, so they cannot lean on the repository layout or on test fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))

# Lines (prefixes) each example must print besides its final "OK: ..." line.
KEY_LINES: dict[str, list[str]] = {
    "flux_teacache.py": ["skipped steps: [", "final latent error vs uncached:", "OK: TeaCache skipped steps"],
    "custom_dit_extractor.py": [
        "registered extractors include TinyDiT: True",
        "skipped steps at rel_l1_thresh=0.3: [",
        "OK: the extractor is exact",
    ],
    "serving_engine.py": [
        "tea_cache: cache hits per request [",
        "mag_cache: cache hits per request [",
        "cache_dit: cache hits per request [",
        "ditcache: cache hits per request [",
        "after disable: output equals uncached: True",
        "config error: DiffusionCacheConfig: unknown setting(s) ['threshold']",
        "OK: every backend skipped steps",
    ],
    "error_tolerance.py": [
        "digits (FluxTransformer2DModel): computed ",
        "patches (QwenImageTransformer2DModel): computed ",
        "OK: one rtol setting skipped steps on both models",
    ],
    "middleware_stack.py": [
        "stack, outermost first: ['timing', 'scale', 'clamp']",
        "after removing 'scale': ['timing', 'clamp']",
        "OK: middlewares ran in order",
    ],
}

TIMEOUT_S = 300


def test_every_example_is_covered() -> None:
    assert EXAMPLES, f"no examples found in {EXAMPLES_DIR}"
    missing = sorted({p.name for p in EXAMPLES} ^ set(KEY_LINES))
    assert not missing, f"examples and KEY_LINES disagree on {missing}: list each example's key lines"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    report = f"exit status {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    lines = proc.stdout.splitlines()
    for key in KEY_LINES[script.name]:
        assert any(line.startswith(key) for line in lines), f"missing line starting with {key!r}\n{report}"
    assert lines and lines[-1].startswith("OK: "), report
    assert "Traceback" not in proc.stderr, report
