"""Direct search of TeaCache's polynomial by the quality/speed trade-off (``calibrate(method="search")``).

:func:`search_teacache_coefficients` runs TeaCache with a few candidate polynomials (a constant, the regression fit,
``1 + a x`` and ``1 + a x + c x^2``) at thresholds bracketing a few target computed fractions, measures the PSNR
against the uncached outputs of calibration seeds, and keeps the best on average. :class:`TradeoffMeter` is the
measuring part (also used to compare a fit with the coefficients a model would borrow).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import torch

from ditcache.calibration.evaluate import (
    PSNR_CAP,
    TradeoffPoint,
    evaluate_configs,
    reference_output,
)
from ditcache.calibration.fit import padded_coefficients, round6
from ditcache.calibration.target import CalibrationTarget
from ditcache.core.log import get_logger
from ditcache.core.validators import int_ge

__all__ = [
    "CoefficientSearch",
    "SearchCandidate",
    "SearchSettings",
    "TradeoffMeter",
    "operating_points",
    "polynomial_values",
    "search_teacache_coefficients",
]

_log = get_logger("ditcache.calibration.search")

_MIN_RESCALED = 0.05  # a candidate polynomial must stay above this over the recorded x range (no negative steps)
_GRID_POINTS = 800  # thresholds simulated per candidate to find its operating points
_ROBUST_WIDTH = 1.05  # an operating point is robust when its threshold interval spans 5% or more


def _fractions_converter(value: Any) -> tuple[float, ...]:
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"SearchSettings.fractions: expected a sequence of numbers in (0, 1), got {value!r}") from None


def _check_fractions(inst: Any, attribute: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    name = f"SearchSettings.{attribute.name}"
    if not value:
        raise ValueError(f"{name}: expected at least one computed fraction in (0, 1), got none")
    for v in value:
        if not math.isfinite(v) or not 0 < v < 1:
            raise ValueError(f"{name}: every computed fraction must be in (0, 1) (exclusive), got {v!r}")


def _check_positive_int(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"SearchSettings.{attribute.name}: expected an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class SearchSettings:
    """Settings of :func:`search_teacache_coefficients` (``calibrate(method="search")``)."""

    budget: int = attrs.field(default=12, validator=_check_positive_int)
    """Candidate polynomials evaluated (the constant first, then the regression fit, then the linear and quadratic
    families). Each candidate costs 3-6 cached generations per search seed."""
    samples: int = attrs.field(default=2, validator=_check_positive_int)
    """How many of the calibration seeds (the first ones) the candidates are judged on."""
    fractions: tuple[float, ...] = attrs.field(
        default=(0.2, 0.25, 0.3, 0.35, 0.4), converter=_fractions_converter, validator=_check_fractions
    )
    """Computed fractions the objective averages the PSNR over."""
    table_fractions: tuple[float, ...] = attrs.field(
        default=(0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7),
        converter=_fractions_converter,
        validator=_check_fractions,
    )
    """Computed fractions the threshold table of the chosen coefficients aims at (nearest operating points)."""


@attrs.frozen
class SearchCandidate:
    """One polynomial judged by :func:`search_teacache_coefficients`."""

    label: str
    """``"constant"``, ``"regression"``, ``"linear ..."`` or ``"quadratic ..."`` with the polynomial."""
    coefficients: tuple[float, float, float, float, float]
    """The 5 numbers TeaCache takes, highest power first."""
    runs: tuple[TradeoffPoint, ...]
    """The thresholds run with it: computed fraction and PSNR against the uncached outputs (search seeds)."""
    psnr_at: tuple[float, ...]
    """PSNR (dB) at each target computed fraction, interpolated linearly between the runs."""
    objective: float
    """The mean of :attr:`psnr_at`: what the search maximises."""
    extrapolated: bool
    """True when a target fraction lies outside the measured fractions (the PSNR there is extrapolated)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in a profile."""
        return {
            "label": self.label,
            "coefficients": list(self.coefficients),
            "objective": self.objective,
            "psnr_at": list(self.psnr_at),
            "extrapolated": self.extrapolated,
            "runs": [p.as_dict() for p in self.runs],
        }


@attrs.frozen
class CoefficientSearch:
    """The result of :func:`search_teacache_coefficients`."""

    chosen: SearchCandidate
    """The candidate with the highest objective (the earliest one on a tie)."""
    candidates: tuple[SearchCandidate, ...]
    """Every candidate evaluated, in evaluation order."""
    thresholds: tuple[TradeoffPoint, ...]
    """Threshold table of the chosen coefficients, ascending: the computed fraction and PSNR measured."""
    settings: SearchSettings
    """The settings used."""
    seeds: tuple[int, ...]
    """The seeds the candidates were judged on."""
    num_steps: int
    """Denoising steps per generation."""

    @property
    def coefficients(self) -> tuple[float, float, float, float, float]:
        """The chosen coefficients."""
        return self.chosen.coefficients

    def threshold_for(self, fraction: float) -> float:
        """The threshold of the table entry whose measured computed fraction is nearest to ``fraction``."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
        best = min(self.thresholds, key=lambda p: (abs(p.computed_fraction - fraction), p.threshold))
        return best.threshold

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in a profile (``data.search``)."""
        return {
            "objective": (
                "mean PSNR (dB) of the outputs against the uncached ones at computed fractions "
                f"{list(self.settings.fractions)}, each interpolated linearly over the candidate's threshold runs"
            ),
            "fractions": list(self.settings.fractions),
            "budget": self.settings.budget,
            "seeds": list(self.seeds),
            "num_steps": self.num_steps,
            "chosen": self.chosen.label,
            "chosen_objective": self.chosen.objective,
            "candidates": [c.as_dict() for c in self.candidates],
        }


def _simulate(values: Sequence[np.ndarray[Any, Any]], thresholds: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Computed fraction of TeaCache's decisions (first step computed, last forced) per threshold, replayed on
    recorded rescaled distances (``values[k][i]``: the rescaled distance at step ``i + 1`` of series ``k``)."""
    computed = np.zeros(thresholds.size)
    total = 0
    for v in values:
        acc = np.zeros(thresholds.size)
        count = np.ones(thresholds.size)  # step 0: warm-up
        for value in v[:-1]:  # steps 1 .. n-2; the last step is forced
            acc += value
            compute = acc >= thresholds
            count += compute
            acc[compute] = 0.0
        computed += count + (1 if v.size else 0)
        total += v.size + 1
    return computed / max(total, 1)


