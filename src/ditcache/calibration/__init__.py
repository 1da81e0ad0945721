"""Calibration as a library: record a model's indicators, fit TeaCache coefficients, record MagCache ratios, search
the trade-off, write profiles. No command line here (that is ``ditcache.tools.calibrate_cmd``).

Modules, in the order a calibration run uses them:

* :mod:`~ditcache.calibration.target`: :class:`CalibrationTarget` (a transformer and ``run(num_steps, seed)``),
  the bundled digits model as one, and :func:`load_target` for ``package.module:factory`` import paths;
* :mod:`~ditcache.calibration.recorder`: :class:`TeaCacheCalibrator`, the never-skipping middleware that records
  TeaCache's calibration points per CFG branch;
* :mod:`~ditcache.calibration.fit`: the least-squares polynomial fit (:func:`fit_teacache_coefficients`);
* :mod:`~ditcache.calibration.evaluate`: the trade-off (computed fraction, PSNR) of TeaCache configurations;
* :mod:`~ditcache.calibration.search`: the direct search of the polynomial by that trade-off;
* :mod:`~ditcache.calibration.compare`: a fitted profile against the preset the model would borrow;
* :mod:`~ditcache.calibration.run`: :func:`calibrate`, which ties them together, and :class:`CalibrationResult`.

Layer rule: ``calibration`` imports ``core``, ``caches``, ``models``, ``presets``, ``profiles`` and ``bundled``;
never ``tools``.
"""

from __future__ import annotations

from ditcache.calibration.compare import BorrowedComparison, compare_with_borrowed
from ditcache.calibration.evaluate import TradeoffPoint, evaluate_teacache
from ditcache.calibration.fit import TeaCacheFit, fit_teacache_coefficients
from ditcache.calibration.recorder import FIT_TARGETS, TeaCacheCalibrator
from ditcache.calibration.run import METHODS, CalibrationResult, calibrate
from ditcache.calibration.search import (
    CoefficientSearch,
    SearchCandidate,
    SearchSettings,
    search_teacache_coefficients,
)
from ditcache.calibration.target import (
    DEFAULT_TARGET,
    CalibrationError,
    CalibrationTarget,
    digits_dit_target,
    load_target,
)

__all__ = [
    "DEFAULT_TARGET",
    "FIT_TARGETS",
    "METHODS",
    "BorrowedComparison",
    "CalibrationError",
    "CalibrationResult",
    "CalibrationTarget",
    "CoefficientSearch",
    "SearchCandidate",
    "SearchSettings",
    "TeaCacheCalibrator",
    "TeaCacheFit",
    "TradeoffPoint",
    "calibrate",
    "compare_with_borrowed",
    "digits_dit_target",
    "evaluate_teacache",
    "fit_teacache_coefficients",
    "load_target",
    "search_teacache_coefficients",
]
