"""``MagCacheBackend``: vLLM-Omni's MagCache backend on ditcache's MagCache middleware.

Better than the original where it was wrong: ``refresh`` passes the request's step count, so the magnitude
ratios are resampled for every request (vLLM-Omni resamples once, at enable); state is kept per CFG branch; both
experts of a Wan 2.2 pipeline are cached; :meth:`MagCacheBackend.disable` removes the cache exactly; ``refresh``
takes ``verbose`` like the other backends. ``apply_mag_cache_hook`` is looked up in this module at call time.
"""

from __future__ import annotations

from torch import nn

from ditcache.backends._runtime import RuntimeBackend
from ditcache.backends.magcache.config import MagCacheConfig, apply_mag_cache_hook

__all__ = ["MagCacheBackend", "MagCacheConfig", "apply_mag_cache_hook"]


class MagCacheBackend(RuntimeBackend):
    """MagCache on every DiT of the pipeline (the curve is the model's published preset unless ``mag_ratios``)."""

    name = "mag_cache"
    cache_names = ("magcache",)

    def magcache_config(self, module: nn.Module) -> MagCacheConfig:
        """The vLLM-Omni-shaped MagCache config this backend applies to ``module``."""
        return MagCacheConfig.from_diffusion_config(self.config, type(module).__name__)

    def _apply(self, name: str, module: nn.Module) -> None:
        apply_mag_cache_hook(module, self.magcache_config(module))