def operating_points(values: Sequence[np.ndarray[Any, Any]]) -> list[tuple[float, float, float]]:
    """``(simulated computed fraction, threshold, width)`` per distinct fraction, threshold ascending, for the
    rescaled distances ``values`` (one array per recorded series: the polynomial at each recorded ``x``): the
    threshold is the geometric middle of the widest threshold interval giving that fraction on the recorded
    points, ``width`` the ratio of the interval's ends (1: a single grid point; narrow intervals are fragile, the
    decisions of unseen generations differ)."""
    pooled = np.concatenate(values) if values else np.zeros(0)
    positive = pooled[pooled > 0]
    if positive.size == 0:
        return []
    lo = 0.25 * float(positive.min())
    hi = 1.5 * max(float(np.clip(v, 0, None).sum()) for v in values) + lo
    grid = np.geomspace(lo, hi, _GRID_POINTS)
    fractions = np.round(_simulate(values, grid), 9)
    widest: dict[float, tuple[float, float]] = {}  # fraction -> (lo, hi) of its widest contiguous interval
    start = 0
    for i in range(1, grid.size + 1):
        if i == grid.size or fractions[i] != fractions[start]:
            f, lo_t, hi_t = float(fractions[start]), float(grid[start]), float(grid[i - 1])
            if f not in widest or hi_t / lo_t > widest[f][1] / widest[f][0]:
                widest[f] = (lo_t, hi_t)
            start = i
    points = [(f, float(f"{math.sqrt(lo_t * hi_t):.4g}"), hi_t / lo_t) for f, (lo_t, hi_t) in widest.items()]
    points.sort(key=lambda p: p[1])
    return points


def _bracket(points: Sequence[tuple[float, float, float]], fraction: float) -> list[int]:
    """Indices (into ``points``) of the operating points nearest above and below ``fraction``, preferring robust
    ones (threshold interval at least 5% wide) when there are."""

    def pick(side: list[int]) -> list[int]:
        robust = [i for i in side if points[i][2] >= _ROBUST_WIDTH]
        pool = robust or side
        return [min(pool, key=lambda i: abs(points[i][0] - fraction))] if pool else []

    return pick([i for i, p in enumerate(points) if p[0] >= fraction]) + pick(
        [i for i, p in enumerate(points) if p[0] <= fraction]
    )


