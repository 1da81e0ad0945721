"""Serving-engine backends: vLLM-Omni's ``vllm_omni.diffusion.cache`` API on ditcache's runtime and cache-dit.

An engine written against vLLM-Omni switches by changing the import prefix ``vllm_omni.diffusion.cache`` to
``ditcache.backends`` (and ``vllm_omni.diffusion.data`` to ``ditcache.backends.data``)::

    from ditcache.backends.selector import get_cache_backend

    backend = get_cache_backend("cache_dit", {"Fn_compute_blocks": 1, "residual_diff_threshold": 0.12})
    backend.enable(pipeline)                                  # once, after loading
    for request in requests:
        backend.refresh(pipeline, request.num_inference_steps)   # before every request
        pipeline(...)

Modules: ``base`` (:class:`CacheBackend`), ``data`` (:class:`DiffusionCacheConfig`), ``selector``
(``get_cache_backend``), ``teacache`` and ``magcache`` (ditcache's own caches), ``cache_dit_backend`` (the
cache-dit library), ``ditcache_backend`` (a cache stack), ``prompt_embed_cache``. See ``docs/serving.md``.

Layer rule: ``backends`` imports the public API, ``models`` and ``calibration``; nothing below imports it. The
cache-dit backend (and cache-dit itself) is imported only when used.
"""

from __future__ import annotations

from ditcache.backends.base import CacheBackend
from ditcache.backends.data import DiffusionCacheConfig
from ditcache.backends.magcache import MagCacheBackend, MagCacheConfig, apply_mag_cache_hook, apply_magcache_hook
from ditcache.backends.prompt_embed_cache import (
    PromptEmbedCache,
    install_prompt_embed_cache,
    resolve_prompt_embed_cache_config,
    uninstall_prompt_embed_cache,
)
from ditcache.backends.selector import SUPPORTED_BACKENDS, get_cache_backend
from ditcache.backends.teacache import TeaCacheBackend, TeaCacheConfig, apply_teacache_hook
from ditcache.core.context import CacheContext

__all__ = [
    "SUPPORTED_BACKENDS",
    "CacheBackend",
    "CacheContext",
    "DiffusionCacheConfig",
    "MagCacheBackend",
    "MagCacheConfig",
    "PromptEmbedCache",
    "TeaCacheBackend",
    "TeaCacheConfig",
    "apply_mag_cache_hook",
    "apply_magcache_hook",
    "apply_teacache_hook",
    "get_cache_backend",
    "install_prompt_embed_cache",
    "resolve_prompt_embed_cache_config",
    "uninstall_prompt_embed_cache",
]
