"""``TeaCacheBackend``: vLLM-Omni's TeaCache backend on ditcache's TeaCache middleware.

Better than the original where it was wrong: ``refresh`` passes the request's step count (the last step is then
always computed), state is kept per CFG branch, both experts of a Wan 2.2 pipeline are cached (each refreshed
with the request's total step count, since each expert's calls carry the loop's global step index), and
:meth:`TeaCacheBackend.disable` removes the cache exactly.
``apply_teacache_hook`` is looked up in this module at call time, so it can be patched.
"""

from __future__ import annotations

from torch import nn

from ditcache.backends._runtime import RuntimeBackend
from ditcache.backends.teacache.config import TeaCacheConfig, apply_teacache_hook

__all__ = ["TeaCacheBackend", "TeaCacheConfig", "apply_teacache_hook"]


class TeaCacheBackend(RuntimeBackend):
    """TeaCache on every DiT of the pipeline.

    Example::

        backend = TeaCacheBackend({"rel_l1_thresh": 0.2})
        backend.enable(pipeline)
        for request in requests:
            backend.refresh(pipeline, num_inference_steps=request.steps)
            pipeline(...)
    """

    name = "tea_cache"
    cache_names = ("teacache",)

    def teacache_config(self, module: nn.Module) -> TeaCacheConfig:
        """The vLLM-Omni-shaped TeaCache config this backend applies to ``module``."""
        return TeaCacheConfig.from_diffusion_config(self.config, type(module).__name__)

    def _apply(self, name: str, module: nn.Module) -> None:
        apply_teacache_hook(module, self.teacache_config(module))
