"""``ditcache bench`` end to end (the quick sweep of ours and the real peers, every file written) and its
argument errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ditcache.tools.bench import (
    QUALITY_LEVELS,
    TARGET_RATIO,
)
from ditcache.tools.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
