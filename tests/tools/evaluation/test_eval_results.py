"""``ditcache.tools.evaluation.results``: the quality metrics and the ideal speed-up follow their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from ditcache.core.metrics import psnr
from ditcache.tools.evaluation import (
    BranchDecisions,
    Method,
    RunResult,
    max_abs_error,
)


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
