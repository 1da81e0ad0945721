"""Calibration as a library: record a model's indicators, fit TeaCache coefficients, record MagCache ratios, search
the trade-off, write profiles. No command line here (that is ``ditcache.tools.calibrate_cmd``).

Layer rule: ``calibration`` imports ``core``, ``caches``, ``models``, ``presets``, ``profiles`` and ``bundled``.
"""

from __future__ import annotations

from ditcache.calibration.calibrate import CalibrationTarget, TeaCacheCalibrator, fit_teacache_coefficients

__all__ = ["CalibrationTarget", "TeaCacheCalibrator", "fit_teacache_coefficients"]
