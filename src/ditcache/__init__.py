"""ditcache: step and block caching for diffusion transformers, added with one line.

Quick start::

    import ditcache
    cache = ditcache.apply_teacache_hook(pipe.transformer, ditcache.TeaCacheConfig(rel_l1_thresh=0.4))
    image = pipe(prompt).images[0]
    print(cache.stats()[-1].skipped_steps)

The data flow of one transformer call: the module's hook registry intercepts ``forward`` -> the model's extractor
builds a :class:`CacheContext` -> the cache middleware stack decides per step -> the blocks run (or their cached
residual is reused) -> the postprocess produces the model's output.

The top level holds what a user types in the first hour. The rest lives in the sub-packages, one layer each:
``ditcache.core`` (hooks, context, extractors, branches, runtime), ``ditcache.caches`` (TeaCache, MagCache, DBCache,
TaylorSeer, step masks), ``ditcache.presets`` (published coefficients and ratios), ``ditcache.profiles`` (calibration
profiles), ``ditcache.models`` (per-model extractors), ``ditcache.calibration``, ``ditcache.backends`` (serving
engines), ``ditcache.bundled`` (the bundled model) and ``ditcache.tools`` (the command line).
"""

from __future__ import annotations

from typing import Any

from ditcache.caches.dbcache import DBCache, DBCacheConfig, apply_dbcache_hook
from ditcache.caches.magcache import MagCache, MagCacheConfig, apply_magcache_hook
from ditcache.caches.teacache import TeaCache, TeaCacheConfig, apply_teacache_hook
from ditcache.core.branch import cfg_branch
from ditcache.core.context import BlockStack, CacheContext
from ditcache.core.extractor import Extractor, add_lazy_models, register_extractor
from ditcache.core.log import configure_logging
from ditcache.core.runtime import apply_cache, cache_stats, get_cache_runtime, refresh, remove_cache
from ditcache.core.version import VERSION
from ditcache.models import MODEL_TABLE as _MODEL_TABLE
from ditcache.pipeline import apply_cache_to_pipeline, remove_cache_from_pipeline

__version__ = VERSION

add_lazy_models(_MODEL_TABLE)

__all__ = [
    "BlockStack",
    "CacheContext",
    "DBCache",
    "DBCacheConfig",
    "Extractor",
    "MagCache",
    "MagCacheConfig",
    "TeaCache",
    "TeaCacheConfig",
    "__version__",
    "apply_cache",
    "apply_cache_to_pipeline",
    "apply_dbcache_hook",
    "apply_magcache_hook",
    "apply_teacache_hook",
    "cache_stats",
    "cfg_branch",
    "configure_logging",
    "get_cache_runtime",
    "refresh",
    "register_extractor",
    "remove_cache",
    "remove_cache_from_pipeline",
]

# Where the names that left the top level live now, for a helpful AttributeError.
_MOVED = {
    "ditcache.core": (
        "CacheMiddleware CacheRuntime ExtractorNotFoundError ForwardCall ForwardHook FunctionExtractor GenerationStats "
        "HookConflictError HookHandle HookRegistry Middleware StepDecision current_branch get_extractor get_logger "
        "registered_extractors unregister_extractor"
    ),
    "ditcache.caches": (
        "FORECAST_METHODS SCM_POLICIES SCM_PRESETS MagCacheSchedule TaylorSeer magcache_schedule mask_from_bins "
        "preset_mask resolve_mask"
    ),
    "ditcache.presets": "MAG_RATIO_PRESETS TEACACHE_PRESETS MagRatioPreset TeaCachePreset",
    "ditcache.profiles": "Profile ProfileError list_profiles load_profile save_profile",
    "ditcache.calibration": "CalibrationTarget TeaCacheCalibrator fit_teacache_coefficients",
}


def __getattr__(name: str) -> Any:
    for home, names in _MOVED.items():
        if name in names.split():
            raise AttributeError(f"module 'ditcache' has no attribute {name!r}; import it from {home}")
    raise AttributeError(f"module 'ditcache' has no attribute {name!r}")
