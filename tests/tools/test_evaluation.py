"""The shared evaluation layer: settings, block counting, decisions, quality metrics, timing bookkeeping, JSON."""

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
from ditcache.bundled import DigitsDiT, load_digits_dit, sample
from ditcache.caches.magcache import magcache_schedule
from ditcache.core.metrics import psnr
from ditcache.tools.evaluation import (
    BlockCounter,
    BranchDecisions,
    EvalSettings,
    Method,
    RunResult,
    calibrate_magcache,
    config_params,
    evaluate,
    evaluation_units,
    max_abs_error,
    ours,
)

STEPS = 6
NUM_BLOCKS = 6  # the bundled model: 2 double-stream + 4 single-stream blocks


@pytest.fixture(scope="module")
def model() -> DigitsDiT:
    torch.set_num_threads(1)
    return load_digits_dit()


def _settings(**kw: Any) -> EvalSettings:
    base: dict[str, Any] = {"labels": (0, 7), "num_steps": STEPS, "guidance_scale": None, "repeats": 1}
    base.update(kw)
    return EvalSettings(**base)


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ()}, "EvalSettings.labels: expected at least one label"),
        ({"labels": (3, 10)}, "EvalSettings.labels: allowed values are the digits 0..9"),
        ({"labels": "012"}, "EvalSettings.labels: expected a sequence of class labels"),
        ({"num_steps": 1}, "EvalSettings.num_steps: expected an int >= 2"),
        ({"repeats": 0}, "EvalSettings.repeats: expected an int >= 1"),
        ({"seed": -1}, "EvalSettings.seed: expected an int >= 0"),
        ({"guidance_scale": 1.0}, "EvalSettings.guidance_scale: 1.0 is the same as no guidance"),
        ({"guidance_scale": -2.0}, "EvalSettings.guidance_scale: expected None"),
        ({"shift": 0.0}, "EvalSettings.shift: expected a finite number > 0"),
        ({"timer": "gpu"}, "EvalSettings.timer: expected one of ['wall', 'cpu']"),
    ],
)
def test_settings_refuse_bad_values_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        EvalSettings(**kwargs)
    assert message in str(info.value)


def test_settings_from_dict_refuses_unknown_keys_and_round_trips() -> None:
    with pytest.raises(ValueError, match="unknown setting"):
        EvalSettings.from_dict({"steps": 4})
    s = EvalSettings(labels=[1, 2], guidance_scale=2.5)
    assert EvalSettings.from_dict(s.as_dict()) == s
    assert s.branches == ("cond", "uncond") and s.guided
    assert EvalSettings(guidance_scale=None).branches == ("cond",)


# ---------------------------------------------------------------------------------------------- metrics
def test_psnr_and_max_abs_error_follow_their_definitions() -> None:
    ref = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    shifted = ref + 0.1  # MSE 0.01 over the data range 1 -> 20 dB
    assert psnr(shifted, ref) == pytest.approx(20.0, abs=1e-5)
    assert psnr(shifted, ref, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2.0), abs=1e-5)
    assert psnr(ref, ref) == math.inf
    assert max_abs_error(shifted, ref) == pytest.approx(0.1, abs=1e-6)
    noisy = ref.clone()
    noisy[1, 2, 3] += 0.5
    assert max_abs_error(noisy, ref) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        psnr(ref[:2], ref)
    with pytest.raises(ValueError, match="data_range"):
        psnr(ref, ref, data_range=0.0)


def test_config_params_lists_only_non_defaults() -> None:
    params = config_params(DBCacheConfig(fn_compute_blocks=1, residual_diff_threshold=0.2))
    assert params == {"fn_compute_blocks": 1, "residual_diff_threshold": 0.2}
    assert config_params(TeaCacheConfig()) == {}
    json.dumps(config_params(TeaCacheConfig(coefficients=(1, 2, 3, 4, 5))))


def test_ours_refuses_non_configs() -> None:
    with pytest.raises(TypeError, match="configs: expected TeaCacheConfig"):
        ours("x", {"rel_l1_thresh": 0.2})
    with pytest.raises(ValueError, match="configs: give at least one"):
        ours("x")
    with pytest.raises(ValueError, match=r"Method\.origin"):
        Method("x", "theirs", "f")


# ---------------------------------------------------------------------------------------------- counting
def test_block_counter_counts_block_bodies_not_the_teacache_indicator(model: DigitsDiT) -> None:
    labels = [0]
    with BlockCounter(model.transformer) as plain:
        sample(model, labels, 3, None, 0)
    assert plain.calls == [[NUM_BLOCKS, NUM_BLOCKS]] * 3

    # TeaCache computes its indicator with block 0's norm1 on every step, skipped or not: not a block execution.
    work = copy.deepcopy(model)
    ditcache.apply_teacache_hook(work.transformer, TeaCacheConfig(rel_l1_thresh=1e9, model="flux.1-dev"))
    with BlockCounter(work.transformer) as cached:
        sample(work, labels, 4, None, 0)
    assert [c[0] for c in cached.calls] == [NUM_BLOCKS, 0, 0, NUM_BLOCKS]  # first and (forced) last step computed
    assert cached.calls[1][1] == 0
    # the hooks are gone afterwards
    with torch.inference_mode():
        sample(work, labels, 2, None, 0)
    assert len(cached.calls) == 4


def test_branch_decisions_classify_steps() -> None:
    d = BranchDecisions("cond", (6, 0, 1, 6, 0), (6, 0, 0, 6, 0), 6)
    assert d.computed_steps == [0, 3]
    assert d.skipped_steps == [1, 4]
    assert d.partial_steps == [2]
    assert d.pattern == "C-1C-"
    assert d.as_dict()["computed_steps"] == 2


# ---------------------------------------------------------------------------------------------- evaluate
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


def test_ideal_speedup_accounts_for_the_fixed_cost() -> None:
    decisions = (BranchDecisions("cond", (6, 0, 0, 6), (6, 0, 0, 6), 6),)
    r = RunResult(
        method=Method("x", "ours", "f"),
        seconds=0.5,
        all_seconds=(0.5,),
        baseline_seconds=1.0,
        fixed_seconds=0.1,
        decisions=decisions,
        psnr=40.0,
        max_abs_error=0.01,
        reproducible=True,
    )
    fraction = 12 / 24
    assert r.computed_fraction == fraction
    assert r.ideal_speedup == pytest.approx(1.0 / (0.1 + 0.9 * fraction))
    assert r.speedup == pytest.approx(2.0)
    assert r.efficiency == pytest.approx(2.0 * (0.1 + 0.9 * fraction))


# ---------------------------------------------------------------------------------------------- calibration
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
