"""TeaCache for serving engines: vLLM-Omni's ``vllm_omni.diffusion.cache.teacache`` names on ditcache's TeaCache."""

from __future__ import annotations

from ditcache.backends.teacache.backend import TeaCacheBackend
from ditcache.backends.teacache.config import TeaCacheConfig, apply_teacache_hook

__all__ = ["TeaCacheBackend", "TeaCacheConfig", "apply_teacache_hook"]
