"""``ditcache.tools.bench.verdicts``: the fastest of each side at each quality level, ratios, printed lines."""

from __future__ import annotations

import json
import math

import pytest

from ditcache.tools.bench import (
    PSNR_TOLERANCE,
    TRANSFER_TARGET_RATIO,
    BenchReport,
    Verdict,
    psnr_spreads,
    transfer_lines,
    transfer_verdicts,
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

    report = BenchReport({"digits": {"no-cfg": _evaluation(results)}}, (v40, v35, none_ours), None, {}, 1.0)
    lines = "\n".join(verdict_lines(report))
    assert "ours 45" in lines and "peer 41" in lines and "1.20x" in lines
    assert "digits, no-cfg, PSNR >= 40 dB" in lines
    assert "no configuration of ours reaches this quality" in lines
    assert verdicts("cfg", _evaluation(results), model="patches")[0].as_dict()["model"] == "patches"


# ---------------------------------------------------------------------------------------------- transfer
CELLS = [("digits", "no-cfg"), ("digits", "cfg"), ("patches", "no-cfg"), ("patches", "cfg")]


def _cells(table: dict[str, list[tuple[float, float]]]) -> dict[tuple[str, str], list[RunResult]]:
    """``{name: [(speedup, psnr) per cell]}`` -> results per cell; names starting with "peer" are peers."""
    out: dict[tuple[str, str], list[RunResult]] = {cell: [] for cell in CELLS}
    for name, values in table.items():
        for cell, value in zip(CELLS, values):
            if value is not None:
                out[cell].append(_result(name, "peer" if name.startswith("peer") else "ours", *value))
    return out


def test_transfer_picks_the_best_worst_case_among_settings_meeting_the_level_everywhere() -> None:
    cells = _cells(
        {
            # fast, but misses 40 dB on one cell: a candidate at 35 dB only
            "A": [(3.0, 41.0), (3.0, 41.0), (3.0, 39.0), (3.0, 41.0)],
            # meets 40 everywhere; worst case 2.0
            "B": [(2.5, 42.0), (2.0, 41.0), (2.4, 43.0), (2.2, 42.5)],
            # meets 40 everywhere; higher mean but a worse worst case (1.9)
            "C": [(4.0, 45.0), (1.9, 44.0), (4.0, 44.0), (4.0, 44.0)],
            # misses 35 dB somewhere: never a candidate
            "D": [(9.0, 30.0), (9.0, 50.0), (9.0, 50.0), (9.0, 50.0)],
            "peer X": [(1.5, 45.0), (1.5, 36.0), (1.0, 50.0), (2.0, 41.0)],
        }
    )
    t40, t35 = transfer_verdicts(cells)
    assert (t40.name, t40.candidates) == ("B", 2)
    assert t40.worst_speedup == pytest.approx(2.0)
    assert [(c.model, c.mode) for c in t40.cells] == CELLS
    # best peer per cell at 40 dB: the peer meets 40 in cells 0, 2, 3 only
    assert [c.peer is not None for c in t40.cells] == [True, False, True, True]
    assert [c.ratio for c in t40.cells] == pytest.approx([2.5 / 1.5, math.inf, 2.4 / 1.0, 2.2 / 2.0])
    assert not t40.ratio_passed  # 1.1x on patches cfg
    assert t40.psnr_passed and [c.psnr_margin for c in t40.cells] == pytest.approx([2.0, 1.0, 3.0, 2.5])
    assert not t40.passed
    assert (t35.name, t35.candidates) == ("A", 3)  # worst case 3.0 beats B's 2.0 and C's 1.9
    assert t35.cells[2].psnr_margin == pytest.approx(4.0) and not t35.psnr_passed
    json.dumps(t40.as_dict(), allow_nan=False)
    assert t40.as_dict()["cells"][1]["ratio"] is None


def test_transfer_ties_missing_settings_and_the_goal() -> None:
    # equal worst cases: the larger mean wins; equal worst and mean: the larger worst PSNR; then the name
    cells = _cells(
        {
            "b": [(2.0, 41.0), (2.0, 41.0), (2.0, 41.0), (2.0, 41.0)],
            "a": [(2.0, 41.0), (2.0, 41.0), (2.0, 41.0), (2.0, 41.0)],
            "c": [(2.0, 41.0), (2.0, 40.5), (2.0, 42.0), (2.0, 41.0)],
        }
    )
    assert transfer_verdicts(cells, levels=(40.0,))[0].name == "a"
    cells[CELLS[0]].append(_result("mean", "ours", 3.0, 40.0))
    for cell in CELLS[1:]:
        cells[cell].append(_result("mean", "ours", 2.0, 40.0))
    assert transfer_verdicts(cells, levels=(40.0,))[0].name == "mean"
    # a setting missing from one cell (or failed there) is no candidate
    cells[CELLS[0]].append(_result("partial", "ours", 9.0, 60.0))
    (t,) = transfer_verdicts(cells, levels=(40.0,))
    assert t.name == "mean" and t.candidates == 4
    # nothing meets the level: no setting, goal missed
    (none,) = transfer_verdicts(cells, levels=(70.0,))
    assert none.name is None and none.cells == () and none.worst_speedup == 0.0 and not none.passed
    # no peer anywhere and PSNR in the band: the goal is met
    (good,) = transfer_verdicts(_cells({"x": [(2.0, 41.0)] * 4}), levels=(40.0,))
    assert good.passed and good.worst_ratio == math.inf
    # the goal's thresholds
    just = _cells({"y": [(1.3, 40.0 + PSNR_TOLERANCE)] * 4, "peer": [(1.0, 40.0)] * 4})
    (edge,) = transfer_verdicts(just, levels=(40.0,))
    assert edge.name == "y" and edge.worst_ratio == pytest.approx(TRANSFER_TARGET_RATIO) and edge.passed
    assert transfer_verdicts({}, levels=(40.0,))[0].name is None


def test_psnr_spreads_and_transfer_lines() -> None:
    cells = _cells(
        {
            "exact": [(1.0, math.inf)] * 4,
            "mixed": [(2.0, 45.0), (2.0, math.inf), (2.0, 40.0), (1.5, 50.0)],
            "peer": [(1.2, 41.0)] * 4,
        }
    )
    cells[CELLS[3]].append(_result("missing", "ours", 2.0, 50.0))
    spreads = {s.name: s for s in psnr_spreads(cells)}
    assert set(spreads) == {"exact", "mixed"}  # ours only, and only settings that ran everywhere
    assert spreads["exact"].spread == 0.0
    assert spreads["mixed"].spread == pytest.approx(99.0 - 40.0)  # identical samples count as 99 dB
    assert spreads["mixed"].worst_speedup == 1.5 and spreads["mixed"].worst_psnr == 40.0
    json.dumps([s.as_dict() for s in spreads.values()], allow_nan=False)
    evaluations = {m: {d: _evaluation(cells[(m, d)]) for mm, d in CELLS if mm == m} for m, _ in CELLS}
    report = BenchReport(evaluations, (), None, {}, 1.0, transfer=tuple(transfer_verdicts(cells)))
    assert report.cells.keys() == set(CELLS)
    lines = "\n".join(transfer_lines(report))
    assert "PSNR >= 40 dB on every model and mode[/bold]: mixed" in lines
    assert "patches, cfg:  1.50x, 50.0 dB (+10.0)" in lines and "ratio 1.25x" in lines
    assert "goal >= 1.30x everywhere [red]missed" in lines
