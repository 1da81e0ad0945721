"""MagCache: the schedule against an independent replay of the published rule, the oracle against diffusers'
``MagCacheConfig`` / ``apply_mag_cache`` on a tiny random Flux, calibration and profiles, and the runtime
behaviour (branches, step counts, interrupted runs, validation).

Oracle tolerance: the final latents of ditcache and diffusers must agree to a relative error of 1e-6 (the same
float32 operations run in the same order, so they are in practice bit-identical).
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxTransformer2DModel, WanTransformer3DModel
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS
from diffusers.hooks.mag_cache import MagCacheConfig as DiffusersMagCacheConfig
from diffusers.hooks.mag_cache import apply_mag_cache as diffusers_apply_mag_cache
from diffusers.hooks.mag_cache import nearest_interp as diffusers_nearest_interp

import ditcache
from _support.flux import FluxCall, FluxInputs, denoise
from _support.probes import count_block_calls, executed_calls, rel_err
from ditcache import profiles
from ditcache.caches.magcache import (
    MagCache,
    MagCacheConfig,
    apply_magcache_hook,
    branch_role,
    magcache_retention_steps,
    magcache_schedule,
    resample_ratios,
    split_interleaved,
)
from ditcache.core.validators import config_fields
from ditcache.presets.magcache import MAG_RATIO_PRESETS, MagRatioPreset, infer_magcache_model

STEPS = 28
ORACLE_RTOL = 1e-6  # relative L2 error allowed between ditcache and diffusers (observed: 0.0)
SKIP_BOUND = 0.02  # relative L2 error allowed between a skipping run and the uncached run (observed: ~0.005)

# MagCache4FLUX/magcache_flux.py (Zehong-Ma/MagCache), typed here from the authors' script rather than imported,
# so the preset table is checked too.
FLUX_AUTHORS = [
    1.0,  # padding
    1.21094, 1.11719, 1.07812, 1.0625, 1.03906, 1.03125, 1.03906, 1.02344, 1.03125, 1.02344, 0.98047, 1.01562,
    1.00781, 1.0, 1.00781, 1.0, 1.00781, 1.0, 1.0, 0.99609, 0.99609, 0.98047, 0.98828, 0.96484, 0.95703, 0.93359,
    0.89062,
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------- helpers
def numpy_nearest_interp(src: Sequence[float] | np.ndarray, target_length: int) -> np.ndarray:
    """MagCache's ``nearest_interp`` (MagCache4FLUX / MagCache4Wan2.1), re-typed: numpy float64 indices."""
    arr = np.asarray(src, dtype=np.float64)
    if target_length == 1:
        return np.asarray(arr[-1:])
    scale = (len(arr) - 1) / (target_length - 1)
    return np.asarray(arr[np.round(np.arange(target_length) * scale).astype(int)])


def replay_rule(
    ratios: Sequence[float], thresh: float, k: int, retention_ratio: float, num_steps: int, *, mutant: str = ""
) -> list[bool]:
    """The published decision loop (MagCache4FLUX ``magcache_forward``, diffusers' head hook), one branch.

    ``ratios`` must already have ``num_steps`` entries. Returns True for computed steps. A residual exists from
    step 1 on (step 0 always computes). ``mutant`` plants a known mistake to show the comparison can fail.
    """
    acc_ratio, acc_steps, acc_err = 1.0, 0, 0.0
    has_residual = False
    out = []
    for cnt in range(num_steps):
        skip = False
        if cnt >= int(retention_ratio * num_steps + 0.5):
            acc_ratio = acc_ratio * ratios[cnt]
            acc_steps += 1
            acc_err += abs(1 - acc_ratio)
            below = acc_err < thresh if mutant == "strict" else acc_err <= thresh
            if has_residual and below and (mutant == "no_k" or acc_steps <= k):
                skip = True
            elif mutant != "no_reset":
                acc_ratio, acc_steps, acc_err = 1.0, 0, 0.0
        out.append(not skip)
        has_residual = True
    return out


def run_diffusers(
    base: FluxTransformer2DModel, inputs: FluxInputs, steps: int, dcfg: DiffusersMagCacheConfig, **kw: Any
) -> tuple[torch.Tensor, list[int]]:
    model = copy.deepcopy(base)
    diffusers_apply_mag_cache(model, dcfg)
    with executed_calls(model) as computed:
        out = denoise(model, steps, inputs=inputs, **kw)
    model._reset_stateful_cache()
    return out, computed


def run_ours(
    base: FluxTransformer2DModel, inputs: FluxInputs, steps: int, config: MagCacheConfig, **kw: Any
) -> tuple[torch.Tensor, list[int], MagCache]:
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, config)
    with executed_calls(model) as computed:
        out = denoise(model, steps, inputs=inputs, **kw)
    return out, computed, cache