def _nearest(points: Sequence[tuple[float, float, float]], fraction: float) -> int:
    """Index of the robust operating point (or any, when none is robust) nearest to ``fraction``."""
    robust = [i for i, p in enumerate(points) if p[2] >= _ROBUST_WIDTH] or list(range(len(points)))
    return min(robust, key=lambda i: abs(points[i][0] - fraction))


def _interpolate(runs: Sequence[TradeoffPoint], fraction: float) -> tuple[float, bool]:
    """PSNR at ``fraction``, linear between the runs' (fraction, PSNR) (equal fractions averaged); outside the
    measured range, extrapolated from the two nearest points (``True`` second)."""
    by_fraction: dict[float, list[float]] = {}
    for p in runs:
        by_fraction.setdefault(round(p.computed_fraction, 9), []).append(p.psnr)
    xs = np.asarray(sorted(by_fraction))
    ys = np.asarray([float(np.mean(by_fraction[f])) for f in xs.tolist()])
    if xs.size == 1:
        return float(ys[0]), not math.isclose(float(xs[0]), fraction, abs_tol=1e-9)
    if xs[0] <= fraction <= xs[-1]:
        return float(np.interp(fraction, xs, ys)), False
    i, j = (0, 1) if fraction < xs[0] else (-2, -1)
    slope = (ys[j] - ys[i]) / (xs[j] - xs[i])
    value = float(ys[i] + slope * (fraction - xs[i]))
    return min(PSNR_CAP, max(0.0, value)), True


def _family_label(u: float, v: float, x_ref: float) -> tuple[str, tuple[float, float, float, float, float]]:
    """The polynomial ``1 + u (x / x_ref) + v (x / x_ref)^2`` as a label and 5 coefficients (6 significant digits,
    so that a candidate reached twice by the search is recognised)."""
    c1, c2 = round6(u / x_ref) + 0.0, round6(v / x_ref**2) + 0.0  # + 0.0: no negative zero
    coefficients = (0.0, 0.0, c2, c1, 1.0)
    if u == 0 and v == 0:
        return "constant 1", coefficients
    text = f"1 {'+' if c1 >= 0 else '-'} {abs(c1):.4g}x"
    if v == 0:
        return f"linear {text}", coefficients
    return f"quadratic {text} {'+' if c2 >= 0 else '-'} {abs(c2):.4g}x^2", coefficients


