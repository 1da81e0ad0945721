"""``ditcache.calibration.run``: a calibration run on the bundled model, its profiles, the refusals, and the
profiles shipped with ditcache that saving under their name would hide."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ditcache
from _support.calibration import LABELS, STEPS
from ditcache import TeaCacheConfig, apply_teacache_hook, profiles
from ditcache.bundled import load_digits_dit, sample
from ditcache.caches.teacache import profile_coefficients
from ditcache.calibration import CalibrationTarget, calibrate
from ditcache.calibration.run import shipped_profiles_hidden


def test_calibration_on_the_bundled_model(digits_target: CalibrationTarget, tmp_path: Path) -> None:
    reference = sample(load_digits_dit(), LABELS, STEPS, 3.0, seed=1)
    outputs: list[torch.Tensor] = []
    target = CalibrationTarget(
        transformer=digits_target.transformer,
        run=lambda n, s: outputs.append(digits_target.run(n, s)),
        name="digits-test",
        metadata={"guidance_scale": 3.0},
    )
    seen: list[tuple[int, int]] = []
    result = calibrate(target, num_steps=STEPS, samples=2, seed=0, on_sample=lambda k, s, sec: seen.append((k, s)))
    assert seen == [(0, 0), (1, 1)]
    assert torch.equal(outputs[1], reference)  # calibration never skips: outputs are the uncached ones
    assert ditcache.get_cache_runtime(target.transformer) is None  # removed afterwards

    # TeaCache: one point per step after the first, per branch and generation
    assert set(result.fits) == {"pooled", "cond", "uncond"}
    assert result.fits["cond"].n == result.fits["uncond"].n == 2 * (STEPS - 1)
    assert result.fits["pooled"].n == 4 * (STEPS - 1)
    data = result.teacache.data
    assert result.teacache.kind == "teacache" and result.teacache.model == "digits-test"
    for role in ("cond", "uncond"):
        points = data["points"][role]
        assert points["step"] == [*range(1, STEPS)] * 2
        assert len(points["x"]) == len(points["y_output"]) == len(points["y_blocks"]) == 2 * (STEPS - 1)
        assert all(v > 0 for v in points["x"] + points["y_output"])
        assert data["branches"][role]["n"] == 2 * (STEPS - 1)
    assert data["points"]["cond"]["x"] != data["points"]["uncond"]["x"]
    lo, hi = data["x_range"]
    assert lo == pytest.approx(min(data["points"]["cond"]["x"] + data["points"]["uncond"]["x"]), rel=1e-5)
    assert hi == pytest.approx(max(data["points"]["cond"]["x"] + data["points"]["uncond"]["x"]), rel=1e-5)
    assert data["num_steps"] == STEPS and data["fit_on"] == "output" and data["indicator"] is None
    assert data["method"] == "regression" and result.search is None
    assert result.teacache.metadata["guidance_scale"] == 3.0 and result.teacache.metadata["seeds"] == [0, 1]
    assert 0.0 <= data["r2"] <= 1.0
    pooled, branches, indicator = profile_coefficients(result.teacache)
    assert pooled == tuple(data["coefficients"]) and set(branches) == {"cond", "uncond"} and indicator is None

    # MagCache: per-branch curves averaged over the samples, padding 1.0 first
    assert result.magcache is not None and result.magcache.kind == "magcache"
    curves = result.magcache.data["curves"]
    assert set(curves) == {"cond", "uncond"} and all(len(c) == STEPS and c[0] == 1.0 for c in curves.values())
    assert result.magcache.metadata["averaged_over_samples"] == 2

    # Saved under <dir>/<name>.<kind>.json, and loadable by both caches by path and by name
    paths = result.save()
    store = tmp_path / "store"
    assert paths == {"teacache": store / "digits-test.teacache.json", "magcache": store / "digits-test.magcache.json"}
    resolved = TeaCacheConfig(profile="digits-test").resolve(None)
    assert resolved.coefficients == pooled and resolved.branch_coefficients == branches
    assert TeaCacheConfig(profile=paths["teacache"]).resolve(None).coefficients == pooled
    mag = ditcache.MagCacheConfig(profile="digits-test").resolve()
    assert mag.curves == {role: tuple(c) for role, c in curves.items()}


def test_calibrate_refuses_a_cached_model_and_silent_runs(digits_target: CalibrationTarget) -> None:
    cache = apply_teacache_hook(digits_target.transformer, TeaCacheConfig(model="flux.1-dev"))
    try:
        with pytest.raises(ValueError, match=r"target.transformer: caches \['teacache'\] are applied"):
            calibrate(digits_target, num_steps=STEPS, samples=1)
    finally:
        ditcache.remove_cache(digits_target.transformer)
    assert cache.stats() == []
    idle = CalibrationTarget(transformer=digits_target.transformer, run=lambda n, s: None)
    with pytest.raises(ValueError, match=r"target\.run: the transformer was never called"):
        calibrate(idle, num_steps=STEPS, samples=1)
    assert ditcache.get_cache_runtime(digits_target.transformer) is None
    with pytest.raises(ValueError, match="num_steps: expected an int >= 2"):
        calibrate(digits_target, num_steps=1)


def test_shipped_profiles_a_save_would_hide(digits_target: CalibrationTarget, tmp_path: Path) -> None:
    shipped = profiles.bundled_profile_dir()
    both = {"teacache": shipped / "digits-dit.teacache.json", "magcache": shipped / "digits-dit.magcache.json"}
    assert shipped_profiles_hidden("digits-dit") == both  # the profile directory, looked up before the shipped ones
    assert shipped_profiles_hidden("digits-dit", tmp_path / "store") == both
    assert shipped_profiles_hidden("digits-dit", tmp_path / "elsewhere") == {}
    assert shipped_profiles_hidden("my-model") == {}
    result = calibrate(digits_target, num_steps=4, samples=1, magcache=False, compare=False)
    assert result.name == "digits-dit" and set(result.profiles()) == {"teacache"}
    assert result.shadowed() == {"teacache": both["teacache"]}
    assert result.shadowed(tmp_path / "elsewhere") == {}
