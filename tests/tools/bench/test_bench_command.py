"""``ditcache bench`` end to end (the quick sweep of ours and the real peers, every file written) and its
argument errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ditcache.tools.bench import (
    JSON_LAYOUT,
    QUALITY_LEVELS,
    TARGET_RATIO,
    TRANSFER_TARGET_RATIO,
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
    assert data["layout"] == JSON_LAYOUT
    assert set(data["models"]) == {"digits", "patches"}
    assert data["models"]["patches"]["transformer_class"] == "QwenImageTransformer2DModel"
    guidance = {"digits": 3.0, "patches": 2.0}  # each model's own default
    for model, section in data["models"].items():
        assert set(section["modes"]) == {"no-cfg", "cfg"}
        assert section["verdicts"] == [v for v in data["verdicts"] if v["model"] == model]
        for mode, ev in section["modes"].items():
            assert ev["settings"]["model"] == model
            assert ev["settings"]["guidance_scale"] == (None if mode == "no-cfg" else guidance[model])
            _check_mode(mode, ev, section["verdicts"])
    # the same sweep of ours on every model and mode
    names = {
        (m, d): [r["name"] for r in ev["results"] if r["origin"] == "ours"]
        for m, sec in data["models"].items()
        for d, ev in sec["modes"].items()
    }
    assert len({tuple(v) for v in names.values()}) == 1
    assert len(data["verdicts"]) == 4 * len(QUALITY_LEVELS)
    _check_transfer(data)
    assert data["hook_overhead"]["benchmark"] == "hook_overhead"
    for name in ("pareto.png", "spread.png", "hook_overhead.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    assert json.loads((out / "hook_overhead.json").read_text())["variants"]["plain"]["hooks"] == 0
    for model in ("digits", "patches"):
        for mode in ("cfg", "no-cfg"):
            assert (out / f"magcache_profile_{model}_{mode}.json").is_file()
    assert (
        "Verdicts" in stdout and "digits, no-cfg, PSNR >= 40 dB" in stdout and "patches, cfg, PSNR >= 35 dB" in stdout
    )
    assert "Transfer verdicts" in stdout and "PSNR >= 40 dB on every model and mode" in stdout


def _check_transfer(data: dict[str, Any]) -> None:
    spread = {s["name"]: s for s in data["spread"]}
    cells = [f"{m}/{d}" for m, sec in data["models"].items() for d in sec["modes"]]
    assert spread and all(list(s["psnr_db"]) == cells for s in spread.values())
    assert [t["min_psnr_db"] for t in data["transfer"]] == list(QUALITY_LEVELS)
    for t in data["transfer"]:
        level = t["min_psnr_db"]
        meets = [n for n, s in spread.items() if s["worst_psnr_db"] is None or s["worst_psnr_db"] >= level]
        assert t["candidates"] == len(meets)
        if t["setting"] is None:
            assert not meets and not t["passed"]
            continue
        assert t["worst_speedup"] == pytest.approx(max(spread[n]["worst_speedup"] for n in meets))
        assert [f"{c['model']}/{c['mode']}" for c in t["cells"]] == cells
        for c in t["cells"]:
            assert c["psnr_db"] is None or c["psnr_db"] >= level
            if c["peer"] is not None:
                assert c["ratio"] == pytest.approx(c["speedup"] / c["peer"]["speedup"])
                assert c["ratio_passed"] == (c["ratio"] >= TRANSFER_TARGET_RATIO)
        assert t["passed"] == (all(c["ratio_passed"] for c in t["cells"]) and t["psnr_passed"])


def _check_mode(mode: str, ev: dict[str, Any], mode_verdicts: list[dict[str, Any]]) -> None:
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
    for v in (v for v in mode_verdicts if v["mode"] == mode):
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


def test_quick_bench_of_one_model_and_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--out", str(out), "--quick", "--model", "patches", "--mode", "cfg", "--no-peers"]
    argv += ["--no-hook-overhead", "--guidance", "1.5"]
    assert main(argv) == 0
    data = json.loads((out / "bench.json").read_text())
    assert list(data["models"]) == ["patches"] and list(data["models"]["patches"]["modes"]) == ["cfg"]
    assert data["models"]["patches"]["modes"]["cfg"]["settings"]["guidance_scale"] == 1.5
    assert {r["origin"] for r in data["models"]["patches"]["modes"]["cfg"]["results"]} == {"ours"}
    for t in data["transfer"]:  # no peer anywhere: ratios are infinite (null), the ratio goal is met
        for c in t["cells"]:
            assert c["peer"] is None and c["ratio"] is None and c["ratio_passed"]
    assert "patches, cfg" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "where", "message"),
    [
        (["bench"], "err", "the following arguments are required: --out"),
        (["bench", "--out", "x", "--mode", "sometimes"], "err", "argument --mode: invalid choice"),
        (["bench", "--out", "x", "--model", "faces"], "err", "argument --model: invalid choice"),
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
