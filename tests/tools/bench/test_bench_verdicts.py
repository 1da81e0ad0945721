"""``ditcache.tools.bench.verdicts``: the fastest of each side at each quality level, ratios, printed lines."""

from __future__ import annotations

import json
import math

import pytest

from ditcache.tools.bench import (
    BenchReport,
    Verdict,
    verdict_lines,
    verdicts,
)
from ditcache.tools.evaluation import BranchDecisions, EvalSettings, Evaluation, Method, RunResult


def _result(name: str, origin: str, speedup: float, psnr: float, fraction: float = 0.5) -> RunResult:
    blocks = round(6 * 4 * fraction)
    per_step = [6] * (blocks // 6) + [blocks % 6] + [0] * 4
    decisions = (BranchDecisions("cond", tuple(per_step[:4]), tuple(per_step[:4]), 6),)
    return RunResult(
        method=Method(name, origin, "f"),
        seconds=1.0 / speedup,
        all_seconds=(1.0 / speedup,),
        baseline_seconds=1.0,
        fixed_seconds=0.05,
        decisions=decisions,
        psnr=psnr,
        max_abs_error=0.01,
        reproducible=True,
    )


def _evaluation(results: list[RunResult]) -> Evaluation:
    base = _result("uncached", "baseline", 1.0, math.inf, 1.0)
    return Evaluation(EvalSettings(num_steps=4), base, tuple(results), fixed_seconds=0.05, torch_threads=1)


def test_verdicts_pick_the_fastest_of_each_side_at_each_level() -> None:
    results = [
        _result("ours fast low", "ours", 6.0, 30.0),
        _result("ours 36", "ours", 4.0, 36.0),
        _result("ours 45", "ours", 3.0, 45.0),
        _result("peer 41", "peer", 2.5, 41.0),
        _result("peer 35", "peer", 3.8, 35.0),
        _result("peer exact", "peer", 1.1, math.inf),
    ]
    v40, v35 = verdicts("no-cfg", _evaluation(results))
    assert (v40.ours and v40.ours.name, v40.peer and v40.peer.name) == ("ours 45", "peer 41")
    assert v40.ratio == pytest.approx(3.0 / 2.5) and v40.passed
    assert (v35.ours and v35.ours.name, v35.peer and v35.peer.name) == ("ours 36", "peer 35")
    assert v35.ratio == pytest.approx(4.0 / 3.8) and not v35.passed

    none_ours = Verdict("cfg", 40.0, None, results[3])
    assert none_ours.ratio == 0.0 and not none_ours.passed and not none_ours.efficiency_passed
    no_peer = Verdict("cfg", 40.0, results[2], None)
    assert no_peer.ratio == math.inf and no_peer.passed
    json.dumps(no_peer.as_dict(), allow_nan=False)

    report = BenchReport({"no-cfg": _evaluation(results)}, (v40, v35, none_ours), None, {}, 1.0)
    lines = "\n".join(verdict_lines(report))
    assert "ours 45" in lines and "peer 41" in lines and "1.20x" in lines
    assert "no configuration of ours reaches this quality" in lines
