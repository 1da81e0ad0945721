"""``ditcache.calibration.search``: the direct search picks the best candidate of its family, measured for real,
and writes its record and threshold table into the profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ditcache
from ditcache import TeaCacheConfig
from ditcache.calibration import (
    CalibrationTarget,
    SearchSettings,
    calibrate,
    evaluate_teacache,
    search_teacache_coefficients,
)

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