class TradeoffMeter:
    """Runs TeaCache configurations on fixed seeds against their uncached outputs and keeps every measurement.

    A *candidate* is a label, a key (what makes two candidates the same, e.g. their coefficients) and
    ``make_config(threshold) -> TeaCacheConfig``. :meth:`measure` runs thresholds (each once per key);
    :meth:`bracket` chooses the thresholds from replayed operating points so that the measured computed fractions
    bracket target fractions, and :meth:`score` interpolates the PSNR there.
    """

    def __init__(
        self,
        target: CalibrationTarget,
        num_steps: int,
        seeds: Sequence[int],
        references: Sequence[torch.Tensor],
    ) -> None:
        if len(references) != len(seeds):
            raise ValueError(f"references: expected one output per seed ({len(seeds)}), got {len(references)}")
        self.target = target
        self.num_steps = num_steps
        self.seeds = list(seeds)
        self.references = list(references)
        self._measured: dict[tuple[Any, float], TradeoffPoint] = {}

    def measure(
        self, label: str, key: Any, make_config: Callable[[float], Any], thresholds: Sequence[float]
    ) -> list[TradeoffPoint]:
        """The trade-off points of ``thresholds`` (ascending, each distinct one once), running the new ones."""
        todo = sorted({t for t in thresholds if (key, t) not in self._measured})
        configs = [(label, make_config(t)) for t in todo]
        for t, point in zip(todo, evaluate_configs(self.target, configs, self.num_steps, self.seeds, self.references)):
            self._measured[(key, t)] = point
        return [self._measured[(key, t)] for t in sorted(set(thresholds))]

    def bracket(
        self,
        label: str,
        key: Any,
        make_config: Callable[[float], Any],
        points: Sequence[tuple[float, float, float]],
        fractions: Sequence[float],
    ) -> list[TradeoffPoint]:
        """Runs at the operating points (:func:`operating_points`) nearest above and below each target fraction,
        widened once where the measured fractions do not bracket a target (the replay predicts the real fractions
        closely, not exactly)."""
        if not points:
            raise ValueError(f"{label}: no operating point (the rescaled distances are never positive)")
        wanted = {i for f in fractions for i in _bracket(points, f)}
        runs = self.measure(label, key, make_config, [points[i][1] for i in wanted])
        index = {p[1]: i for i, p in enumerate(points)}
        extra: set[int] = set()
        for f in fractions:
            measured = [p.computed_fraction for p in runs]
            if min(measured) > f:  # every run computes more: add the next larger threshold
                i = max(index[p.threshold] for p in runs) + 1
                if i < len(points):
                    extra.add(i)
            if max(measured) < f:
                i = min(index[p.threshold] for p in runs) - 1
                if i >= 0:
                    extra.add(i)
        if extra:
            runs = self.measure(label, key, make_config, [p.threshold for p in runs] + [points[i][1] for i in extra])
        return sorted(runs, key=lambda p: p.threshold)

    @staticmethod
    def score(
        label: str,
        coefficients: tuple[float, float, float, float, float],
        runs: Sequence[TradeoffPoint],
        fractions: Sequence[float],
    ) -> SearchCandidate:
        """The candidate's PSNR at each target fraction (linear between its runs) and their mean."""
        at = [_interpolate(runs, f) for f in fractions]
        return SearchCandidate(
            label=label,
            coefficients=coefficients,
            runs=tuple(sorted(runs, key=lambda p: p.threshold)),
            psnr_at=tuple(v for v, _ in at),
            objective=float(np.mean([v for v, _ in at])),
            extrapolated=any(e for _, e in at),
        )


def polynomial_values(
    coefficients: Sequence[float], x_series: Sequence[np.ndarray[Any, Any]]
) -> list[np.ndarray[Any, Any]]:
    """The polynomial (highest power first) at every recorded ``x`` of every series."""
    c = np.asarray(coefficients, dtype=np.float64)
    return [np.polyval(c, x) for x in x_series]


