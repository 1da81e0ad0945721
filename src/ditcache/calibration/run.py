"""One calibration run: record, fit, search or compare, and the profiles it produces.

:func:`calibrate` runs a :class:`~ditcache.calibration.target.CalibrationTarget` uncached for a few generations with
a :class:`~ditcache.calibration.recorder.TeaCacheCalibrator` and MagCache's calibration mode applied, fits every
branch and the pooled points, and measures MagCache's magnitude ratios in the same runs (averaged over the
samples). The results are two profiles (``ditcache.profiles``): kind ``"teacache"`` (pooled and per-branch
coefficients, R^2, point count, x range, the raw points) and kind ``"magcache"`` (per-branch ratio curves), loaded
with ``TeaCacheConfig(profile=...)`` and ``MagCacheConfig(profile=...)``.

``method="search"`` chooses TeaCache's polynomial by the quality/speed trade-off instead
(:func:`~ditcache.calibration.search.search_teacache_coefficients`). With ``method="regression"`` the fit is measured
against the preset coefficients the model would borrow (:mod:`ditcache.calibration.compare`), and a fit that caches
worse is reported with the warning event ``calibrate.fit_worse_than_borrowed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from ditcache.calibration.compare import BorrowedComparison, borrowed_preset, compare_with_borrowed
from ditcache.calibration.evaluate import check_output
from ditcache.calibration.fit import MAX_DEGREE, TeaCacheFit, check_degree, round6
from ditcache.calibration.recorder import TeaCacheCalibrator
from ditcache.calibration.search import CoefficientSearch, SearchCandidate, SearchSettings, search_teacache_coefficients
from ditcache.calibration.target import CalibrationTarget
from ditcache.core.log import get_logger
from ditcache.core.runtime import apply_cache, get_cache_runtime, refresh, remove_cache
from ditcache.core.validators import int_ge
from ditcache.profiles import Profile, bundled_profile_dir, profile_dir, save_profile

__all__ = ["METHODS", "CalibrationResult", "calibrate", "shipped_profiles_hidden"]

_log = get_logger("ditcache.calibration.run")

METHODS = ("regression", "search")
"""How :func:`calibrate` chooses TeaCache's coefficients: the least-squares fit of the output change on the
indicator change (``"regression"``, the TeaCache authors' procedure), or a direct search of the quality/speed
trade-off over a small family of polynomials (``"search"``, :func:`search_teacache_coefficients`)."""


@attrs.frozen
class CalibrationResult:
    """The profiles of one calibration run and the fits behind the TeaCache one."""

    name: str
    """The profile name the files are written under."""
    teacache: Profile
    """Kind ``"teacache"``: pooled and per-branch coefficients, R^2, point counts, x ranges, the raw points (with
    ``method="search"``: the chosen polynomial, the search record, the threshold table and the fits)."""
    magcache: Profile | None
    """Kind ``"magcache"``: per-branch ratio curves (averaged over the samples), or None if not measured."""
    fits: dict[str, TeaCacheFit]
    """``"pooled"`` and one per branch role with enough points (``"cond"``, ``"uncond"``)."""
    search: CoefficientSearch | None = None
    """With ``method="search"``: the candidates judged and the chosen coefficients (the profile's)."""
    comparison: BorrowedComparison | None = None
    """With ``method="regression"``: the fit against the preset the model would borrow (None when not measured:
    no preset for the model, ``compare=False``, or ``run`` returned no output tensor)."""

    def profiles(self) -> dict[str, Profile]:
        """The profiles by kind."""
        out = {"teacache": self.teacache}
        if self.magcache is not None:
            out["magcache"] = self.magcache
        return out

    def paths(self, directory: str | Path | None = None) -> dict[str, Path]:
        """Where :meth:`save` writes each profile: ``<directory>/<name>.<kind>.json``."""
        base = profile_dir() if directory is None else Path(directory).expanduser()
        return {kind: base / f"{self.name}.{kind}.json" for kind in self.profiles()}

    def shadowed(self, directory: str | Path | None = None) -> dict[str, Path]:
        """The profiles shipped with ditcache that :meth:`save` to ``directory`` would hide, by kind
        (:func:`shipped_profiles_hidden`)."""
        return {k: p for k, p in shipped_profiles_hidden(self.name, directory).items() if k in self.profiles()}

    def save(self, directory: str | Path | None = None, *, overwrite: bool = True) -> dict[str, Path]:
        """Write the profiles to ``directory`` (default: the profile directory, so that ``TeaCacheConfig(
        profile=name)`` and ``MagCacheConfig(profile=name)`` find them); returns the files by kind."""
        paths = self.paths(directory)
        return {kind: save_profile(p, paths[kind], overwrite=overwrite) for kind, p in self.profiles().items()}


def shipped_profiles_hidden(name: str, directory: str | Path | None = None) -> dict[str, Path]:
    """The shipped profiles (``ditcache/bundled/profiles``) that files ``<name>.<kind>.json`` written to
    ``directory`` (default: the profile directory) would hide, by kind.

    A name is looked up in the profile directory before the shipped profiles, so saving there under a shipped
    name makes ``TeaCacheConfig(profile=name)`` load the new file instead of the shipped one. Empty when
    ``directory`` is not the profile directory or no shipped profile has this name.
    """
    base = profile_dir() if directory is None else Path(directory).expanduser()
    if base.resolve() != profile_dir().expanduser().resolve():
        return {}
    shipped = bundled_profile_dir()
    found = {kind: shipped / f"{name}.{kind}.json" for kind in ("teacache", "magcache")}
    return {kind: path for kind, path in found.items() if path.is_file()}


def _average_magcache(profiles: list[Profile], name: str, metadata: Mapping[str, Any]) -> Profile:
    """The elementwise mean of the per-sample MagCache profiles (same roles, same step count)."""
    first = profiles[0]
    data = dict(first.data)
    for key in ("curves", "std", "cosine_distance"):
        per_role: dict[str, list[float]] = {}
        for role in first.data[key]:
            rows = np.asarray([p.data[key][role] for p in profiles], dtype=np.float64)
            per_role[role] = [round6(v) for v in rows.mean(axis=0).tolist()]
        data[key] = per_role
    data["samples"] = len(profiles)
    meta = {**first.metadata, **metadata, "averaged_over_samples": len(profiles)}
    return Profile(kind="magcache", model=name, data=data, metadata=meta)


def calibrate(
    target: CalibrationTarget,
    *,
    num_steps: int = 50,
    samples: int = 4,
    seed: int = 0,
    degree: int = 4,
    indicator: str | None = None,
    fit_on: str = "output",
    magcache: bool = True,
    on_sample: Callable[[int, int, float], None] | None = None,
    method: str = "regression",
    search: SearchSettings | None = None,
    on_candidate: Callable[[int, int, SearchCandidate], None] | None = None,
    compare: bool = True,
) -> CalibrationResult:
    """Run ``samples`` uncached generations of ``num_steps`` steps (seeds ``seed``, ``seed + 1``, ...) and fit.

    Records TeaCache's points with a :class:`TeaCacheCalibrator` and, with ``magcache=True``, MagCache's ratios
    with ``MagCacheConfig(calibrate=True)`` in the same runs; both are removed afterwards. ``on_sample(index,
    seed, seconds)`` is called after each generation. The transformer must have no cache applied.

    ``method`` (one of :data:`METHODS`) decides the profile's coefficients: ``"regression"`` stores the
    least-squares fits (pooled and per branch); ``"search"`` then runs :func:`search_teacache_coefficients` with
    ``search`` (default :class:`SearchSettings`) on the first ``search.samples`` calibration seeds, whose uncached
    outputs are the references (``target.run`` must return the output tensor), calling ``on_candidate(index,
    budget, candidate)`` after each candidate; it stores one shared polynomial for every branch, the search record
    (``data.search``), the threshold table (``data.thresholds``) and the regression fits (``data.regression``).

    With ``method="regression"`` and ``compare=True``, when the model has a preset it would borrow (on the same
    indicator) and ``target.run`` returns the output tensor, the fitted profile and the preset are both run on the
    first ``search.samples`` calibration seeds at ``search.fractions``
    (:func:`~ditcache.calibration.compare.compare_with_borrowed`); the result is
    :attr:`CalibrationResult.comparison` and ``data.borrowed_comparison`` in the profile, and a fit with the lower
    mean PSNR logs the warning ``calibrate.fit_worse_than_borrowed``.
    """
    from ditcache.caches.magcache import MagCacheConfig, apply_magcache_hook

    if not isinstance(target, CalibrationTarget):
        raise TypeError(f"target: expected a CalibrationTarget, got {type(target).__name__}")
    int_ge(2).check(num_steps, "num_steps")
    int_ge(1).check(samples, "samples")
    int_ge(0).check(seed, "seed")
    check_degree(degree)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    settings = SearchSettings() if search is None else search
    if not isinstance(settings, SearchSettings):
        raise TypeError(f"search: expected a SearchSettings or None, got {type(settings).__name__}")
    if method == "search" and settings.samples > samples:
        raise ValueError(
            f"search: samples={settings.samples} exceeds the calibration samples ({samples}); the search judges "
            "the candidates on calibration seeds"
        )
    module = target.transformer
    runtime = get_cache_runtime(module)
    if runtime is not None and runtime.middlewares:
        raise ValueError(
            f"target.transformer: caches {[m.name for m in runtime.middlewares]} are applied; remove them "
            "(ditcache.remove_cache) first: calibration measures the uncached model"
        )
    preset: str | None = None
    if method == "regression" and compare:
        preset, why = borrowed_preset(module, indicator)
        if preset is None:
            _log.info("calibrate.comparison_skipped", reason=why)
    judged = min(settings.samples, samples)
    recorder = apply_cache(module, TeaCacheCalibrator(indicator, fit_on), extractor=target.extractor)
    mag_profiles: list[Profile] = []
    seeds = [seed + k for k in range(samples)]
    references: list[torch.Tensor] = []  # uncached outputs of the judged seeds (calibration never skips)
    try:
        mag = apply_magcache_hook(module, MagCacheConfig(calibrate=True)) if magcache else None
        for k, s in enumerate(seeds):
            refresh(module, num_steps)
            start = time.perf_counter()
            with torch.no_grad():
                output = target.run(num_steps, s)
            if method == "search" and k < judged:
                try:
                    references.append(check_output(output))
                except TypeError as exc:
                    raise TypeError(f"{exc} (method='search' compares cached and uncached outputs)") from None
            elif preset is not None and k < judged:
                if isinstance(output, torch.Tensor):
                    references.append(output)
                else:
                    _log.info("calibrate.comparison_skipped", reason="target.run returned no output tensor")
                    preset = None
            if not recorder.series:
                raise ValueError(
                    "target.run: the transformer was never called with the calibrator applied; run(num_steps, "
                    "seed) must call target.transformer"
                )
            if mag is not None:
                mag_profiles.append(mag.calibration_profile(model=target.profile_name))
            if on_sample is not None:
                on_sample(k, s, time.perf_counter() - start)
    finally:
        remove_cache(module, TeaCacheCalibrator.name)
        if magcache:
            remove_cache(module, "magcache")
    from ditcache.core.version import VERSION as __version__

    metadata = {
        **target.metadata,
        "num_steps": num_steps,
        "samples": samples,
        "seeds": seeds,
        "ditcache_version": __version__,
    }
    name = target.profile_name
    fits = recorder.fit(degree, fit_on)
    tea = recorder.profile(model=name, metadata=metadata, degree=degree, fit_on=fit_on)
    found: CoefficientSearch | None = None
    comparison: BorrowedComparison | None = None
    if method == "search":
        found = search_teacache_coefficients(
            target,
            [s.x for s in recorder.series if s.x],
            num_steps=num_steps,
            seeds=seeds[:judged],
            regression=fits["pooled"].coefficients,
            settings=settings,
            references=references,
            indicator=indicator,
            on_candidate=on_candidate,
        )
        tea = _search_profile(tea, found)
    else:
        tea = attrs.evolve(tea, data={**tea.data, "method": "regression"})
        if preset is not None:
            comparison = _compare(target, tea, recorder, preset, num_steps, seeds[:judged], references, settings)
            if comparison is not None:
                tea = attrs.evolve(tea, data={**tea.data, "borrowed_comparison": comparison.as_dict()})
    mag_profile = _average_magcache(mag_profiles, name, metadata) if mag_profiles else None
    return CalibrationResult(
        name=name, teacache=tea, magcache=mag_profile, fits=fits, search=found, comparison=comparison
    )


def _compare(
    target: CalibrationTarget,
    profile: Profile,
    recorder: TeaCacheCalibrator,
    preset: str,
    num_steps: int,
    seeds: list[int],
    references: list[torch.Tensor],
    settings: SearchSettings,
) -> BorrowedComparison | None:
    """:func:`compare_with_borrowed` on the recorded series; logs the warning when the fit is worse."""
    try:
        comparison = compare_with_borrowed(
            target,
            profile,
            [(s.role, s.x) for s in recorder.series if s.x],
            preset=preset,
            num_steps=num_steps,
            seeds=seeds,
            references=references,
            fractions=settings.fractions,
        )
    except ValueError as exc:
        _log.info("calibrate.comparison_skipped", reason=str(exc))
        return None
    if comparison.worse:
        _log.warning(
            "calibrate.fit_worse_than_borrowed",
            preset=preset,
            fitted_psnr_db=round(comparison.fitted.objective, 2),
            borrowed_psnr_db=round(comparison.borrowed.objective, 2),
            fractions=list(comparison.fractions),
            note="the regression profile caches worse than the preset it replaces; use method='search' or keep "
            "the preset",
        )
    return comparison


_FIT_KEYS = ("coefficients", "degree", "r2", "n", "x_range", "y_range", "branches")


def _search_profile(regression: Profile, found: CoefficientSearch) -> Profile:
    """The regression profile turned into the search one: the chosen polynomial for every branch (no
    ``branches``), the search record and threshold table, the regression fits kept under ``regression``."""
    data = dict(regression.data)
    fitted = {key: data.pop(key) for key in _FIT_KEYS if key in data}
    chosen = found.coefficients
    degree = next((MAX_DEGREE - i for i, c in enumerate(chosen) if c != 0), 0)
    out = {
        "coefficients": list(chosen),
        "degree": degree,
        "x_range": fitted.get("x_range"),
        "method": "search",
        "thresholds": [p.as_dict() for p in found.thresholds],
        "search": found.as_dict(),
        "regression": fitted,
        **data,
    }
    meta = {
        **regression.metadata,
        "fit": (
            f"coefficients chosen by direct search ({found.chosen.label}): the candidate polynomial with the best "
            f"mean PSNR against uncached outputs at computed fractions {list(found.settings.fractions)}, seeds "
            f"{list(found.seeds)}; one polynomial for every branch; the numpy.polyfit fits are under data.regression"
        ),
    }
    return Profile(kind="teacache", model=regression.model, data=out, metadata=meta)
