"""``ditcache bench``: the quick sweep end to end (ours and the real peers), verdicts, Pareto fronts, errors."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ditcache.tools.bench import (
    QUALITY_LEVELS,
    TARGET_RATIO,
    BenchReport,
    Verdict,
    our_methods,
    pareto_front,
    peer_methods,
    verdict_lines,
    verdicts,
)
from ditcache.tools.cli import main
from ditcache.tools.evaluation import BranchDecisions, EvalSettings, Evaluation, Method, RunResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "200")
    logger = logging.getLogger("ditcache")
    saved = (list(logger.handlers), logger.level, logger.propagate, torch.get_num_threads())
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    torch.set_num_threads(saved[3])


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


def test_quick_bench_runs_ours_and_the_peers_and_writes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "--out", str(out), "--quick"]) == 0
    stdout = capsys.readouterr().out
    data = json.loads((out / "bench.json").read_text())
    assert set(data["modes"]) == {"no-cfg", "cfg"}
    for mode, ev in data["modes"].items():
        assert (ev["settings"]["guidance_scale"] is None) == (mode == "no-cfg")
        results = ev["results"]
        origins = {r["origin"] for r in results}
        assert origins == {"ours", "peer"}
        families = {r["family"] for r in results}
        assert {"diffusers-fbc", "diffusers-magcache", "cache-dit-dbcache"} <= families
        assert any(f.startswith("diffusers-taylorseer") for f in families)
        broken = [(r["name"], r["error"]) for r in results if r["error"]]
        assert broken == []
        branches = 1 if mode == "no-cfg" else 2
        for r in results:
            assert len(r["decisions"]) == branches
            assert r["steps_total"] == branches * ev["settings"]["num_steps"]
        # each verdict names the fastest configuration of its side at its quality level
        for v in (v for v in data["verdicts"] if v["mode"] == mode):
            level = v["min_psnr_db"]
            for side in ("ours", "peer"):
                pool = [
                    r
                    for r in results
                    if r["origin"] == side and (r["psnr_db"] is None or r["psnr_db"] >= level) and not r["error"]
                ]
                best = max(pool, key=lambda r: r["speedup"], default=None)
                assert (v[side] or {}).get("name") == (best or {}).get("name")
            if v["ours"] and v["peer"]:
                assert v["ratio"] == pytest.approx(v["ours"]["speedup"] / v["peer"]["speedup"])
                assert v["passed"] == (v["ratio"] >= TARGET_RATIO)
    assert len(data["verdicts"]) == 2 * len(QUALITY_LEVELS)
    assert data["hook_overhead"]["benchmark"] == "hook_overhead"
    for name in ("pareto.png", "hook_overhead.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    assert json.loads((out / "hook_overhead.json").read_text())["variants"]["plain"]["hooks"] == 0
    assert (out / "magcache_profile_cfg.json").is_file() and (out / "magcache_profile_no-cfg.json").is_file()
    assert "Verdicts" in stdout and "no-cfg, PSNR >= 40 dB" in stdout and "cfg, PSNR >= 35 dB" in stdout


def test_sweeps_have_unique_names_and_cover_every_family() -> None:
    for quick in (False, True):
        methods = our_methods("profile.json", quick=quick) + peer_methods([1.0, 0.9, 0.8], quick=quick)
        names = [m.name for m in methods]
        assert len(names) == len(set(names))
        fams = {m.family for m in methods}
        for needed in ("teacache", "magcache", "dbcache", "diffusers-fbc", "diffusers-magcache", "cache-dit-dbcache"):
            assert any(f.startswith(needed) for f in fams), needed
        assert any("+dbcache" in f for f in fams)  # a stack
        assert any(f.endswith("taylorseer") for f in fams if f.startswith(("teacache", "magcache", "dbcache")))
        assert any(f == "cache-dit-dbcache-taylorseer" for f in fams)
        # TaylorSeer forecasting the model output is swept, and the setting reaches the cache's config
        forecast_output = [m for m in methods if m.family.endswith("+taylorseer-output")]
        assert forecast_output
        assert all(m.params["teacache"]["taylorseer_target"] == "output" for m in forecast_output)


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


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(1.0, 60.0), (2.0, 50.0), (1.5, 45.0), (3.0, 40.0), (2.5, 38.0), (3.0, 35.0)]
    front = pareto_front(points)
    assert front == [(1.0, 60.0), (2.0, 50.0), (3.0, 40.0)]
    for x, y in points:  # every point is dominated by (or is) a point of the front
        assert any(fx >= x and fy >= y for fx, fy in front)


@pytest.mark.parametrize(
    ("argv", "where", "message"),
    [
        (["bench"], "err", "the following arguments are required: --out"),
        (["bench", "--out", "x", "--mode", "sometimes"], "err", "argument --mode: invalid choice"),
        (["bench", "--out", "x", "--steps", "1"], "err", "argument --steps: expected an integer in [2, 1000]"),
        (["bench", "--out", "x", "--guidance", "0.5"], "err", "argument --guidance: expected a finite number > 1"),
        (["bench", "--out", "x", "--timer", "gpu"], "err", "argument --timer: invalid choice"),
    ],
)
def test_bad_bench_arguments_exit_2(argv: list[str], where: str, message: str, capsys: Any) -> None:
    assert main(argv) == 2
    assert message in getattr(capsys.readouterr(), where)


def test_unwritable_bench_output_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["bench", "--out", str(blocker / "results"), "--quick"]) == 2
    assert "argument --out" in capsys.readouterr().out