def search_teacache_coefficients(
    target: CalibrationTarget,
    x_series: Sequence[Sequence[float]],
    *,
    num_steps: int,
    seeds: Sequence[int],
    regression: Sequence[float] | None = None,
    settings: SearchSettings | None = None,
    references: Sequence[torch.Tensor] | None = None,
    indicator: str | None = None,
    on_candidate: Callable[[int, int, SearchCandidate], None] | None = None,
) -> CoefficientSearch:
    """Choose TeaCache coefficients by measuring the quality/speed trade-off of a few candidate polynomials.

    ``x_series`` are the recorded indicator changes of uncached runs (one sequence per branch and generation, steps
    ``1 .. num_steps - 1``; :meth:`TeaCacheCalibrator.points` pooled per series). The candidates, in order, within
    ``settings.budget``: the constant ``1`` (a fixed schedule: compute every k-th step), ``regression`` (the least-
    squares fit, when given), ``1 + u q`` for ``u`` in 1, 3, 1/3, 9, refinements of the best ``u``, then
    ``1 + u q + v q^2`` around it (``q = x / max x``; every candidate is normalised to 1 at ``x = 0`` and must stay
    above 0.05 over the recorded range). For each candidate the recorded points are replayed to find the
    thresholds whose computed fractions bracket each of ``settings.fractions``; those thresholds are then run for
    real (TeaCache with one shared polynomial for every branch, ``warmup_steps=1``, last step forced) on ``seeds``
    against the uncached outputs (``references``, computed when None), and the PSNR at each target fraction is
    interpolated. The candidate with the highest mean PSNR wins; a threshold table is then measured for it.
    ``indicator`` is the ``extra_states`` key the points were recorded with (None: the modulated input).
    ``on_candidate(index, budget, candidate)`` is called after each candidate.
    """
    from ditcache.caches.teacache import TeaCacheConfig

    settings = SearchSettings() if settings is None else settings
    if not isinstance(settings, SearchSettings):
        raise TypeError(f"settings: expected a SearchSettings or None, got {type(settings).__name__}")
    int_ge(2).check(num_steps, "num_steps")
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    series = [np.asarray(s, dtype=np.float64).reshape(-1) for s in x_series]
    series = [s for s in series if s.size]
    if not series:
        raise ValueError("x_series: expected recorded indicator changes, got none")
    if not all(np.all(np.isfinite(s)) for s in series):
        raise ValueError("x_series: every value must be finite")
    x_all = np.concatenate(series)
    x_lo, x_ref = float(x_all.min()), float(x_all.max())
    if x_ref <= 0:
        raise ValueError(f"x_series: expected positive indicator changes, got a largest value of {x_ref!r}")
    if references is None:
        references = [reference_output(target, num_steps, s) for s in seeds]
    meter = TradeoffMeter(target, num_steps, seeds, references)

    def config(coefficients: tuple[float, ...]) -> Callable[[float], Any]:
        return lambda t: TeaCacheConfig(rel_l1_thresh=t, coefficients=coefficients, indicator=indicator)

    candidates: list[SearchCandidate] = []
    seen: set[tuple[float, ...]] = set()

    def judge(label: str, coefficients: tuple[float, float, float, float, float], family: bool = True) -> None:
        if len(candidates) >= settings.budget or coefficients in seen:
            return
        grid = np.linspace(x_lo, x_ref, 64)
        if family and float(np.polyval(np.asarray(coefficients), grid).min()) < _MIN_RESCALED:
            _log.info("calibrate.search_skipped", candidate=label, reason="not positive over the recorded x range")
            return
        seen.add(coefficients)
        points = operating_points(polynomial_values(coefficients, series))
        if not points:
            return
        runs = meter.bracket(label, coefficients, config(coefficients), points, settings.fractions)
        candidate = meter.score(label, coefficients, runs, settings.fractions)
        candidates.append(candidate)
        _log.info("calibrate.search_candidate", candidate=label, objective=round(candidate.objective, 3))
        if on_candidate is not None:
            on_candidate(len(candidates), settings.budget, candidate)

    members: dict[tuple[float, ...], tuple[float, float]] = {}

    def uv(u: float, v: float = 0.0) -> None:
        label, coefficients = _family_label(u, v, x_ref)
        members[coefficients] = (u, v)
        judge(label, coefficients)

    def best(linear_only: bool = False) -> tuple[float, float]:
        pool = [c for c in candidates if c.coefficients in members]
        if linear_only:
            pool = [c for c in pool if members[c.coefficients][1] == 0]
        if not pool:
            return 0.0, 0.0
        return members[max(pool, key=lambda c: c.objective).coefficients]

    uv(0.0)
    if regression is not None:
        judge("regression", padded_coefficients(regression), family=False)
    for u in (1.0, 3.0, 1 / 3, 9.0):
        uv(u)
    u, _ = best(linear_only=True)
    step = math.sqrt(3.0)
    for u_new in (u * step, u / step) if u > 0 else (1 / 9, -1 / 3):
        uv(u_new)
    u, _ = best(linear_only=True)
    scale = u if u > 0 else 1.0
    for v_new in (scale, -scale / 2):
        uv(u, v_new)
    u, v = best()
    refine = 0
    while len(candidates) < settings.budget and refine < 8:
        refine += 1
        factor = 3.0 ** (0.5**refine)
        shift = max(abs(v), abs(u), 1.0) * 0.5**refine
        for u_new, v_new in ((u * factor, v), (u / factor, v), (u, v + shift), (u, v - shift)):
            uv(u_new, v_new)
        u, v = best()

    chosen = max(candidates, key=lambda c: c.objective)  # max keeps the first of equal objectives
    points = operating_points(polynomial_values(chosen.coefficients, series))
    table_indices = {_nearest(points, f) for f in settings.table_fractions}
    thresholds = [p.threshold for p in chosen.runs] + [points[i][1] for i in table_indices]
    table = meter.measure(chosen.label, chosen.coefficients, config(chosen.coefficients), thresholds)
    return CoefficientSearch(
        chosen=chosen,
        candidates=tuple(candidates),
        thresholds=tuple(sorted(table, key=lambda p: p.threshold)),
        settings=settings,
        seeds=tuple(seeds),
        num_steps=num_steps,
    )
