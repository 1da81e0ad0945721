"""``ditcache.calibration.compare``: a fitted profile against the preset its model would borrow, measured the way
the search judges candidates; the runs are what TeaCache does with each on the same seeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

import ditcache
from ditcache import TeaCacheConfig, profiles
from ditcache.calibration import (
    BorrowedComparison,
    CalibrationTarget,
    SearchSettings,
    TeaCacheCalibrator,
    calibrate,
    compare_with_borrowed,
    digits_dit_target,
    evaluate_teacache,
)
from ditcache.calibration.compare import borrowed_preset
from ditcache.calibration.evaluate import reference_output
from ditcache.presets.teacache import TEACACHE_PRESETS

STEPS = 12
FRACTIONS = (0.3, 0.5)


@pytest.fixture(scope="module")
def one_digit() -> CalibrationTarget:
    return digits_dit_target(guidance_scale=3.0, labels=[3])


def _recorded(target: CalibrationTarget, seed: int = 0) -> tuple[TeaCacheCalibrator, Any]:
    """The calibrator after one uncached generation, and that generation's output."""
    recorder = ditcache.apply_cache(target.transformer, TeaCacheCalibrator())
    try:
        ditcache.refresh(target.transformer, STEPS)
        output = reference_output(target, STEPS, seed)
    finally:
        ditcache.remove_cache(target.transformer)
    return recorder, output


def _profile(coefficients: list[float]) -> profiles.Profile:
    return profiles.Profile(kind="teacache", model="m", data={"coefficients": coefficients})


def test_the_runs_are_what_teacache_does_with_each(one_digit: CalibrationTarget, tmp_path: Path) -> None:
    recorder, output = _recorded(one_digit)
    fitted = recorder.profile(model="fitted")
    series = [(s.role, s.x) for s in recorder.series]
    found = compare_with_borrowed(
        one_digit,
        fitted,
        series,
        preset="flux.1-dev",
        num_steps=STEPS,
        seeds=[0],
        references=[output],
        fractions=FRACTIONS,
    )
    assert found.preset == "flux.1-dev" and found.fractions == FRACTIONS and found.seeds == (0,)
    assert found.borrowed.coefficients == TEACACHE_PRESETS["flux.1-dev"].coefficients
    assert found.fitted.coefficients == tuple(fitted.data["coefficients"])
    assert found.margin == found.fitted.objective - found.borrowed.objective
    assert found.worse == (found.margin < 0)
    for side in (found.fitted, found.borrowed):  # the runs bracket the targets
        measured = [p.computed_fraction for p in side.runs]
        assert min(measured) <= min(FRACTIONS) and max(measured) >= max(FRACTIONS), side
    # re-measured independently: the preset by key, the profile (with its per-branch polynomials) from a file
    path = profiles.save_profile(fitted, tmp_path / "fitted.json")
    configs = [("b", TeaCacheConfig(rel_l1_thresh=p.threshold, model="flux.1-dev")) for p in found.borrowed.runs]
    configs += [("f", TeaCacheConfig(rel_l1_thresh=p.threshold, profile=path)) for p in found.fitted.runs]
    again = evaluate_teacache(one_digit, configs, num_steps=STEPS, seeds=[0])
    runs = [*found.borrowed.runs, *found.fitted.runs]
    assert [(p.computed_fraction, p.psnr) for p in again] == [(p.computed_fraction, p.psnr) for p in runs]
    data = found.as_dict()
    assert data["worse"] == found.worse and data["margin_db"] == found.margin
    assert len(data["fitted"]["runs"]) == len(found.fitted.runs)


def test_a_profile_with_the_preset_polynomial_is_not_worse_and_a_constant_one_is(one_digit: CalibrationTarget) -> None:
    recorder, output = _recorded(one_digit)
    series = [(s.role, s.x) for s in recorder.series]

    def compare(coefficients: list[float]) -> BorrowedComparison:
        return compare_with_borrowed(
            one_digit,
            _profile(coefficients),
            series,
            preset="flux.1-dev",
            num_steps=STEPS,
            seeds=[0],
            references=[output],
            fractions=FRACTIONS,
        )

    same = compare(list(TEACACHE_PRESETS["flux.1-dev"].coefficients))
    assert same.fitted.runs == tuple(attrs.evolve(p, label="fitted") for p in same.borrowed.runs)
    assert same.margin == 0.0 and not same.worse
    # A polynomial that is huge at small changes and tiny at large ones computes the wrong steps
    upside_down = compare([0.0, 0.0, 0.0, -400.0, 60.0])
    assert upside_down.worse and upside_down.margin < -1.0


