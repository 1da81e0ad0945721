"""``ditcache.calibration``: the TeaCache fit, calibration runs, profiles loaded by TeaCacheConfig, and the CLI."""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ditcache
from ditcache import TeaCacheConfig, apply_teacache_hook, profiles
from ditcache.bundled import load_digits_dit, sample
from ditcache.caches.teacache import branch_coefficient_role, profile_coefficients
from ditcache.calibration import (
    CalibrationError,
    CalibrationTarget,
    SearchSettings,
    TeaCacheCalibrator,
    calibrate,
    digits_dit_target,
    evaluate_teacache,
    fit_teacache_coefficients,
    load_target,
    search_teacache_coefficients,
)
from ditcache.tools.cli import main

LABELS = [1, 7]
STEPS = 6


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A private profile directory, wide rich tables, and the ``ditcache`` logger restored after ``main``."""
    monkeypatch.setenv(profiles.PROFILE_DIR_ENV, str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "200")
    logger = logging.getLogger("ditcache")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(scope="module")
def digits_target() -> CalibrationTarget:
    return digits_dit_target(guidance_scale=3.0, labels=LABELS)


# ------------------------------------------------------------------------------------------------ 1. the fit
def test_fit_recovers_a_known_polynomial() -> None:
    rng = np.random.default_rng(0)
    true = np.array([120.0, -40.0, 6.0, 0.8, 0.01])  # highest power first
    x = rng.uniform(0.02, 0.3, size=200)
    fit = fit_teacache_coefficients(x, np.polyval(true, x))
    np.testing.assert_allclose(fit.coefficients, true, rtol=1e-6, atol=1e-8)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n == 200 and fit.degree == 4
    assert fit.x_range == (x.min(), x.max())
    assert fit(0.1) == pytest.approx(np.polyval(true, 0.1))


def test_fit_with_noise_reports_r2_and_pads_lower_degrees() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, size=500)
    y = 2.0 * x + 0.5 + rng.normal(0.0, 0.2, size=x.size)
    fit = fit_teacache_coefficients(x, y, degree=1)
    assert fit.coefficients == pytest.approx((2.0, 0.5), abs=0.15)  # about 5 standard errors
    assert 0.8 < fit.r2 < 0.95  # explained variance 1/3 over 1/3 + 0.04
    assert fit.teacache_coefficients == (0.0, 0.0, 0.0, *fit.coefficients)
    assert fit.as_dict()["coefficients"] == list(fit.teacache_coefficients)
    # A constant y fitted exactly is a perfect fit (no division by a zero variance)
    assert fit_teacache_coefficients([0.1, 0.2, 0.3], [0.5, 0.5, 0.5], degree=1).r2 == 1.0


@pytest.mark.parametrize(
    ("x", "y", "degree", "match"),
    [
        ([0.1, 0.2, 0.3], [1, 2, 3], 5, r"degree: expected an int in \[1, 4\]"),
        ([0.1, 0.2, 0.3], [1, 2, 3], True, r"degree"),
        ([0.1, 0.2, 0.3], [1, 2], 1, r"y: expected as many values as x \(3\), got 2"),
        ([0.1, float("inf"), 0.3], [1, 2, 3], 1, r"x: every value must be finite"),
        ([0.1, 0.2, 0.3], [1, float("nan"), 3], 1, r"y: every value must be finite"),
        ([0.1, 0.1, 0.2, 0.2], [1, 2, 3, 4], 4, r"x: a degree-4 fit needs at least 5 distinct x values, got 2"),
    ],
)
def test_fit_refuses_bad_input(x: list[float], y: list[float], degree: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_teacache_coefficients(x, y, degree)


# ------------------------------------------------------------------------------------------------ 2. calibration
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


def test_calibrator_records_auto_branches_by_order_and_fits_blocks() -> None:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**_TINY_FLUX).eval()
    calibrator = ditcache.apply_cache(model, TeaCacheCalibrator(fit_on="blocks"))
    ditcache.refresh(model, 6)
    _tiny_loop(model, 6, seed=0)  # cond then uncond calls, branches not named
    assert calibrator.roles() == ["cond", "uncond"]
    assert [s.role for s in calibrator.series] == ["cond", "uncond"]
    x, y = calibrator.points()
    assert x.size == y.size == 10
    assert set(calibrator.fit()) == {"pooled", "cond", "uncond"}
    profile = calibrator.profile(model="tiny")
    assert profile.data["fit_on"] == "blocks" and profile.data["generations"] == 2
    assert profile.metadata["module_class"] == "FluxTransformer2DModel"
    _, y_output = calibrator.points(fit_on="output")
    assert not np.array_equal(y, y_output)
    calibrator.clear()
    with pytest.raises(ValueError, match="no calibration points"):
        calibrator.fit()
    with pytest.raises(ValueError, match=r"fit_on: expected one of \['output', 'blocks'\]"):
        TeaCacheCalibrator(fit_on="velocity")


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


# ------------------------------------------------------------------------------------------------ 3. using profiles
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


# ------------------------------------------------------------------------------------------------ 4. evaluation
def test_evaluate_teacache_against_uncached(digits_target: CalibrationTarget) -> None:
    never = TeaCacheConfig(rel_l1_thresh=1e-9, coefficients=[0, 0, 0, 0, 1])
    often = TeaCacheConfig(rel_l1_thresh=1e9, coefficients=[0, 0, 0, 0, 1])
    exact, coarse = evaluate_teacache(digits_target, [("never", never), ("often", often)], num_steps=STEPS, seeds=[3])
    assert (exact.label, exact.computed_fraction, exact.psnr) == ("never", 1.0, 120.0)
    assert coarse.computed_fraction == pytest.approx(2 / STEPS)  # first and last step of each branch
    assert 0 < coarse.psnr_min <= coarse.psnr < 120
    assert ditcache.get_cache_runtime(digits_target.transformer) is None


# ------------------------------------------------------------------------------------------------ 4b. direct search
SEARCH_STEPS = 12


def _family_member(coefficients: tuple[float, ...]) -> bool:
    """``1 + c1 x + c2 x^2`` (the search's family, normalised to 1 at x = 0)."""
    return coefficients[:2] == (0.0, 0.0) and coefficients[4] == 1.0


def _objective(runs: list[tuple[float, float]], fractions: tuple[float, ...]) -> float:
    """Mean PSNR at ``fractions``, linear between the (fraction, PSNR) runs, computed independently."""
    xs = sorted({f for f, _ in runs})
    ys = [float(np.mean([p for f, p in runs if f == x])) for x in xs]
    return float(np.mean([np.interp(f, xs, ys) for f in fractions]))


def test_search_picks_the_best_candidate_of_its_family(digits_target: CalibrationTarget, tmp_path: Path) -> None:
    settings = SearchSettings(budget=4, samples=1, fractions=(0.3, 0.5))
    seen: list[tuple[int, int, str]] = []
    result = calibrate(
        digits_target,
        num_steps=SEARCH_STEPS,
        samples=2,
        method="search",
        search=settings,
        on_candidate=lambda i, n, c: seen.append((i, n, c.label)),
    )
    found = result.search
    assert found is not None and found.seeds == (0,) and found.num_steps == SEARCH_STEPS
    assert [(i, n) for i, n, _ in seen] == [(i, 4) for i in range(1, len(found.candidates) + 1)]
    assert 3 <= len(found.candidates) <= 4  # the budget bounds it; a candidate negative over the x range is skipped
    labels = [c.label for c in found.candidates]
    assert labels[:2] == ["constant 1", "regression"] and labels == [label for _, _, label in seen]
    regression = found.candidates[1]
    assert regression.coefficients == result.fits["pooled"].teacache_coefficients
    for c in found.candidates:  # every candidate comes from the family (or is the regression fit)
        assert c is regression or _family_member(c.coefficients), c
    assert found.chosen in found.candidates and found.coefficients == found.chosen.coefficients
    assert found.chosen.objective == max(c.objective for c in found.candidates)

    # The constant candidate, re-measured independently with TeaCache on the calibration seed
    constant = found.candidates[0]
    assert constant.coefficients == (0, 0, 0, 0, 1)
    configs = [("c", TeaCacheConfig(rel_l1_thresh=p.threshold, coefficients=(0, 0, 0, 0, 1))) for p in constant.runs]
    again = evaluate_teacache(digits_target, configs, num_steps=SEARCH_STEPS, seeds=[0])
    assert [(p.computed_fraction, p.psnr) for p in again] == [(p.computed_fraction, p.psnr) for p in constant.runs]
    measured = [(p.computed_fraction, p.psnr) for p in again]
    assert min(f for f, _ in measured) <= 0.3 and max(f for f, _ in measured) >= 0.5  # the runs bracket the targets
    assert found.chosen.objective >= _objective(measured, settings.fractions) - 1e-9
    assert constant.objective == pytest.approx(_objective(measured, settings.fractions))

    # The profile: the chosen polynomial for every branch, how it was chosen, a threshold table
    data = result.teacache.data
    assert data["method"] == "search" and "branches" not in data
    assert tuple(data["coefficients"]) == found.coefficients
    assert data["search"]["chosen"] == found.chosen.label and len(data["search"]["candidates"]) == len(labels)
    assert data["search"]["fractions"] == [0.3, 0.5] and data["search"]["budget"] == 4
    assert data["regression"]["coefficients"] == list(result.fits["pooled"].teacache_coefficients)
    assert set(data["regression"]["branches"]) == {"cond", "uncond"}
    table = data["thresholds"]
    assert len(table) >= 3 and [r["threshold"] for r in table] == sorted(r["threshold"] for r in table)
    assert table[0]["computed_fraction"] > table[-1]["computed_fraction"]
    assert found.threshold_for(table[-1]["computed_fraction"]) == table[-1]["threshold"]
    path = result.save(tmp_path)["teacache"]
    resolved = TeaCacheConfig(profile=path, rel_l1_thresh=table[1]["threshold"]).resolve(None)
    assert resolved.coefficients == found.coefficients and resolved.branch_coefficients == {}
    # a row of the table is what TeaCache does with the profile on that seed
    (row,) = evaluate_teacache(
        digits_target,
        [("p", TeaCacheConfig(profile=path, rel_l1_thresh=table[1]["threshold"]))],
        num_steps=SEARCH_STEPS,
        seeds=[0],
    )
    assert (row.computed_fraction, row.psnr) == (table[1]["computed_fraction"], table[1]["psnr"])


def test_search_needs_output_tensors_and_valid_settings(digits_target: CalibrationTarget) -> None:
    silent = CalibrationTarget(transformer=digits_target.transformer, run=lambda n, s: None)
    with pytest.raises(TypeError, match=r"target\.run: must return the output tensor.*method='search'"):
        calibrate(silent, num_steps=4, samples=1, method="search", search=SearchSettings(samples=1))
    assert ditcache.get_cache_runtime(digits_target.transformer) is None
    with pytest.raises(ValueError, match=r"method: expected one of \['regression', 'search'\], got 'grid'"):
        calibrate(digits_target, num_steps=4, method="grid")
    with pytest.raises(ValueError, match=r"search: samples=3 exceeds the calibration samples \(2\)"):
        calibrate(digits_target, num_steps=4, samples=2, method="search", search=SearchSettings(samples=3))
    with pytest.raises(ValueError, match=r"SearchSettings\.budget: expected an int >= 1, got 0"):
        SearchSettings(budget=0)
    with pytest.raises(ValueError, match=r"SearchSettings\.fractions: every computed fraction must be in \(0, 1\)"):
        SearchSettings(fractions=(0.2, 1.0))
    with pytest.raises(ValueError, match=r"SearchSettings\.table_fractions: expected at least one"):
        SearchSettings(table_fractions=())
    with pytest.raises(TypeError, match=r"SearchSettings\.fractions: expected a sequence of numbers"):
        SearchSettings(fractions="0.2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x_series: expected recorded indicator changes, got none"):
        search_teacache_coefficients(digits_target, [], num_steps=4, seeds=[0])
    with pytest.raises(ValueError, match=r"references: expected one output per seed \(2\), got 1"):
        search_teacache_coefficients(
            digits_target, [[0.1, 0.2, 0.1]], num_steps=4, seeds=[0, 1], references=[torch.zeros(1)]
        )


# ------------------------------------------------------------------------------------------------ 5. the CLI
_TINY_FLUX: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 16,
    "pooled_projection_dim": 16,
    "axes_dims_rope": (4, 6, 6),
}


