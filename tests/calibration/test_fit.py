"""``ditcache.calibration.fit``: the least-squares TeaCache fit recovers known polynomials and refuses bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ditcache.calibration import fit_teacache_coefficients
from ditcache.calibration.fit import padded_coefficients


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


def test_padded_coefficients_fill_the_leading_powers() -> None:
    assert padded_coefficients([2.0, 1.0]) == (0.0, 0.0, 0.0, 2.0, 1.0)
    assert padded_coefficients((1, 2, 3, 4, 5)) == (1.0, 2.0, 3.0, 4.0, 5.0)
    with pytest.raises(ValueError, match=r"coefficients: expected at most 5 numbers, got 6"):
        padded_coefficients([1, 2, 3, 4, 5, 6])
