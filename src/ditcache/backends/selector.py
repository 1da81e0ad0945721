"""``get_cache_backend(name, config)``: the backend an engine asks for by name (vLLM-Omni's selector).

Names: ``"none"`` (or None) -> None, ``"tea_cache"``, ``"mag_cache"``, ``"cache_dit"`` and ditcache's own
``"ditcache"`` (a cache stack). The config is a :class:`~ditcache.backends.data.DiffusionCacheConfig`, a dict of
its keys (strict: an unknown key is an error naming the closest valid ones) or None (the defaults). An unknown
name is a ValueError listing the supported ones; vLLM-Omni's DreamZero-only ``"step_cache"`` is refused with the
reason. The cache-dit backend (and the cache-dit import) is loaded only when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ditcache.backends.base import CacheBackend, coerce_cache_config
from ditcache.backends.data import DiffusionCacheConfig
from ditcache.core.validators import closest_names

__all__ = ["SUPPORTED_BACKENDS", "get_cache_backend"]

SUPPORTED_BACKENDS = ("none", "tea_cache", "mag_cache", "cache_dit", "ditcache")
"""The names :func:`get_cache_backend` accepts."""

_REFUSED = {
    "step_cache": "vLLM-Omni's StepCache serves only its DreamZero pipeline, which diffusers does not have",
    "stepcache": "vLLM-Omni's StepCache serves only its DreamZero pipeline, which diffusers does not have",
    "step_cache_dit": "vLLM-Omni's StepCache serves only its DreamZero pipeline, which diffusers does not have",
}


def get_cache_backend(
    cache_backend: str | None, cache_config: DiffusionCacheConfig | Mapping[str, Any] | None = None
) -> CacheBackend | None:
    """The (not yet enabled) backend named ``cache_backend`` with ``cache_config``; None for ``"none"``/None.

    Raises ValueError for an unknown name (listing :data:`SUPPORTED_BACKENDS`) or a bad config, before anything
    touches a pipeline.
    """
    if cache_backend is None or cache_backend == "none":
        if cache_config is not None:
            coerce_cache_config(cache_config)  # a typo is an error even when caching is off
        return None
    if not isinstance(cache_backend, str):
        raise TypeError(f"cache_backend: expected a name from {list(SUPPORTED_BACKENDS)}, got {cache_backend!r}")
    if cache_backend in _REFUSED:
        raise ValueError(
            f"cache_backend: {cache_backend!r} is not supported: {_REFUSED[cache_backend]}; supported: "
            f"{list(SUPPORTED_BACKENDS)}"
        )
    if cache_backend == "tea_cache":
        from ditcache.backends.teacache.backend import TeaCacheBackend

        return TeaCacheBackend(cache_config)
    if cache_backend == "mag_cache":
        from ditcache.backends.magcache.backend import MagCacheBackend

        return MagCacheBackend(cache_config)
    if cache_backend == "cache_dit":
        from ditcache.backends.cache_dit_backend import CacheDiTBackend

        return CacheDiTBackend(cache_config)
    if cache_backend == "ditcache":
        from ditcache.backends.ditcache_backend import DitCacheBackend

        return DitCacheBackend(cache_config)
    hint = closest_names(cache_backend.replace("-", "_"), SUPPORTED_BACKENDS)
    raise ValueError(
        f"cache_backend: unsupported cache backend {cache_backend!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; supported: {list(SUPPORTED_BACKENDS)}"
    )
