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
from .coefficients import TEACACHE_PRESETS, TeaCachePreset
from .context import BlockStack, CacheContext
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
from .middleware import CacheMiddleware, GenerationStats, StepDecision
from .registry import ForwardCall, ForwardHook, HookConflictError, HookHandle, HookRegistry, Middleware
from .runtime import CacheRuntime, apply_cache, cache_stats, get_cache_runtime, refresh, remove_cache
from .teacache import TeaCache, TeaCacheConfig, apply_teacache_hook

__version__ = "0.1.0"

__all__ = [
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
    "Middleware",
    "StepDecision",
    "TeaCache",
    "TeaCacheConfig",
    "TeaCachePreset",
    "__version__",
    "apply_cache",
    "apply_teacache_hook",
    "cache_stats",
    "cfg_branch",
    "configure_logging",
    "current_branch",
    "get_cache_runtime",
    "get_extractor",
    "get_logger",
    "refresh",
    "register_extractor",
    "registered_extractors",
    "remove_cache",
    "unregister_extractor",
]
