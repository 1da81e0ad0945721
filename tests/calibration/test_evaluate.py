"""``ditcache.calibration.evaluate``: the TeaCache trade-off against the uncached outputs."""

from __future__ import annotations

import pytest

import ditcache
from _support.calibration import STEPS
from ditcache import TeaCacheConfig
from ditcache.calibration import CalibrationTarget, evaluate_teacache


def test_evaluate_teacache_against_uncached(digits_target: CalibrationTarget) -> None:
    never = TeaCacheConfig(rel_l1_thresh=1e-9, coefficients=[0, 0, 0, 0, 1])
    often = TeaCacheConfig(rel_l1_thresh=1e9, coefficients=[0, 0, 0, 0, 1])
    exact, coarse = evaluate_teacache(digits_target, [("never", never), ("often", often)], num_steps=STEPS, seeds=[3])
    assert (exact.label, exact.computed_fraction, exact.psnr) == ("never", 1.0, 120.0)
    assert coarse.computed_fraction == pytest.approx(2 / STEPS)  # first and last step of each branch
    assert 0 < coarse.psnr_min <= coarse.psnr < 120
    assert ditcache.get_cache_runtime(digits_target.transformer) is None
