"""A fitted TeaCache profile against the preset coefficients its model would otherwise borrow.

The least-squares fit (``calibrate(method="regression")``) explains the output's change from the indicator's as
well as a polynomial can, but that is not the same as caching well: on the bundled digits model the fit gives a
worse quality/speed trade-off than FLUX.1-dev's borrowed coefficients (``docs/calibration.md``). A profile that
would replace the borrowed coefficients is therefore measured against them the way the search judges candidates:
TeaCache runs with each on calibration seeds at thresholds bracketing target computed fractions, and the mean PSNR
against the uncached outputs at those fractions decides (:class:`BorrowedComparison`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from ditcache.calibration.fit import padded_coefficients
from ditcache.calibration.search import (
    SearchCandidate,
    TradeoffMeter,
    operating_points,
    polynomial_values,
)
from ditcache.calibration.target import CalibrationTarget
from ditcache.core.log import get_logger
from ditcache.profiles import Profile, save_profile

__all__ = ["BorrowedComparison", "borrowed_preset", "compare_with_borrowed"]

_log = get_logger("ditcache.calibration.compare")


@attrs.frozen
class BorrowedComparison:
    """The trade-off of a fitted profile and of the preset its model would borrow, on the same seeds."""

    preset: str
    """The preset key (``ditcache.presets.teacache.TEACACHE_PRESETS``) the model gets without a profile."""
    fitted: SearchCandidate
    """The fitted profile (``coefficients``: its pooled polynomial) as judged."""
    borrowed: SearchCandidate
    """The preset's coefficients as judged."""
    fractions: tuple[float, ...]
    """Computed fractions the objective averages the PSNR over."""
    seeds: tuple[int, ...]
    """The seeds both were run on."""

    @property
    def margin(self) -> float:
        """Fitted minus borrowed objective, in dB (negative: the fit is worse)."""
        return self.fitted.objective - self.borrowed.objective

    @property
    def worse(self) -> bool:
        """Whether the fitted profile's mean PSNR at the target fractions is below the borrowed coefficients'."""
        return self.margin < 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in a profile (``data.borrowed_comparison``)."""
        return {
            "preset": self.preset,
            "fractions": list(self.fractions),
            "seeds": list(self.seeds),
            "fitted_objective": self.fitted.objective,
            "borrowed_objective": self.borrowed.objective,
            "margin_db": self.margin,
            "worse": self.worse,
            "fitted": self.fitted.as_dict(),
            "borrowed": self.borrowed.as_dict(),
        }


def borrowed_preset(module: Any, indicator: str | None) -> tuple[str | None, str]:
    """The preset key ``module`` would borrow without a profile, and why there is none when the key is None (no
    preset for the family, or a preset computed on another indicator than ``indicator``)."""
    from ditcache.presets.teacache import TEACACHE_PRESETS, infer_teacache_model

    try:
        key, _ = infer_teacache_model(module)
    except ValueError as exc:
        return None, str(exc)
    preset = TEACACHE_PRESETS[key]
    if preset.indicator != indicator:
        return None, (
            f"the preset {key!r} reads the indicator {preset.indicator or 'modulated input'}, the points were recorded "
            f"on {indicator or 'the modulated input'}"
        )
    return key, ""


def _profile_values(profile: Profile, series: Sequence[tuple[str, np.ndarray[Any, Any]]]) -> list[np.ndarray[Any, Any]]:
    """The rescaled distances TeaCache computes with the profile: each series' role polynomial, else the pooled one."""
    from ditcache.caches.teacache import profile_coefficients

    pooled, branches, _ = profile_coefficients(profile)
    return [polynomial_values(branches.get(role, pooled), [x])[0] for role, x in series]


def compare_with_borrowed(
    target: CalibrationTarget,
    profile: Profile,
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    preset: str,
    num_steps: int,
    seeds: Sequence[int],
    references: Sequence[torch.Tensor],
    fractions: Sequence[float],
) -> BorrowedComparison:
    """Measure ``profile`` (a ``"teacache"`` profile, loaded as ``TeaCacheConfig(profile=...)`` does, so with its
    per-branch polynomials) and the ``preset`` (``TeaCacheConfig(model=preset)``) on ``seeds`` against their
    uncached ``references``, at thresholds bracketing ``fractions`` found by replaying the recorded ``series``
    (``(role, x values)`` per branch and generation, as :attr:`TeaCacheCalibrator.series
    <ditcache.calibration.recorder.TeaCacheCalibrator.series>` holds them)."""
    from ditcache.caches.teacache import TeaCacheConfig, profile_coefficients
    from ditcache.presets.teacache import TEACACHE_PRESETS

    if preset not in TEACACHE_PRESETS:
        raise ValueError(f"preset: expected one of {sorted(TEACACHE_PRESETS)}, got {preset!r}")
    recorded = [(role, np.asarray(x, dtype=np.float64).reshape(-1)) for role, x in series]
    recorded = [(role, x) for role, x in recorded if x.size]
    if not recorded:
        raise ValueError("series: expected recorded indicator changes, got none")
    if not isinstance(profile, Profile) or profile.kind != "teacache":
        raise TypeError(
            f"profile: expected a 'teacache' Profile, got {getattr(profile, 'kind', type(profile).__name__)!r}"
        )
    wanted = tuple(float(f) for f in fractions)
    if not wanted or not all(0 < f < 1 for f in wanted):
        raise ValueError(f"fractions: expected computed fractions in (0, 1) (exclusive), got {list(fractions)}")
    meter = TradeoffMeter(target, num_steps, seeds, references)
    borrowed_coefficients = padded_coefficients(TEACACHE_PRESETS[preset].coefficients)
    xs = [x for _, x in recorded]
    borrowed_points = operating_points(polynomial_values(borrowed_coefficients, xs))
    fitted_points = operating_points(_profile_values(profile, recorded))
    for name, points in (("the preset's", borrowed_points), ("the profile's", fitted_points)):
        if not points:
            raise ValueError(
                f"{name} polynomial is not positive anywhere over the recorded x range: nothing to compare"
            )
    borrowed_runs = meter.bracket(
        f"borrowed {preset}",
        ("preset", preset),
        lambda t: TeaCacheConfig(rel_l1_thresh=t, model=preset),
        borrowed_points,
        wanted,
    )
    with tempfile.TemporaryDirectory(prefix="ditcache-compare-") as tmp:
        path = save_profile(profile, Path(tmp) / "fitted.teacache.json")
        fitted_runs = meter.bracket(
            "fitted",
            ("profile", str(path)),
            lambda t: TeaCacheConfig(rel_l1_thresh=t, profile=path),
            fitted_points,
            wanted,
        )
    pooled, _, _ = profile_coefficients(profile)
    comparison = BorrowedComparison(
        preset=preset,
        fitted=TradeoffMeter.score("fitted", padded_coefficients(pooled), fitted_runs, wanted),
        borrowed=TradeoffMeter.score(f"borrowed {preset}", borrowed_coefficients, borrowed_runs, wanted),
        fractions=wanted,
        seeds=tuple(seeds),
    )
    _log.info(
        "calibrate.borrowed_compared",
        preset=preset,
        fitted_objective=round(comparison.fitted.objective, 3),
        borrowed_objective=round(comparison.borrowed.objective, 3),
    )
    return comparison