def test_comparison_errors_name_the_argument(one_digit: CalibrationTarget) -> None:
    recorder, output = _recorded(one_digit)
    series = [(s.role, s.x) for s in recorder.series]
    kwargs: dict[str, Any] = {"num_steps": STEPS, "seeds": [0], "references": [output], "fractions": FRACTIONS}
    fitted = recorder.profile()
    with pytest.raises(ValueError, match=r"preset: expected one of \["):
        compare_with_borrowed(one_digit, fitted, series, preset="nope", **kwargs)
    with pytest.raises(ValueError, match=r"series: expected recorded indicator changes, got none"):
        compare_with_borrowed(one_digit, fitted, [("cond", [])], preset="flux.1-dev", **kwargs)
    with pytest.raises(ValueError, match=r"the profile's polynomial is not positive anywhere"):
        compare_with_borrowed(one_digit, _profile([0, 0, 0, 0, -1.0]), series, preset="flux.1-dev", **kwargs)
    with pytest.raises(ValueError, match=r"fractions: expected computed fractions in \(0, 1\)"):
        compare_with_borrowed(one_digit, fitted, series, preset="flux.1-dev", **{**kwargs, "fractions": (0.3, 1.0)})
    magcache = profiles.Profile(kind="magcache", model=None, data={"curves": {"cond": [1.0]}})
    with pytest.raises(TypeError, match=r"profile: expected a 'teacache' Profile, got 'magcache'"):
        compare_with_borrowed(one_digit, magcache, series, preset="flux.1-dev", **kwargs)
    with pytest.raises(ValueError, match=r"references: expected one output per seed \(2\), got 1"):
        compare_with_borrowed(one_digit, fitted, series, preset="flux.1-dev", **{**kwargs, "seeds": [0, 1]})


def test_borrowed_preset_needs_a_family_preset_on_the_same_indicator(one_digit: CalibrationTarget) -> None:
    assert borrowed_preset(one_digit.transformer, None) == ("flux.1-dev", "")
    key, why = borrowed_preset(one_digit.transformer, "img_in")
    assert key is None and "the points were recorded on img_in" in why
    key, why = borrowed_preset(torch.nn.Linear(2, 2), None)
    assert key is None and "no TeaCache coefficients are known for Linear" in why


def test_calibrate_warns_when_the_regression_fit_caches_worse(
    one_digit: CalibrationTarget, ditcache_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    settings = SearchSettings(samples=1, fractions=FRACTIONS)
    result = calibrate(one_digit, num_steps=STEPS, samples=1, magcache=False, search=settings)
    found = result.comparison
    assert found is not None and found.preset == "flux.1-dev" and found.seeds == (0,)
    # On this model the least-squares polynomial caches worse than FLUX.1-dev's (docs/calibration.md)
    assert found.worse
    (event,) = [e for e in ditcache_logs() if e["event"] == "calibrate.fit_worse_than_borrowed"]
    assert event["level"] == "warning" and event["preset"] == "flux.1-dev"
    assert event["fitted_psnr_db"] == round(found.fitted.objective, 2)
    assert event["borrowed_psnr_db"] == round(found.borrowed.objective, 2)
    assert result.teacache.data["borrowed_comparison"] == found.as_dict()
    assert ditcache.get_cache_runtime(one_digit.transformer) is None
    # compare=False, the search method, or no output tensor: no comparison
    assert calibrate(one_digit, num_steps=STEPS, samples=1, magcache=False, compare=False).comparison is None
    silent = CalibrationTarget(transformer=one_digit.transformer, run=lambda n, s: [one_digit.run(n, s)])
    assert calibrate(silent, num_steps=STEPS, samples=1, magcache=False).comparison is None
    skipped = [e for e in ditcache_logs() if e["event"] == "calibrate.comparison_skipped"]
    assert skipped[-1]["reason"] == "target.run returned no output tensor"
    assert len([e for e in ditcache_logs() if e["event"] == "calibrate.fit_worse_than_borrowed"]) == 1
