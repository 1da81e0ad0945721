"""MagCache for serving engines: vLLM-Omni's ``vllm_omni.diffusion.cache.magcache`` names on ditcache's MagCache."""

from __future__ import annotations

from ditcache.backends.magcache.backend import MagCacheBackend
from ditcache.backends.magcache.config import MagCacheConfig, apply_mag_cache_hook, apply_magcache_hook

__all__ = ["MagCacheBackend", "MagCacheConfig", "apply_mag_cache_hook", "apply_magcache_hook"]
