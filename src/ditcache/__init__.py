"""ditcache: step and block caching for diffusion transformers, added with one line.

Quick start::

    import ditcache
    cache = ditcache.apply_teacache_hook(pipe.transformer, ditcache.TeaCacheConfig(rel_l1_thresh=0.4))
    image = pipe(prompt).images[0]
    print(cache.stats()[-1].skipped_steps)

The data flow of one transformer call: the module's :class:`HookRegistry` intercepts ``forward`` -> the model's
extractor builds a :class:`CacheContext` -> the cache middleware stack decides per step -> the blocks run (or
their cached residual is reused) -> the postprocess produces the model's output.
"""

from __future__ import annotations

from .branch import cfg_branch, current_branch
from .calibrate import CalibrationTarget, TeaCacheCalibrator, fit_teacache_coefficients
from .coefficients import TEACACHE_PRESETS, TeaCachePreset
from .context import BlockStack, CacheContext
from .dbcache import DBCache, DBCacheConfig, apply_dbcache_hook
from .extractors import (
    Extractor,
    ExtractorNotFoundError,
    FunctionExtractor,
    get_extractor,
    register_extractor,
    registered_extractors,
    unregister_extractor,
)
from .log import configure_logging, get_logger
from .mag_ratios import MAG_RATIO_PRESETS, MagRatioPreset
from .magcache import MagCache, MagCacheConfig, MagCacheSchedule, apply_magcache_hook, magcache_schedule
from .middleware import CacheMiddleware, GenerationStats, StepDecision
from .profiles import Profile, ProfileError, list_profiles, load_profile, save_profile
from .registry import ForwardCall, ForwardHook, HookConflictError, HookHandle, HookRegistry, Middleware
from .runtime import CacheRuntime, apply_cache, cache_stats, get_cache_runtime, refresh, remove_cache
from .step_masks import SCM_POLICIES, SCM_PRESETS, mask_from_bins, preset_mask, resolve_mask
from .taylorseer import FORECAST_METHODS, TaylorSeer
from .teacache import TeaCache, TeaCacheConfig, apply_teacache_hook

__version__ = "0.1.0"

__all__ = [
    "fit_teacache_coefficients",
    "TeaCacheCalibrator",
    "CalibrationTarget",
    "resolve_mask",
    "mask_from_bins",
    "preset_mask",
    "SCM_POLICIES",
    "SCM_PRESETS",
    "FORECAST_METHODS",
    "TaylorSeer",
    "apply_dbcache_hook",
    "DBCacheConfig",
    "DBCache",
    "MAG_RATIO_PRESETS",
    "TEACACHE_PRESETS",
    "BlockStack",
    "CacheContext",
    "CacheMiddleware",
    "CacheRuntime",
    "Extractor",
    "ExtractorNotFoundError",
    "ForwardCall",
    "ForwardHook",
    "FunctionExtractor",
    "GenerationStats",
    "HookConflictError",
    "HookHandle",
    "HookRegistry",
    "MagCache",
    "MagCacheConfig",
    "MagCacheSchedule",
    "MagRatioPreset",
    "Middleware",
    "Profile",
    "ProfileError",
    "StepDecision",
    "TeaCache",
    "TeaCacheConfig",
    "TeaCachePreset",
    "__version__",
    "apply_cache",
    "apply_magcache_hook",
    "apply_teacache_hook",
    "cache_stats",
    "cfg_branch",
    "configure_logging",
    "current_branch",
    "get_cache_runtime",
    "get_extractor",
    "get_logger",
    "list_profiles",
    "load_profile",
    "magcache_schedule",
    "refresh",
    "register_extractor",
    "registered_extractors",
    "remove_cache",
    "save_profile",
    "unregister_extractor",
]
