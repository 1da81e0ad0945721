"""``ditcache.tools.evaluation.run``: evaluate measures decisions, quality and time, reports failures, leaves the
caller's model alone; calibrate_magcache writes a loadable profile."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import ditcache
from ditcache import DBCacheConfig, MagCacheConfig, TeaCacheConfig
from ditcache.bundled import DigitsDiT
from ditcache.caches.magcache import magcache_schedule
from ditcache.tools.evaluation import (
    EvalSettings,
    Method,
    calibrate_magcache,
    evaluate,
    evaluation_units,
    ours,
)

STEPS = 6
NUM_BLOCKS = 6  # the bundled model: 2 double-stream + 4 single-stream blocks


def _settings(**kw: Any) -> EvalSettings:
    base: dict[str, Any] = {"labels": (0, 7), "num_steps": STEPS, "guidance_scale": None, "repeats": 1}
    base.update(kw)
    return EvalSettings(**base)


def test_evaluate_measures_decisions_quality_and_time(model: DigitsDiT) -> None:
    ratios = [1.0] * STEPS  # flat curve: the schedule is fixed by max_skip_steps and retention
    mag_cfg = MagCacheConfig(threshold=10.0, max_skip_steps=2, retention_ratio=0.2, mag_ratios=ratios)
    captured: list[Any] = []

    def install_mag(m: DigitsDiT, s: EvalSettings) -> None:
        captured.append(ditcache.apply_magcache_hook(m.transformer, mag_cfg))

    methods = [
        ours("never skips", TeaCacheConfig(rel_l1_thresh=1e-9, model="flux.1-dev")),
        Method("magcache flat", "ours", "magcache", {"threshold": 10.0}, install_mag),
        ours("dbcache", DBCacheConfig(fn_compute_blocks=1, max_warmup_steps=1, residual_diff_threshold=10.0)),
    ]
    settings = _settings(repeats=2)
    ticks: list[str] = []
    ev = evaluate(methods, settings, model=model, progress=ticks.append)
    assert len(ticks) == evaluation_units(len(methods), settings)
    assert ev.baseline.psnr == math.inf and ev.baseline.speedup == pytest.approx(1.0)
    assert ev.fixed_seconds < ev.baseline.seconds

    exact = ev.get("never skips")
    assert exact.psnr == math.inf and exact.max_abs_error == 0.0
    assert exact.blocks_executed == exact.blocks_total == STEPS * NUM_BLOCKS
    assert exact.computed_fraction == 1.0 and exact.ideal_speedup == pytest.approx(1.0)
    assert len(exact.all_seconds) == 2 and exact.seconds == min(exact.all_seconds)
    assert exact.reproducible

    mag = ev.get("magcache flat")
    expected = magcache_schedule(ratios, 10.0, 2, 0.2, STEPS)
    (cond,) = mag.decisions
    assert cond.computed_steps == expected.computed_steps
    assert cond.skipped_steps == expected.skipped_steps and cond.partial_steps == []
    generations = [g for g in captured[0].stats() if g.decisions]
    assert len(generations) == 1 + settings.repeats  # the first run and every timed one
    for g in generations:  # the counters agree with the cache's own record
        assert g.computed_steps == cond.computed_steps
    assert 0 < mag.psnr < math.inf and mag.max_abs_error > 0
    assert mag.computed_fraction == pytest.approx(len(expected.computed_steps) / STEPS)
    assert mag.ideal_speedup > 1.0

    db = ev.get("dbcache")
    (dcond,) = db.decisions
    assert dcond.computed_steps[0] == 0 and dcond.partial_steps  # cached steps run only the first block
    assert all(dcond.blocks[i] == 1 for i in dcond.partial_steps)
    assert db.blocks_executed == sum(dcond.blocks)

    data = json.loads(json.dumps(ev.as_dict(), allow_nan=False))
    assert [r["name"] for r in data["results"]] == [m.name for m in methods]
    assert data["results"][0]["psnr_db"] is None  # identical samples
    assert data["results"][1]["decisions"][0]["pattern"] == "".join("C" if c else "-" for c in expected.compute)


def test_evaluate_with_cfg_reports_both_branches(model: DigitsDiT) -> None:
    settings = _settings(labels=(3,), guidance_scale=3.0)
    ev = evaluate([ours("tea", TeaCacheConfig(rel_l1_thresh=1e9, model="flux.1-dev"))], settings, model=model)
    (r,) = ev.results
    assert [d.branch for d in r.decisions] == ["cond", "uncond"]
    for d in r.decisions:
        assert d.computed_steps == [0, STEPS - 1]
    assert r.steps_total == 2 * STEPS and r.computed_steps == 4 and r.skipped_steps == 2 * STEPS - 4


def test_evaluate_reports_failures_and_leaks_without_stopping(model: DigitsDiT) -> None:
    def broken(m: DigitsDiT, s: EvalSettings) -> None:
        raise RuntimeError("no such cache here")

    def leaky(m: DigitsDiT, s: EvalSettings) -> None:
        calls = [0]

        def drift(module: torch.nn.Module, args: Any, output: Any) -> Any:
            calls[0] += 1  # never reset between runs: every run differs from the previous one
            return (output[0] + 1e-3 * calls[0],)

        m.transformer.register_forward_hook(drift)

    methods = [
        Method("broken", "peer", "x", {}, broken),
        Method("leaky", "peer", "x", {}, leaky),
        ours("ok", TeaCacheConfig(rel_l1_thresh=1e-9, model="flux.1-dev")),
    ]
    ev = evaluate(methods, _settings(repeats=2), model=model)
    bad = ev.get("broken")
    assert not bad.ok and "no such cache here" in (bad.error or "") and bad.speedup == 0.0
    assert ev.get("leaky").ok and not ev.get("leaky").reproducible
    assert ev.get("ok").reproducible and ev.get("ok").psnr == math.inf
    json.dumps(ev.as_dict(), allow_nan=False)
    with pytest.raises(KeyError, match="no result named"):
        ev.get("missing")
    with pytest.raises(ValueError, match="names must be unique"):
        evaluate([methods[2], methods[2]], _settings(), model=model)


def test_evaluate_leaves_the_callers_model_alone_and_refuses_a_cached_one(model: DigitsDiT) -> None:
    evaluate([ours("tea", TeaCacheConfig(rel_l1_thresh=0.5, model="flux.1-dev"))], _settings(), model=model)
    assert ditcache.get_cache_runtime(model.transformer) is None
    cached = copy.deepcopy(model)
    ditcache.apply_teacache_hook(cached.transformer, TeaCacheConfig(rel_l1_thresh=0.5, model="flux.1-dev"))
    with pytest.raises(ValueError, match=r"model: caches \['teacache'\] are applied"):
        evaluate([], _settings(), model=cached)


def test_calibrate_magcache_writes_a_loadable_per_branch_profile(model: DigitsDiT, tmp_path: Path) -> None:
    settings = _settings(guidance_scale=2.0)
    path = tmp_path / "curve.json"
    profile = calibrate_magcache(model, settings, path=path)
    curves = profile.data["curves"]
    assert set(curves) == {"cond", "uncond"}
    assert all(len(c) == STEPS and c[0] == 1.0 for c in curves.values())
    assert profile.metadata["calibration_seed"] != settings.seed
    cfg = MagCacheConfig(profile=str(path), threshold=0.5)
    assert list(cfg.resolve().curve("uncond")) == pytest.approx(curves["uncond"])
    assert ditcache.get_cache_runtime(model.transformer) is None
