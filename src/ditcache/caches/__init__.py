"""The caches, one file each, and what they share: the reuse/forecast store, TaylorSeer and step masks.

Layer rule: ``caches`` imports ``core``, ``presets`` and ``profiles``; never ``models``, ``calibration`` or ``tools``.
"""

from __future__ import annotations

from ditcache.caches.dbcache import DBCache, DBCacheConfig, apply_dbcache_hook
from ditcache.caches.magcache import MagCache, MagCacheConfig, MagCacheSchedule, apply_magcache_hook, magcache_schedule
from ditcache.caches.reuse import ForecastSettings
from ditcache.caches.step_masks import SCM_POLICIES, SCM_PRESETS, mask_from_bins, preset_mask, resolve_mask
from ditcache.caches.taylorseer import FORECAST_METHODS, TaylorSeer
from ditcache.caches.teacache import TeaCache, TeaCacheConfig, apply_teacache_hook

__all__ = [
    "FORECAST_METHODS",
    "SCM_POLICIES",
    "SCM_PRESETS",
    "DBCache",
    "DBCacheConfig",
    "ForecastSettings",
    "MagCache",
    "MagCacheConfig",
    "MagCacheSchedule",
    "TaylorSeer",
    "TeaCache",
    "TeaCacheConfig",
    "apply_dbcache_hook",
    "apply_magcache_hook",
    "apply_teacache_hook",
    "magcache_schedule",
    "mask_from_bins",
    "preset_mask",
    "resolve_mask",
]