def _tiny_loop(model: Any, steps: int, seed: int) -> torch.Tensor:
    """A 4x4-token flow-matching Euler loop with CFG 2: cond then uncond calls, each with its own prompt."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 4, generator=gen)
    prompts = [torch.randn(1, 3, 16, generator=gen) for _ in range(2)]
    pooled = [torch.randn(1, 16, generator=gen) for _ in range(2)]
    ids = torch.zeros(16, 3)
    ids[:, 1], ids[:, 2] = torch.arange(16) // 4, torch.arange(16) % 4
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    with torch.no_grad():
        for i in range(steps):
            v = [
                model(
                    hidden_states=latents,
                    encoder_hidden_states=p,
                    pooled_projections=q,
                    timestep=sigmas[i].expand(1),
                    img_ids=ids,
                    txt_ids=torch.zeros(3, 3),
                    return_dict=False,
                )[0]
                for p, q in zip(prompts, pooled)
            ]
            latents = latents + (sigmas[i + 1] - sigmas[i]) * (v[1] + 2.0 * (v[0] - v[1]))
    return latents


USER_FACTORIES = """
def make(seed=0, guidance_scale=2.0):
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**_TINY_FLUX).eval()
    return CalibrationTarget(transformer=model, run=lambda n, s: _tiny_loop(model, n, s), name="tiny-user")