@pytest.fixture(scope="module")
def calibrated(base: FluxTransformer2DModel, inputs: FluxInputs) -> list[float]:
    """The tiny model's own 28-step curve, measured by our calibration mode."""
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    denoise(model, STEPS, inputs=inputs)
    curve: list[float] = cache.calibration_profile().data["curves"]["cond"]
    return curve


# --------------------------------------------------------------------------------- 1. the schedule function
def _random_cases(n: int, seed: int = 0) -> list[tuple[list[float], float, int, float, int]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        length = int(rng.integers(2, 60))
        curve = [1.0, *np.round(1.0 + rng.normal(0.0, 0.04, length - 1), 5).tolist()]
        cases.append(
            (
                curve,
                float(rng.choice([0.01, 0.03, 0.06, 0.12, 0.24, 0.5])),
                int(rng.integers(1, 7)),
                float(rng.choice([0.0, 0.1, 0.2, 0.25, 0.4])),
                int(rng.integers(1, 80)),
            )
        )
    return cases


def test_schedule_matches_independent_replay() -> None:
    skipped_total = 0
    for curve, thresh, k, retention, steps in _random_cases(400):
        resampled = numpy_nearest_interp(curve, steps)
        if not np.array_equal(resampled, np.asarray(resample_ratios(curve, steps))):
            continue  # a rounding tie, covered by test_resampling_breaks_exact_ties_to_even
        expected = replay_rule(resampled.tolist(), thresh, k, retention, steps)
        got = magcache_schedule(curve, thresh, k, retention, steps)
        assert list(got) == expected, (curve, thresh, k, retention, steps)
        skipped_total += expected.count(False)
    assert skipped_total > 500  # the cases exercise skipping, not only computing


@pytest.mark.parametrize("mutant", ["strict", "no_k", "no_reset"])
def test_replay_comparison_can_fail(mutant: str) -> None:
    differs = any(
        list(magcache_schedule(c, t, k, r, n)) != replay_rule(list(resample_ratios(c, n)), t, k, r, n, mutant=mutant)
        for c, t, k, r, n in _random_cases(200, seed=1)
    )
    if mutant == "strict":  # '<' vs '<=' only differs on an exact tie: build one
        differs = list(magcache_schedule([1.0, 1.5, 1.0], 0.5, 2, 0.0, 3)) != replay_rule(
            [1.0, 1.5, 1.0], 0.5, 2, 0.0, 3, mutant="strict"
        )
    assert differs


def test_schedule_of_published_flux_setting() -> None:
    # FLUX.1-dev, 28 steps, E=0.24, K=5, R=0.1 (MagCache4FLUX README), replayed by hand from the curve.
    sched = magcache_schedule(FLUX_AUTHORS, 0.24, 5, 0.1, 28)
    assert list(sched) == replay_rule(FLUX_AUTHORS, 0.24, 5, 0.1, 28)
    assert sched.retention_steps == 3 and sched.compute[:3] == (True, True, True)
    assert sched.accumulated_error[3] == pytest.approx(abs(1 - 1.07812))  # FLUX_AUTHORS[3]
    assert not sched.compute[-1]  # no forced last step: the published rule can end on a reused step
    assert str(sched).startswith(f"{len(sched.computed_steps)}/28 steps computed: CCC")


def test_threshold_is_inclusive() -> None:
    # error at step 1 = |1 - 1.5| = 0.5 exactly (binary-exact numbers)
    assert list(magcache_schedule([1.0, 1.5, 1.0], 0.5, 3, 0.0, 3)) == [True, False, True]
    assert list(magcache_schedule([1.0, 1.5, 1.0], 0.49999, 3, 0.0, 3)) == [True, True, False]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_max_skip_steps_caps_runs_of_skips(k: int) -> None:
    sched = magcache_schedule([1.0] * 30, 1.0, k, 0.1, 30)  # error stays 0: only K limits skipping
    runs = [len(r) for r in sched.pattern.split("C") if r]
    assert runs and max(runs) == k
    assert sched.pattern.startswith("CCC" + "-" * k + "C")  # retention int(0.1 * 30 + 0.5) = 3


def test_retention_rounding() -> None:
    # int(R * N + 0.5): half rounds up (MagCache4FLUX, diffusers)
    assert magcache_retention_steps(0.1, 28) == 3
    assert magcache_retention_steps(0.2, 50) == 10
    assert magcache_retention_steps(0.25, 10) == 3  # 2.5 -> 3
    assert magcache_retention_steps(0.1, 5) == 1  # 0.5 -> 1
    assert magcache_retention_steps(0.0, 5) == 0
    for r, n in [(0.25, 10), (0.1, 28), (0.3, 7)]:
        sched = magcache_schedule([1.0] * n, 10.0, 100, r, n)
        assert sched.computed_steps == list(range(max(1, magcache_retention_steps(r, n))))


def test_first_step_always_computes_without_retention() -> None:
    sched = magcache_schedule([1.0] * 6, 10.0, 100, 0.0, 6)
    assert sched.pattern == "C-----"


# ----------------------------------------------------------------------------------------------- 2. resampling
def test_resampling_matches_published_nearest_interp() -> None:
    compared = 0
    for length in (1, 2, 5, 28, 40, 50):
        curve = [1.0 + 0.001 * i for i in range(length)]
        for steps in range(1, 101):
            ours = resample_ratios(curve, steps)
            assert len(ours) == steps
            if ours == tuple(numpy_nearest_interp(curve, steps)):
                compared += 1
    assert compared >= 590  # all but the exact ties (checked below)
    assert resample_ratios([1.0, 2.0, 3.0], 1) == (3.0,)  # N = 1 takes the last entry
    assert resample_ratios(FLUX_AUTHORS, 28) == tuple(FLUX_AUTHORS)


def test_resampling_matches_diffusers_for_flux_curve() -> None:
    for steps in (4, 10, 20, 28, 30, 50, 60):
        theirs = diffusers_nearest_interp(FLUX_MAG_RATIOS, steps).tolist()
        assert resample_ratios(FLUX_MAG_RATIOS.tolist(), steps) == tuple(theirs)


def test_resampling_breaks_exact_ties_to_even() -> None:
    # i * (L - 1) / (N - 1) exactly halfway between two indices: both neighbours are equally near; numpy float64
    # and diffusers' float32 break such ties by rounding error, we round half to even exactly.
    curve = list(range(1, 29))  # value = index + 1
    for steps in (99, 197):  # ties where numpy's float64 index is off from the exact rounding
        ours = resample_ratios([float(v) for v in curve], steps)
        pub = numpy_nearest_interp(curve, steps)
        diffs = [i for i in range(steps) if ours[i] != pub[i]]
        assert diffs
        for i in diffs:
            twice = 2 * i * 27
            assert twice % (steps - 1) == 0 and (twice // (steps - 1)) % 2 == 1  # an exact .5 tie
            assert (int(ours[i]) - 1) % 2 == 0  # ... resolved to the even index


def test_interleaved_curves_split_and_resample_per_branch() -> None:
    preset = MAG_RATIO_PRESETS["wan2.1-t2v-1.3b"]
    halves = split_interleaved(preset.ratios)
    assert halves == preset.curves()
    assert halves["cond"][:2] == (1.0, 1.0124) and halves["uncond"][:2] == (1.0, 1.02213)
    # MagCache4Wan2.1: nearest_interp on [0::2] and [1::2] separately, then re-interleaved
    arr = np.asarray(preset.ratios)
    for steps in (20, 30, 50):
        assert resample_ratios(halves["cond"], steps) == tuple(numpy_nearest_interp(arr[0::2], steps))
        assert resample_ratios(halves["uncond"], steps) == tuple(numpy_nearest_interp(arr[1::2], steps))
    with pytest.raises(ValueError, match="even length"):
        split_interleaved([1.0, 1.0, 0.9])


# ---------------------------------------------------------------------------------------------------- 3. presets
def test_presets_layout_and_sources() -> None:
    for key, preset in MAG_RATIO_PRESETS.items():
        assert preset.ratios[: preset.padding] == (1.0,) * preset.padding, key
        assert len(preset.ratios) == preset.num_steps * (2 if preset.interleaved else 1), key
        assert preset.source, key
    interleaved = {k for k, p in MAG_RATIO_PRESETS.items() if p.interleaved}
    assert interleaved == {
        "qwen-image", "qwen-image-edit", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p",
        "wan2.1-i2v-14b-720p", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "wan2.2-ti2v-5b-i2v",
        "wan2.1-vace-1.3b", "chroma", "hunyuanvideo1.5-20steps", "hunyuanvideo1.5-40steps",
    }  # fmt: skip
    with pytest.raises(ValueError, match="expected 4 values"):
        MagRatioPreset((1.0, 1.0, 1.0), "x", 2, True, 0.1, 1, 0.1)


def test_flux_presets_are_kept_apart() -> None:
    assert list(MAG_RATIO_PRESETS["flux.1-dev"].ratios) == FLUX_AUTHORS
    # diffusers 0.42 ships the authors' curve (as float32)
    assert [round(v, 5) for v in FLUX_MAG_RATIOS.tolist()] == FLUX_AUTHORS
    # vLLM-Omni's FluxMagCacheStrategy curve is another one, under its own name
    other = MAG_RATIO_PRESETS["flux.1-dev-vllm-omni"]
    assert other.ratios[:3] == (1.0, 1.07313, 1.21035) and other.ratios != tuple(FLUX_AUTHORS)
    assert "vllm-omni" in other.source and "MagCache4FLUX" in MAG_RATIO_PRESETS["flux.1-dev"].source


def _wan(**kw: Any) -> WanTransformer3DModel:
    config: dict[str, Any] = {
        "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 4,
        "out_channels": 4, "text_dim": 16, "freq_dim": 16, "ffn_dim": 16, "num_layers": 1, "rope_max_seq_len": 32,
    }  # fmt: skip
    config.update(kw)
    return WanTransformer3DModel(**config)


def test_model_inference(base: FluxTransformer2DModel) -> None:
    assert infer_magcache_model(base) == ("flux.1-dev", False)
    assert infer_magcache_model(_wan()) == ("wan2.1-t2v-1.3b", False)
    assert infer_magcache_model(_wan(image_dim=8, added_kv_proj_dim=16)) == ("wan2.1-i2v-14b-480p", False)
    assert infer_magcache_model(_wan(in_channels=48, out_channels=48)) == ("wan2.2-ti2v-5b", False)
    assert infer_magcache_model(_wan(in_channels=36)) == ("wan2.2-i2v-a14b", False)
    with pytest.raises(ValueError, match=r"no published MagCache ratios.*calibrate"):
        infer_magcache_model(torch.nn.Linear(2, 2))
    resolved = MagCacheConfig().resolve(base)
    assert resolved.preset == "flux.1-dev" and resolved.curves == {"cond": tuple(FLUX_AUTHORS)}


# --------------------------------------------------------------------------------------- 4. oracle vs diffusers
ORACLE_CASES: dict[str, tuple[str, float, int, float, int]] = {
    # name: (curve, threshold, K, retention, steps); "flux" = diffusers' FLUX_MAG_RATIOS, "calibrated" = ours
    "flux-E024K5R01": ("flux", 0.24, 5, 0.1, STEPS),
    "flux-E006K3R02": ("flux", 0.06, 3, 0.2, STEPS),
    "flux-E012K2R00": ("flux", 0.12, 2, 0.0, STEPS),
    "calibrated-E010K3R01": ("calibrated", 0.10, 3, 0.1, STEPS),
    "calibrated-E030K4R02": ("calibrated", 0.30, 4, 0.2, STEPS),
    "flux-resampled-50": ("flux", 0.24, 5, 0.1, 50),
}


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_oracle_matches_diffusers(
    case: str, base: FluxTransformer2DModel, inputs: FluxInputs, calibrated: list[float]
) -> None:
    curve_name, thresh, k, retention, steps = ORACLE_CASES[case]
    curve = FLUX_MAG_RATIOS.tolist() if curve_name == "flux" else calibrated
    settings: dict[str, Any] = {
        "threshold": thresh,
        "max_skip_steps": k,
        "retention_ratio": retention,
        "num_inference_steps": steps,
    }
    theirs, theirs_computed = run_diffusers(
        base, inputs, steps, DiffusersMagCacheConfig(**settings, mag_ratios=torch.tensor(curve))
    )
    ours, ours_computed, cache = run_ours(base, inputs, steps, MagCacheConfig(**settings, mag_ratios=curve))
    stats = cache.stats()[-1]
    assert len(stats.decisions) == steps
    assert stats.computed_steps == ours_computed  # the stats tell the truth: skipped steps ran no block
    assert ours_computed == theirs_computed
    assert ours_computed == cache.schedule(steps).computed_steps  # followed the precomputed schedule
    assert 0 < len(stats.skipped_steps) < steps - 1
    assert rel_err(ours, theirs) <= ORACLE_RTOL


def test_oracle_cfg_cache_context(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    # Pipeline-style true CFG: diffusers keeps one MagCache state per cache_context name, as we keep per branch.
    settings: dict[str, Any] = {
        "threshold": 0.24,
        "max_skip_steps": 5,
        "retention_ratio": 0.1,
        "num_inference_steps": 20,
    }
    kw: dict[str, Any] = {"cfg": 3.0, "branch_mode": "cache_context"}
    curve = FLUX_MAG_RATIOS.tolist()
    theirs, theirs_computed = run_diffusers(
        base, inputs, 20, DiffusersMagCacheConfig(**settings, mag_ratios=torch.tensor(curve)), **kw
    )
    ours, ours_computed, cache = run_ours(base, inputs, 20, MagCacheConfig(**settings, mag_ratios=curve), **kw)
    assert ours_computed == theirs_computed
    by_branch = {str(s.branch): s.computed_steps for s in cache.stats()}
    assert by_branch == {"cond": cache.schedule(20).computed_steps, "uncond": cache.schedule(20).computed_steps}
    assert len(ours_computed) < 40
    assert rel_err(ours, theirs) <= ORACLE_RTOL


def test_calibration_matches_diffusers(
    base: FluxTransformer2DModel, inputs: FluxInputs, calibrated: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy.deepcopy(base)
    diffusers_apply_mag_cache(model, DiffusersMagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    out = denoise(model, STEPS, inputs=inputs)
    printed = capsys.readouterr().out
    match = re.search(r"mag_ratios=\.\.\.\):\s*\n(\[.*?\])", printed)
    assert match, printed
    theirs = ast.literal_eval(match.group(1))
    assert len(theirs) == len(calibrated) == STEPS and calibrated[0] == theirs[0] == 1.0
    np.testing.assert_allclose(calibrated, theirs, rtol=1e-5)
    assert max(abs(c - 1) for c in calibrated) > 0.01  # a real curve, not all ones
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------ 5. against the uncached run
def test_never_skipping_equals_uncached(
    base: FluxTransformer2DModel, inputs: FluxInputs, uncached: torch.Tensor
) -> None:
    for cfg in (
        MagCacheConfig(retention_ratio=0.99, num_inference_steps=STEPS, mag_ratios=FLUX_AUTHORS),
        MagCacheConfig(threshold=0.01, num_inference_steps=STEPS, mag_ratios=[1.0] + [1.5] * 27),
    ):
        out, computed, cache = run_ours(base, inputs, STEPS, cfg)
        assert computed == list(range(STEPS)) and cache.stats()[-1].skipped_steps == []
        assert torch.equal(out, uncached)


def test_skipping_stays_close_to_uncached(
    base: FluxTransformer2DModel, inputs: FluxInputs, uncached: torch.Tensor
) -> None:
    cfg = MagCacheConfig(threshold=0.24, max_skip_steps=5, retention_ratio=0.1, num_inference_steps=STEPS)
    out, computed, cache = run_ours(base, inputs, STEPS, cfg)  # the flux.1-dev preset, inferred
    assert cache.resolved.preset == "flux.1-dev"
    assert len(computed) <= STEPS // 2
    err = rel_err(out, uncached)
    assert 0 < err <= SKIP_BOUND


def test_interrupted_generation_does_not_poison_the_next(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    cfg = MagCacheConfig(threshold=0.24, max_skip_steps=5, retention_ratio=0.1, num_inference_steps=STEPS)
    fresh, fresh_computed, _ = run_ours(base, inputs, STEPS, cfg)
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, cfg)

    def fail_at_10(i: int) -> None:
        if i == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        denoise(model, STEPS, inputs=inputs, on_step=fail_at_10)
    with executed_calls(model) as computed:
        out = denoise(model, STEPS, inputs=inputs)
    assert computed == fresh_computed
    assert cache.stats()[-1].computed_steps == fresh_computed
    assert torch.equal(out, fresh)


def test_a_different_step_count_resamples(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, MagCacheConfig(threshold=0.24, max_skip_steps=5, retention_ratio=0.1))
    seen = []
    for steps in (28, 50, 12, 28):
        ditcache.refresh(model, steps)
        denoise(model, steps, inputs=inputs)
        stats = cache.stats()[-1]
        seen.append(stats.computed_steps)
        assert len(stats.decisions) == steps
        expected = magcache_schedule(FLUX_AUTHORS, 0.24, 5, 0.1, steps)
        assert stats.computed_steps == expected.computed_steps
    assert seen[0] == seen[3] and seen[0] != seen[1]


def test_unknown_step_count_is_a_clear_error(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    model = copy.deepcopy(base)
    apply_magcache_hook(model, {"threshold": 0.24})
    with pytest.raises(ValueError, match=r"num_inference_steps.*ditcache\.refresh"):
        denoise(model, 4, inputs=inputs)
    ditcache.refresh(model, 4)  # recovers once the count is known
    assert torch.isfinite(denoise(model, 4, inputs=inputs)).all()


def test_step_count_from_cache_context(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    # Wan-style pipelines pass num_inference_steps and step_index through cache_context.
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, {"threshold": 0.24, "max_skip_steps": 5, "retention_ratio": 0.1})
    trace: list[FluxCall] = []
    denoise(copy.deepcopy(base), 20, inputs=inputs, trace=trace)
    with torch.no_grad():
        for call in trace:
            with model.cache_context("cond", step_index=call.step, num_inference_steps=20):
                model(**call.kwargs)
    assert cache.stats()[-1].computed_steps == cache.schedule(20).computed_steps


# --------------------------------------------------------------------------------------------- 6. CFG branches
def test_branch_roles() -> None:
    assert branch_role("cond") == "cond" and branch_role("uncond") == "uncond"
    assert branch_role("Negative_prompt") == "uncond" and branch_role("uncond_stg") == "uncond"
    assert branch_role("cond_uncond") == "cond" and branch_role(3) == "cond"


def _two_curve_profile(tmp_path: Path) -> Path:
    # cond curve: all ones (error stays 0, only K limits skips); uncond curve: far from 1 (never skips)
    profile = profiles.Profile(
        kind="magcache",
        model="test",
        data={"num_steps": 20, "curves": {"cond": [1.0] * 20, "uncond": [1.0] + [1.6] * 19}},
    )
    return profiles.save_profile(profile, tmp_path / "two.json")


@pytest.mark.parametrize("mode", ["auto", "cfg_branch", "cache_context"])
def test_each_branch_follows_its_curve(
    mode: str, base: FluxTransformer2DModel, inputs: FluxInputs, tmp_path: Path
) -> None:
    path = _two_curve_profile(tmp_path)
    model = copy.deepcopy(base)
    cfg = MagCacheConfig(threshold=0.2, max_skip_steps=3, retention_ratio=0.0, num_inference_steps=20, profile=path)
    cache = apply_magcache_hook(model, cfg)
    for _ in range(2):  # the second run must assign the same roles
        denoise(model, 20, cfg=3.0, inputs=inputs, branch_mode=mode)  # type: ignore[arg-type]
        runs = cache.stats()[-2:]
        by_order = [s.computed_steps for s in runs]
        assert by_order[0] == cache.schedule(20, "cond").computed_steps == [0, 4, 8, 12, 16]
        assert by_order[1] == cache.schedule(20, "uncond").computed_steps == list(range(20))


def test_named_uncond_first_still_gets_uncond_curve(
    base: FluxTransformer2DModel, inputs: FluxInputs, tmp_path: Path
) -> None:
    path = _two_curve_profile(tmp_path)
    model = copy.deepcopy(base)
    cfg = MagCacheConfig(threshold=0.2, max_skip_steps=3, retention_ratio=0.0, num_inference_steps=20, profile=path)
    cache = apply_magcache_hook(model, cfg)
    trace: list[FluxCall] = []
    denoise(copy.deepcopy(base), 20, cfg=3.0, inputs=inputs, trace=trace)
    with torch.no_grad():
        for call in sorted(trace, key=lambda c: (c.step, c.branch != "uncond")):  # uncond before cond
            with ditcache.cfg_branch(call.branch):
                model(**call.kwargs)
    by_branch = {str(s.branch): s.computed_steps for s in cache.stats()}
    assert by_branch == {"cond": [0, 4, 8, 12, 16], "uncond": list(range(20))}


# ------------------------------------------------------------------------------- 7. calibration and profiles
def test_calibration_round_trip(
    base: FluxTransformer2DModel,
    inputs: FluxInputs,
    uncached: torch.Tensor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(profiles.PROFILE_DIR_ENV, str(tmp_path / "store"))
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    out = denoise(model, STEPS, inputs=inputs)
    assert torch.equal(out, uncached)  # calibration never skips
    assert cache.stats()[-1].skipped_steps == []
    by_path = cache.save_profile(tmp_path / "tiny-flux.json")
    by_name = cache.save_profile("tiny-flux")
    assert by_name == tmp_path / "store" / "tiny-flux.json"
    assert profiles.list_profiles("magcache") == ["tiny-flux"]
    stored = json.loads(by_path.read_text())
    assert stored["kind"] == "magcache" and stored["model"] == "FluxTransformer2DModel"
    curve = stored["data"]["curves"]["cond"]
    assert len(curve) == STEPS and curve[0] == 1.0 and set(stored["data"]["curves"]) == {"cond"}
    assert len(stored["data"]["std"]["cond"]) == len(stored["data"]["cosine_distance"]["cond"]) == STEPS
    assert all(0 <= c <= 2 for c in stored["data"]["cosine_distance"]["cond"])
    for ref in (by_path, "tiny-flux"):
        cfg = MagCacheConfig(
            threshold=0.3, max_skip_steps=4, retention_ratio=0.1, num_inference_steps=STEPS, profile=ref
        )
        assert cfg.resolve().curves == {"cond": tuple(curve)}
        out, computed, cached = run_ours(base, inputs, STEPS, cfg)
        assert cached.stats()[-1].skipped_steps and len(computed) < STEPS
        assert rel_err(out, uncached) <= SKIP_BOUND


def test_cfg_calibration_gives_per_branch_curves(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    curves = {}
    for mode in ("auto", "cfg_branch"):
        model = copy.deepcopy(base)
        cache = apply_magcache_hook(model, MagCacheConfig(calibrate=True, num_inference_steps=12))
        denoise(model, 12, cfg=3.0, inputs=inputs, branch_mode=mode)
        profile = cache.calibration_profile(model="tiny-cfg")
        assert profile.model == "tiny-cfg" and profile.data["num_steps"] == 12
        assert [b["role"] for b in profile.data["branches"]] == ["cond", "uncond"]
        curves[mode] = profile.data["curves"]
    assert curves["auto"] == curves["cfg_branch"]  # automatic branches ordered like the named ones
    assert curves["auto"]["cond"] != curves["auto"]["uncond"]
    assert curves["auto"]["cond"][0] == curves["auto"]["uncond"][0] == 1.0


def test_second_calibration_run_replaces_the_first(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, MagCacheConfig(calibrate=True))
    with pytest.raises(ValueError, match="no calibration data"):
        cache.calibration_profile()
    ditcache.refresh(model, 6)
    denoise(model, 6, cfg=3.0, inputs=inputs)
    ditcache.refresh(model, 8)
    denoise(model, 8, inputs=inputs)  # no CFG this time
    data = cache.calibration_profile().data
    assert data["num_steps"] == 8 and set(data["curves"]) == {"cond"}


def test_profile_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(profiles.PROFILE_DIR_ENV, str(tmp_path))
    with pytest.raises(profiles.ProfileNotFoundError, match=r"no profile named 'nope'.*DITCACHE_PROFILE_DIR"):
        MagCacheConfig(profile="nope").resolve()
    with pytest.raises(FileNotFoundError, match="no profile file"):
        profiles.load_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(profiles.ProfileError, match="cannot be read as JSON"):
        profiles.load_profile("bad")
    tea = profiles.Profile(kind="teacache", model="m", data={"coefficients": [1, 2, 3, 4, 5]})
    profiles.save_profile(tea, "tea")
    with pytest.raises(profiles.ProfileError, match="is a 'teacache' profile, expected a 'magcache'"):
        MagCacheConfig(profile="tea").resolve()
    broken = profiles.Profile(kind="magcache", model="m", data={"curves": {"cond": [1.0, -2.0]}})
    profiles.save_profile(broken, "broken")
    with pytest.raises(profiles.ProfileError, match=r"data\.curves\.cond.*> 0"):
        MagCacheConfig(profile="broken").resolve()
    odd = profiles.Profile(kind="magcache", model="m", data={"curves": {"cfg": [1.0]}})
    profiles.save_profile(odd, "odd")
    with pytest.raises(profiles.ProfileError, match="at least a 'cond' curve"):
        MagCacheConfig(profile="odd").resolve()
    obj = json.loads((tmp_path / "tea.json").read_text())
    (tmp_path / "extra.json").write_text(json.dumps({**obj, "colour": 1}))
    with pytest.raises(profiles.ProfileError, match=r"unknown key\(s\) \['colour'\]"):
        profiles.load_profile("extra")
    with pytest.raises(profiles.ProfileError, match=r"Profile\.kind: expected one of"):
        profiles.Profile(kind="dbcache", model=None, data={})
    with pytest.raises(profiles.ProfileError, match="not a valid profile name"):
        profiles.profile_path("bad name")
    with pytest.raises(profiles.ProfileError, match="already exists"):
        profiles.save_profile(tea, "tea", overwrite=False)
    with pytest.raises(profiles.ProfileError, match="strict JSON"):
        profiles.save_profile(profiles.Profile(kind="magcache", model=None, data={"x": math.nan}), "nan")
    assert profiles.list_profiles() == ["bad", "broken", "extra", "odd", "tea"]
    assert profiles.list_profiles("teacache") == ["tea"]


def test_profile_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(profiles.PROFILE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert profiles.profile_dir() == tmp_path / "ditcache" / "profiles"
    assert profiles.profile_path("x.json") == Path("x.json")  # a .json string is a path, not a name


# --------------------------------------------------------------------------------------------- 8. configuration
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"taylorseer": 1}, r"MagCacheConfig\.taylorseer"),
    ({"taylorseer_target": "velocity"}, r"MagCacheConfig\.taylorseer_target: expected one of \['residual', 'output'\]"),
    ({"taylorseer_target": "output"}, r"MagCacheConfig\.taylorseer_target: 'output' forecasts with TaylorSeer"),
    ({"taylorseer_order": -1}, r"MagCacheConfig\.taylorseer_order: expected an int >= 0"),
    ({"taylorseer_method": "euler"}, r"MagCacheConfig\.taylorseer_method: expected one of \['taylor', 'newton'\]"),
    ({"threshold": 0}, r"MagCacheConfig\.threshold: expected a finite number > 0"),
    ({"threshold": math.inf}, r"MagCacheConfig\.threshold"),
    ({"threshold": True}, r"MagCacheConfig\.threshold"),
    ({"max_skip_steps": 0}, r"MagCacheConfig\.max_skip_steps: expected an int >= 1"),
    ({"max_skip_steps": 2.0}, r"MagCacheConfig\.max_skip_steps"),
    ({"retention_ratio": 1.0}, r"MagCacheConfig\.retention_ratio: expected a number in \[0, 1\)"),
    ({"retention_ratio": -0.1}, r"MagCacheConfig\.retention_ratio"),
    ({"num_inference_steps": 0}, r"MagCacheConfig\.num_inference_steps: expected an int >= 1 or None"),
    ({"model": "flux"}, r"MagCacheConfig\.model: unknown model 'flux'; allowed values: \[.*'flux\.1-dev'"),
    ({"mag_ratios": [1.0, 0.0]}, r"MagCacheConfig\.mag_ratios: every ratio must be a finite number > 0"),
    ({"mag_ratios": []}, r"MagCacheConfig\.mag_ratios: expected at least one ratio"),
    ({"mag_ratios": "1.0"}, r"MagCacheConfig\.mag_ratios: expected a sequence of positive numbers"),
    ({"profile": ""}, r"MagCacheConfig\.profile: expected a profile name, a path or None"),
    ({"calibrate": 1}, r"MagCacheConfig\.calibrate: expected True or False"),
    ({"rtol": 1.0}, r"MagCacheConfig\.rtol: expected a number in \(0, 1\) or None"),
    ({"rtol": 0.1, "threshold": 0.1}, r"MagCacheConfig\.rtol: give either rtol"),
    ({"forecast": {"order": -1}}, r"MagCacheConfig\.forecast\.order: expected an int >= 0"),
    ({"mag_ratios": [1.0], "profile": "p"}, r"MagCacheConfig\.mag_ratios: give either mag_ratios or profile"),
    ({"calibrate": True, "mag_ratios": [1.0]}, r"MagCacheConfig\.calibrate: .*do not pass mag_ratios or profile"),
]


@pytest.mark.parametrize(("kwargs", "message"), INVALID, ids=[str(k) for k, _ in INVALID])
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        MagCacheConfig(**kwargs)


def test_every_field_is_validated() -> None:
    tested = {k for kwargs, _ in INVALID for k in kwargs}
    assert tested == set(config_fields(MagCacheConfig))


def test_from_dict_refuses_unknown_keys(base: FluxTransformer2DModel) -> None:
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['thresh'\]; allowed settings: \['threshold'"):
        MagCacheConfig.from_dict({"thresh": 0.1})
    with pytest.raises(ValueError, match="unknown setting"):
        apply_magcache_hook(copy.deepcopy(base), {"K": 2})
    cfg = MagCacheConfig.from_dict({"threshold": 0.1, "mag_ratios": (1.0, 0.9), "num_inference_steps": 5})
    assert cfg.mag_ratios == (1.0, 0.9) and cfg == MagCacheConfig(
        threshold=0.1, mag_ratios=[1.0, 0.9], num_inference_steps=5
    )


def test_schedule_api_and_stacking(base: FluxTransformer2DModel) -> None:
    cfg = MagCacheConfig(threshold=0.24, max_skip_steps=5, retention_ratio=0.1, num_inference_steps=STEPS)
    expected = magcache_schedule(FLUX_AUTHORS, 0.24, 5, 0.1, STEPS)
    assert cfg.schedule(module=base) == expected
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, cfg)
    assert cache.schedule() == expected and cache.schedule(STEPS, "uncond") == expected  # one curve for all
    assert apply_magcache_hook(model, cfg) is cache  # equal config: no-op
    with pytest.raises(ValueError, match="different config"):
        apply_magcache_hook(model, MagCacheConfig(threshold=0.1))
    with pytest.raises(ValueError, match="step-level"):
        ditcache.apply_teacache_hook(model, ditcache.TeaCacheConfig())
    with pytest.raises(ValueError, match="num_inference_steps"):
        MagCacheConfig(model="flux.1-dev").schedule()
    with pytest.raises(ValueError, match="calibration run has no schedule"):
        MagCacheConfig(calibrate=True).schedule(10)
    ditcache.remove_cache(model)
    assert ditcache.get_cache_runtime(model) is None


def test_unknown_step_count_fails_before_any_block_runs(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    # Issue 10 item 12: the step count may still come from a later refresh, so apply accepts it; the first forward
    # then fails before running a block, naming the call that fixes it.
    model = copy.deepcopy(base)
    cache = apply_magcache_hook(model, {"threshold": 0.24})
    with count_block_calls(model) as counts:
        with pytest.raises(ValueError, match=r"ditcache\.refresh\(model, num_inference_steps=\.\.\.\)"):
            denoise(model, 4, inputs=inputs)
    assert sum(counts) == 0
    assert cache.stats() == [] or all(not g.decisions for g in cache.stats())


def test_the_accumulator_is_the_published_rule() -> None:
    from ditcache.caches.magcache_schedule import MagAccumulator

    acc = MagAccumulator()
    assert acc.add(0.9) == pytest.approx(0.1)  # ratio 0.9
    assert acc.add(0.5) == pytest.approx(0.1 + 0.55)  # ratio 0.45
    assert (acc.steps, acc.ratio) == (2, pytest.approx(0.45))
    acc.reset()
    assert (acc.ratio, acc.steps, acc.error) == (1.0, 0, 0.0)
