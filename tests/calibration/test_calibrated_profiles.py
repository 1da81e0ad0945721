"""Calibrated profiles in use: by name and by path, per-branch polynomials, the shipped digits-dit profiles, the
lookup order and the errors of ``TeaCacheConfig(profile=...)``."""

from __future__ import annotations

from pathlib import Path

import pytest

import ditcache
from _support.calibration import LABELS, STEPS
from ditcache import TeaCacheConfig, apply_teacache_hook, profiles
from ditcache.bundled import load_digits_dit, sample
from ditcache.caches.teacache import branch_coefficient_role


def _tea_profile(cond: list[float], uncond: list[float], pooled: list[float]) -> profiles.Profile:
    return profiles.Profile(
        kind="teacache",
        model="m",
        data={"coefficients": pooled, "branches": {"cond": {"coefficients": cond}, "uncond": {"coefficients": uncond}}},
    )


def test_profile_by_name_and_path_drives_per_branch_decisions(tmp_path: Path) -> None:
    # cond: a huge constant (never skips); uncond: zero (always skips, except the forced first and last steps)
    profile = _tea_profile(cond=[0, 0, 0, 0, 1e6], uncond=[0, 0, 0, 0, 0], pooled=[0, 0, 0, 0, 1])
    by_path = profiles.save_profile(profile, tmp_path / "split.json")
    profiles.save_profile(profile, tmp_path / "store" / "split.teacache.json")
    model = load_digits_dit()
    for ref in (by_path, str(by_path), "split"):
        config = TeaCacheConfig(rel_l1_thresh=0.5, profile=ref)
        resolved = config.resolve(None)
        assert resolved.coefficients == (0, 0, 0, 0, 1)
        assert resolved.branch_coefficients == {"cond": (0, 0, 0, 0, 1e6), "uncond": (0, 0, 0, 0, 0)}
        assert resolved.source == f"profile {by_path if ref != 'split' else tmp_path / 'store' / 'split.teacache.json'}"
        cache = apply_teacache_hook(model.transformer, config)
        sample(model, LABELS, STEPS, 3.0, seed=0)
        computed = {str(s.branch): s.computed_steps for s in cache.stats()}
        ditcache.remove_cache(model.transformer)
        assert computed == {"cond": list(range(STEPS)), "uncond": [0, STEPS - 1]}


def test_branch_roles_for_coefficients() -> None:
    assert branch_coefficient_role("cond") == "cond"
    assert branch_coefficient_role("Uncond") == "uncond" and branch_coefficient_role("negative_prompt") == "uncond"
    assert branch_coefficient_role("default") is None and branch_coefficient_role("auto:cpu:1:2x3") is None


def test_bundled_profiles_load_by_name() -> None:
    tea = TeaCacheConfig(profile="digits-dit").resolve(None)
    assert "bundled" in tea.source and tea.branch_coefficients == {}  # one polynomial for both branches
    raw = profiles.load_profile("digits-dit", kind="teacache")
    data = raw.data
    assert raw.metadata["num_steps"] == 50 and data["method"] == "search"
    chosen = next(c for c in data["search"]["candidates"] if c["label"] == data["search"]["chosen"])
    assert tea.coefficients == tuple(chosen["coefficients"]) == tuple(data["coefficients"])
    assert chosen["objective"] == max(c["objective"] for c in data["search"]["candidates"])
    constant = next(c for c in data["search"]["candidates"] if c["coefficients"] == [0, 0, 0, 0, 1])
    assert chosen["objective"] >= constant["objective"]
    table = data["thresholds"]
    assert [row["threshold"] for row in table] == sorted(row["threshold"] for row in table)
    assert table[0]["computed_fraction"] > 0.5 and table[-1]["computed_fraction"] < 0.2
    assert set(data["regression"]["branches"]) == {"cond", "uncond"} and data["regression"]["r2"] > 0
    mag = ditcache.MagCacheConfig(profile="digits-dit").resolve()
    assert set(mag.curves) == {"cond", "uncond"} and all(len(c) == 50 for c in mag.curves.values())


def test_a_profile_in_the_store_shadows_the_bundled_one(tmp_path: Path) -> None:
    profiles.save_profile(_tea_profile([0, 0, 0, 0, 2], [0, 0, 0, 0, 3], [0, 0, 0, 0, 4]), "digits-dit.teacache")
    assert TeaCacheConfig(profile="digits-dit").resolve(None).coefficients == (0, 0, 0, 0, 4)


def test_profile_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.profile: give either coefficients or profile"):
        TeaCacheConfig(profile="x", coefficients=[0, 0, 0, 1, 0])
    with pytest.raises(TypeError, match=r"TeaCacheConfig\.profile: expected a profile name, a path or None"):
        TeaCacheConfig(profile=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.profile: .*not a valid profile name"):
        TeaCacheConfig(profile="bad name")
    with pytest.raises(profiles.ProfileNotFoundError, match=r"TeaCacheConfig.profile: no profile named 'nope'"):
        TeaCacheConfig(profile="nope").resolve(None)
    profiles.save_profile(profiles.Profile(kind="magcache", model=None, data={"curves": {"cond": [1.0]}}), "mag")
    with pytest.raises(profiles.ProfileError, match="is a 'magcache' profile, expected a 'teacache' profile"):
        TeaCacheConfig(profile="mag").resolve(None)
    bad = _tea_profile([0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1])
    profiles.save_profile(bad, "short")
    with pytest.raises(profiles.ProfileError, match=r"data.branches.cond.coefficients: expected exactly 5 numbers"):
        TeaCacheConfig(profile="short").resolve(None)
    odd = profiles.Profile(kind="teacache", model=None, data={"coefficients": [0, 0, 0, 0, 1], "branches": {"x": {}}})
    profiles.save_profile(odd, "odd")
    with pytest.raises(profiles.ProfileError, match=r"unknown branch 'x'; allowed: \['cond', 'uncond'\]"):
        TeaCacheConfig(profile="odd").resolve(None)
    profiles.save_profile(profiles.Profile(kind="teacache", model=None, data={}), "empty")
    with pytest.raises(profiles.ProfileError, match=r"data\.coefficients is missing"):
        TeaCacheConfig(profile="empty").resolve(None)