def duck():
    target = make()
    return SimpleNamespace(transformer=target.transformer, run=target.run)


def silent():
    target = make()
    return CalibrationTarget(transformer=target.transformer, run=lambda n, s: [target.run(n, s)], name="tiny-user")


def no_extractor():
    return CalibrationTarget(transformer=torch.nn.Linear(2, 2), run=lambda n, s: None)


def not_a_target():
    return 42


def strict(seed=0):
    return make(seed)


NOT_CALLABLE = 3
"""


def _user_module_source() -> str:
    """A self-contained user module: the tiny Flux, its loop, and factories of every kind."""
    header = (
        "from __future__ import annotations\n"
        "from types import SimpleNamespace\n"
        "from typing import Any\n"
        "import torch\n"
        "from diffusers import FluxTransformer2DModel\n"
        "from ditcache.calibration import CalibrationTarget\n\n"
        f"_TINY_FLUX = {_TINY_FLUX!r}\n\n"
    )
    return header + inspect.getsource(_tiny_loop) + USER_FACTORIES


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "calib_models.py").write_text(_user_module_source())
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("calib_models", None)
    return "calib_models"


def test_cli_calibrates_a_user_factory(user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profiles"
    argv = ["calibrate", "--model", f"{user_module}:make", "--config", '{"seed": 1}', "--cfg", "2.5"]
    assert main([*argv, "--steps", "5", "--samples", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tiny-user" in text and "TeaCache fit" in text and "MagCache ratios" in text
    for role in ("pooled", "cond", "uncond"):
        row = next(line for line in text.splitlines() if re.match(rf"^│ {role} +│", line))
        assert re.search(r"│ 8 +│|│ 16 +│", row)  # points: 2 samples x 4 pairs per branch, 16 pooled
    tea = out / "tiny-user.teacache.json"
    assert tea.is_file() and (out / "tiny-user.magcache.json").is_file()
    stored = json.loads(tea.read_text())
    assert stored["model"] == "tiny-user" and stored["data"]["branches"]["cond"]["n"] == 8
    assert TeaCacheConfig(profile=tea).resolve(None).coefficients == tuple(stored["data"]["coefficients"])
    # a duck-typed object works too, and --name renames the profile
    assert main(["calibrate", "--model", f"{user_module}:duck", "--steps", "4", "--samples", "1"]) == 0
    assert main(["calibrate", "--model", f"{user_module}:duck", "--steps", "4", "--name", "renamed"]) == 0
    capsys.readouterr()
    assert {p.name for p in (tmp_path / "store").iterdir()} >= {
        "FluxTransformer2DModel.teacache.json",
        "renamed.teacache.json",
        "renamed.magcache.json",
    }
    assert TeaCacheConfig(profile="renamed").resolve(None).source.endswith("renamed.teacache.json")


def test_cli_bundled_model_with_evaluation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["calibrate", "--config", json.dumps({"labels": [3]}), "--steps", "5", "--samples", "1"]
    assert main([*argv, "--evaluate", "0.1,1e9", "--eval-samples", "1", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "digits-dit" in text and "held out" in text
    rows = [line for line in text.splitlines() if "borrowed flux.1-dev" in line or "│ calibrated" in line]
    assert len(rows) == 4
    assert (tmp_path / "o" / "digits-dit.teacache.json").is_file()


def test_cli_search_method(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["calibrate", "--config", json.dumps({"labels": [3]}), "--steps", "10", "--samples", "2", "--cfg", "3"]
    search = ["--method", "search", "--search-budget", "2", "--search-samples", "1", "--search-fractions", "0.3,0.5"]
    assert main([*argv, *search, "--evaluate", "0.5", "--eval-samples", "1", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "TeaCache coefficient search" in text and "Threshold table" in text
    assert re.search(r"candidate 1/2 constant 1: PSNR [\d.]+, [\d.]+ dB at computed fractions 0\.3, 0\.5", text)
    assert "candidate 2/2 regression" in text
    stored = json.loads((tmp_path / "o" / "digits-dit.teacache.json").read_text())
    data = stored["data"]
    assert data["method"] == "search" and data["search"]["budget"] == 2 and data["search"]["seeds"] == [0]
    assert [c["label"] for c in data["search"]["candidates"]] == ["constant 1", "regression"]
    assert f"chosen: {data['search']['chosen']}" in text
    suggested = re.search(r"rel_l1_thresh=([\d.e+-]+)\)", text)
    assert suggested and float(suggested.group(1)) in {row["threshold"] for row in data["thresholds"]}
    # --evaluate: the borrowed preset at the given threshold, the profile at its own table's thresholds
    rows = [line for line in text.splitlines() if "│ calibrated" in line]
    assert (
        len(rows) == len(data["thresholds"]) and sum("borrowed flux.1-dev" in line for line in text.splitlines()) == 1
    )


@pytest.mark.parametrize(
    ("args", "argument", "message"),
    [
        (["--model", "no_colon"], "--model", "expected an import path 'package.module:factory'"),
        (["--model", "no_such_module_xyz:f"], "--model", "cannot import module 'no_such_module_xyz'"),
        (["--model", "{mod}:missing"], "--model", "has no attribute 'missing'"),
        (["--model", "{mod}:NOT_CALLABLE"], "--model", "is not callable"),
        (
            ["--model", "{mod}:not_a_target"],
            "--model",
            "returned a int; expected a ditcache.calibration.CalibrationTarget",
        ),
        (["--model", "{mod}:no_extractor"], "--model", "no extractor is registered for Linear"),
        (["--model", "{mod}:strict", "--config", '{"colour": 1}'], "--config", "does not accept"),
        (["--model", "{mod}:strict", "--cfg", "2"], "--cfg", "does not accept guidance_scale"),
        (["--config", "{not json"], "--config", "is not valid JSON"),
        (["--config", "[1, 2]"], "--config", "expected a JSON object of keyword arguments for the factory, got list"),
        (["--config", "@{tmp}/missing.json"], "--config", "cannot read"),
        (["--config", '{"guidance_scale": 2}', "--cfg", "3"], "--cfg", "conflicts with guidance_scale=2"),
        (["--out", "{tmp}/file.txt/sub"], "--out", "cannot write to"),
        (["--name", "bad name"], "--name", "not a valid profile name"),
        (["--name", "x/y"], "--name", "expected a profile name, not a path"),
        (["--method", "search", "--search-samples", "2"], "--search-samples", "2 exceeds --samples (1)"),
        (
            ["--method", "search", "--search-samples", "1", "--model", "{mod}:silent"],
            "--method",
            "target.run: must return the output tensor",
        ),
    ],
)
def test_cli_errors_exit_2_naming_the_argument(
    args: list[str],
    argument: str,
    message: str,
    user_module: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{mod}", user_module).replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["calibrate", *argv, "--steps", "3", "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert "usage: ditcache calibrate" in err
    assert f"error: {argument}: " in err and message in err, err
    assert not any((tmp_path / "store").glob("*.json"))


def test_cli_evaluate_needs_an_output_tensor(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["calibrate", "--model", f"{user_module}:silent", "--steps", "5", "--samples", "1", "--evaluate", "0.1"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "error: --evaluate: target.run: must return the output tensor" in capsys.readouterr().err
    assert (tmp_path / "o" / "tiny-user.teacache.json").is_file()  # the profiles were written first


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "1"],
        ["--samples", "0"],
        ["--cfg", "-1"],
        ["--evaluate", "0.1,x"],
        ["--method", "grid"],
        ["--search-budget", "0"],
        ["--search-fractions", "0.2,1"],
    ],
)
def test_cli_bad_numbers_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", *args]) == 2
    assert args[0] in capsys.readouterr().err


def test_load_target_errors_name_the_argument() -> None:
    with pytest.raises(CalibrationError, match=r"^model: ") as info:
        load_target("nope")
    assert info.value.argument == "model"
    with pytest.raises(ValueError, match=r"CalibrationTarget\.name: expected a profile name"):
        CalibrationTarget(transformer=torch.nn.Linear(1, 1), run=print, name="a/b")
    with pytest.raises(TypeError, match=r"CalibrationTarget\.run: expected a callable"):
        CalibrationTarget(transformer=torch.nn.Linear(1, 1), run=3)  # type: ignore[arg-type]
