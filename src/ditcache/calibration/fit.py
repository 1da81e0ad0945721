"""The TeaCache fit: ``y ~ poly(x)`` by least squares, as the TeaCache authors calibrate.

``x`` is the relative L1 change of the indicator (the modulated input of the first block) between consecutive steps
of one CFG branch, ``y`` the same change of the model output; the polynomial (at most 4th order, five coefficients,
highest power first) is what TeaCache evaluates at inference. The procedure follows the TeaCache authors' answers in
ali-vilab/TeaCache issues #2 and #65.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

__all__ = ["MAX_DEGREE", "TeaCacheFit", "check_degree", "fit_teacache_coefficients", "padded_coefficients", "round6"]

MAX_DEGREE = 4
"""TeaCache evaluates a polynomial of at most 4th order (5 coefficients)."""


def check_degree(degree: Any) -> int:
    """``degree`` if it is an int in ``[1, MAX_DEGREE]``; ValueError naming ``degree`` otherwise."""
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree: expected an int in [1, {MAX_DEGREE}], got {degree!r}")
    return degree


def padded_coefficients(coefficients: Sequence[float]) -> tuple[float, float, float, float, float]:
    """The 5 numbers ``[c4, c3, c2, c1, c0]`` TeaCache takes: ``coefficients`` (highest power first) with leading
    zeros for a lower degree."""
    values = tuple(float(c) for c in coefficients)
    if len(values) > MAX_DEGREE + 1:
        raise ValueError(f"coefficients: expected at most {MAX_DEGREE + 1} numbers, got {len(values)}")
    return (0.0,) * (MAX_DEGREE + 1 - len(values)) + values  # type: ignore[return-value]


def round6(value: float) -> float:
    """``value`` to 6 significant digits (what profiles store of raw points)."""
    return float(f"{value:.6g}")


@attrs.frozen
class TeaCacheFit:
    """A polynomial fit ``y ~ poly(x)`` of TeaCache calibration points."""

    coefficients: tuple[float, ...]
    """``degree + 1`` numbers, highest power first (``numpy.poly1d`` order)."""
    r2: float
    """Coefficient of determination on the fitted points (1 = perfect; 0 = no better than the mean of y)."""
    n: int
    """Number of points fitted."""
    x_range: tuple[float, float]
    """Smallest and largest ``x`` fitted: the polynomial is only trustworthy inside."""
    y_range: tuple[float, float]
    """Smallest and largest ``y`` fitted."""
    degree: int
    """Degree of the polynomial."""

    @property
    def teacache_coefficients(self) -> tuple[float, float, float, float, float]:
        """The 5 numbers ``[c4, c3, c2, c1, c0]`` TeaCache takes (leading zeros for a lower degree)."""
        return padded_coefficients(self.coefficients)

    def __call__(self, x: float | np.ndarray[Any, Any]) -> Any:
        """The polynomial at ``x`` (a number or an array)."""
        return np.polyval(np.asarray(self.coefficients, dtype=np.float64), x)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in a profile (``coefficients`` padded to 5 numbers)."""
        return {
            "coefficients": list(self.teacache_coefficients),
            "degree": self.degree,
            "r2": self.r2,
            "n": self.n,
            "x_range": list(self.x_range),
            "y_range": list(self.y_range),
        }


def fit_teacache_coefficients(
    x: Sequence[float] | np.ndarray[Any, Any], y: Sequence[float] | np.ndarray[Any, Any], degree: int = 4
) -> TeaCacheFit:
    """Least-squares fit of ``y ~ poly(x)`` (``numpy.polyfit``), as the TeaCache authors calibrate.

    ``x`` and ``y`` are equally long sequences of finite numbers (the indicator's and the output's relative L1
    changes); ``degree`` is 1-4 (TeaCache evaluates at most a 4th-order polynomial). Needs at least ``degree + 1``
    distinct ``x`` values. Returns the coefficients (highest power first), R^2, the point count and the ranges.
    """
    check_degree(degree)
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if xs.shape != ys.shape:
        raise ValueError(f"y: expected as many values as x ({xs.size}), got {ys.size}")
    for name, values in (("x", xs), ("y", ys)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name}: every value must be finite, got {values[~np.isfinite(values)][:3].tolist()}")
    distinct = np.unique(xs).size
    if distinct < degree + 1:
        raise ValueError(
            f"x: a degree-{degree} fit needs at least {degree + 1} distinct x values, got {distinct} "
            f"({xs.size} points); run more steps or samples"
        )
    coefficients = np.polyfit(xs, ys, degree)
    residual = ys - np.polyval(coefficients, xs)
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((ys - ys.mean()) ** 2))
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:  # constant y: perfect if the fit reproduces it
        r2 = 1.0 if ss_res <= 1e-24 * max(1.0, float(np.sum(ys**2))) else 0.0
    return TeaCacheFit(
        coefficients=tuple(float(c) for c in coefficients),
        r2=float(r2),
        n=int(xs.size),
        x_range=(float(xs.min()), float(xs.max())),
        y_range=(float(ys.min()), float(ys.max())),
        degree=degree,
    )
