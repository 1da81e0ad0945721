"""The pipeline-level entry point: cache a diffusers pipeline's transformer(s), one generation per ``pipe(...)`` call.

It lives at the top of the package (beside ``ditcache/__init__.py``), not in ``core``, because it turns cache
configs into caches; the mechanism (how a pipeline call marks a generation) is :mod:`ditcache.core.pipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ditcache.caches.dbcache import DBCacheConfig, apply_dbcache_hook
from ditcache.caches.magcache import MagCacheConfig, apply_magcache_hook
from ditcache.caches.teacache import TeaCacheConfig, apply_teacache_hook
from ditcache.core.cache import CacheMiddleware
from ditcache.core.clock import check_max_branches
from ditcache.core.pipeline import bind_pipeline, pipeline_transformers, unbind_pipeline
from ditcache.core.runtime import get_cache_runtime, remove_cache

__all__ = ["PipelineConfig", "apply_cache_to_pipeline", "remove_cache_from_pipeline"]

CacheConfig = TeaCacheConfig | MagCacheConfig | DBCacheConfig
PipelineConfig = CacheConfig | Sequence[CacheConfig]
"""One cache config, or several to stack (a step-level cache over DBCache)."""

_APPLIED_ATTR = "_ditcache_pipeline_caches"


def _apply_one(module: nn.Module, config: CacheConfig) -> CacheMiddleware[Any]:
    if isinstance(config, TeaCacheConfig):
        return apply_teacache_hook(module, config)
    if isinstance(config, MagCacheConfig):
        return apply_magcache_hook(module, config)
    return apply_dbcache_hook(module, config)


def _configs(config: object) -> list[CacheConfig]:
    items = list(config) if isinstance(config, Sequence) and not isinstance(config, str) else [config]
    configs = [c for c in items if isinstance(c, TeaCacheConfig | MagCacheConfig | DBCacheConfig)]
    bad = [type(c).__name__ for c in items if not isinstance(c, TeaCacheConfig | MagCacheConfig | DBCacheConfig)]
    if bad or not configs:
        raise TypeError(
            "config: expected a TeaCacheConfig, MagCacheConfig or DBCacheConfig, or a sequence of them to stack; "
            f"got {bad or 'an empty sequence'}"
        )
    return configs


def apply_cache_to_pipeline(
    pipe: Any,
    config: PipelineConfig,
    *,
    components: tuple[str, ...] | None = None,
    max_branches: int | None = None,
) -> dict[str, list[CacheMiddleware[Any]]]:
    """Cache the transformer(s) of a diffusers pipeline so that each ``pipe(...)`` call is one generation.

    ``config`` is a cache config (or a sequence of them to stack); a fresh cache is made for each denoiser
    (``pipe.transformer``, and ``pipe.transformer_2`` where the pipeline has one, or the ``components`` named).
    Every ``pipe(...)`` call then starts new generations, with the number of steps that call runs (read from its
    scheduler: ``num_inference_steps``, img2img ``strength``, Heun's doubled timesteps), so the call equals a fresh
    cached run whatever ran before (an interrupted call, another step count, a lower starting noise level).

    Nothing is patched on the pipeline, its class or its scheduler: other instances of the class are unaffected.
    ``max_branches`` bounds the CFG branches each denoiser tracks (default 16). Returns the caches per component;
    undo with :func:`remove_cache_from_pipeline`.
    """
    configs = _configs(config)
    if max_branches is not None:
        check_max_branches(max_branches)
    modules = pipeline_transformers(pipe, components)
    applied: dict[str, list[CacheMiddleware[Any]]] = {}
    try:
        for name, module in modules.items():
            applied[name] = [_apply_one(module, c) for c in configs]
            runtime = get_cache_runtime(module)
            assert runtime is not None
            if max_branches is not None:
                runtime.clock.max_branches = max_branches
    except BaseException:
        for name, caches in applied.items():
            for cache in caches:
                remove_cache(modules[name], cache.name)
        raise
    bind_pipeline(pipe, modules)
    previous: dict[str, list[CacheMiddleware[Any]]] = pipe.__dict__.get(_APPLIED_ATTR, {})
    pipe.__dict__[_APPLIED_ATTR] = {**previous, **applied}
    return applied


def remove_cache_from_pipeline(pipe: Any) -> list[CacheMiddleware[Any]]:
    """Remove the caches :func:`apply_cache_to_pipeline` applied to ``pipe``; returns them. Each transformer is
    restored exactly when its last cache goes."""
    applied: dict[str, list[CacheMiddleware[Any]]] = pipe.__dict__.pop(_APPLIED_ATTR, {})
    removed: list[CacheMiddleware[Any]] = []
    modules = {name: getattr(pipe, name) for name in applied if isinstance(getattr(pipe, name, None), nn.Module)}
    unbind_pipeline(modules)
    for name, caches in applied.items():
        module = modules.get(name)
        if module is None:
            continue
        runtime = get_cache_runtime(module)
        for cache in caches:
            if runtime is not None and runtime.get(cache.name) is cache:
                removed.extend(remove_cache(module, cache.name))
    return removed
