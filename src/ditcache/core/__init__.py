"""The runtime every cache and model builds on: hooks, the cache context, extractors, branches, the runtime.

Layer rule (checked by import-linter): ``core`` imports torch, attrs and structlog only, never another ditcache
layer. A call flows ``hooks`` (the module's forward is intercepted) -> ``extractor`` (the model's preprocessing builds
a :class:`CacheContext`) -> ``runtime`` (``clock`` stamps branch, role, step and generation and announces generation
boundaries; ``distributed`` supplies the reducer) -> the caches' stack (``cache``) -> the blocks -> the postprocess.
"""

from __future__ import annotations

from ditcache.core.branch import ROLES, Role, cfg_branch, current_branch, role_of
from ditcache.core.cache import CacheMiddleware, FinalOutput, GenerationStats, StepDecision, insertion_index
from ditcache.core.clock import GenerationListener, StepClock, Tick
from ditcache.core.context import BlockOutput, BlockStack, CacheContext
from ditcache.core.distributed import LocalReducer, ProcessGroupReducer, Reducer
from ditcache.core.extractor import (
    Extractor,
    ExtractorNotFoundError,
    FunctionExtractor,
    get_extractor,
    register_extractor,
    registered_extractors,
    unregister_extractor,
)
from ditcache.core.hooks import (
    ForwardCall,
    ForwardHook,
    HookConflictError,
    HookHandle,
    HookRegistry,
    Middleware,
    same_settings,
)
from ditcache.core.log import configure_logging, get_logger
from ditcache.core.runtime import (
    CacheRuntime,
    apply_cache,
    cache_stats,
    get_cache_runtime,
    refresh,
    remove_cache,
    set_reducer,
)

__all__ = [
    "ROLES",
    "BlockOutput",
    "BlockStack",
    "CacheContext",
    "CacheMiddleware",
    "CacheRuntime",
    "Extractor",
    "ExtractorNotFoundError",
    "FinalOutput",
    "ForwardCall",
    "ForwardHook",
    "FunctionExtractor",
    "GenerationListener",
    "GenerationStats",
    "HookConflictError",
    "HookHandle",
    "HookRegistry",
    "LocalReducer",
    "Middleware",
    "ProcessGroupReducer",
    "Reducer",
    "Role",
    "StepClock",
    "StepDecision",
    "Tick",
    "apply_cache",
    "cache_stats",
    "cfg_branch",
    "configure_logging",
    "current_branch",
    "get_cache_runtime",
    "get_extractor",
    "get_logger",
    "insertion_index",
    "refresh",
    "register_extractor",
    "registered_extractors",
    "remove_cache",
    "role_of",
    "same_settings",
    "set_reducer",
    "unregister_extractor",
]
