"""The ``ditcache`` backend: a stack of ditcache caches, configured by the same flat dict as the other backends.

None of vLLM-Omni's backends composes caches (its docs say TeaCache and cache-dit are not compatible). Here the
stack named by ``ditcache_stack`` runs on ditcache's middleware runtime: a step-level cache (``"tea_cache"`` or
``"mag_cache"``) decides whether a step runs at all, and inside the steps that run, DBCache (``"db_cache"``)
computes the first ``Fn_compute_blocks`` blocks and decides whether the middle blocks can be reused. TaylorSeer
(``enable_taylorseer``, ``taylorseer_order``) forecasts DBCache's reused residual (or, without DBCache, the step
cache's). The cache-dit keys of :class:`~ditcache.backends.data.DiffusionCacheConfig` configure DBCache with
cache-dit's meaning (``-1``: no cap); ``scm_steps_mask_policy`` gives DBCache the preset mask for each request's
step count (4, 6 or at least 8 steps; other counts run without a mask, as with cache-dit).
"""

from __future__ import annotations

from typing import Any

from torch import nn

import ditcache
from ditcache.backends._runtime import RuntimeBackend
from ditcache.backends.magcache.config import MagCacheConfig
from ditcache.backends.magcache.config import to_ditcache as _mag_to_ditcache
from ditcache.backends.teacache.config import TeaCacheConfig
from ditcache.backends.teacache.config import to_ditcache as _tea_to_ditcache
from ditcache.caches.step_masks import preset_available

__all__ = ["DitCacheBackend"]


class DitCacheBackend(RuntimeBackend):
    """A ditcache cache stack (TeaCache or MagCache over DBCache, optionally with TaylorSeer) on every DiT.

    Example::

        backend = DitCacheBackend({"ditcache_stack": ["mag_cache", "db_cache"], "Fn_compute_blocks": 2})
    """

    name = "ditcache"
    reads_rtol = True
    cache_names = ("teacache", "magcache", "dbcache")

    def _prepare(self, pipeline: Any) -> None:
        cfg = self.config
        if cfg.force_refresh_step_hint is not None:
            raise ValueError(
                "DiffusionCacheConfig.force_refresh_step_hint: a cache-dit setting the ditcache backend does not "
                "have (ditcache keeps state per CFG branch and generation); unset it or use cache_backend='cache_dit'"
            )
        if cfg.mag_calibrate and "db_cache" in cfg.ditcache_stack:
            raise ValueError(
                "DiffusionCacheConfig.mag_calibrate: calibrate MagCache alone (ditcache_stack=['mag_cache']); under "
                "DBCache it would measure approximated residuals"
            )
        if cfg.mag_calibrate and "mag_cache" not in cfg.ditcache_stack:
            raise ValueError("DiffusionCacheConfig.mag_calibrate: needs 'mag_cache' in ditcache_stack")

    def dbcache_config(self, num_inference_steps: int | None = None) -> ditcache.DBCacheConfig:
        """The DBCache config for a request of ``num_inference_steps`` steps (the SCM preset only where it exists)."""
        cfg = self.config
        mask = cfg.scm_steps_mask_policy
        # No mask where the preset cannot be built: an unsupported step count, or no step count known yet (before
        # the first refresh), so that a request never fails halfway.
        if mask is not None and (num_inference_steps is None or not preset_available(num_inference_steps)):
            mask = None
        return ditcache.DBCacheConfig(
            fn_compute_blocks=cfg.Fn_compute_blocks,
            bn_compute_blocks=cfg.Bn_compute_blocks,
            residual_diff_threshold=float(cfg.residual_diff_threshold),
            max_warmup_steps=cfg.max_warmup_steps,
            max_cached_steps=None if cfg.max_cached_steps < 0 else cfg.max_cached_steps,
            max_continuous_cached_steps=None
            if cfg.max_continuous_cached_steps < 0
            else cfg.max_continuous_cached_steps,
            steps_computation_mask=mask,
            steps_computation_policy=cfg.scm_steps_policy,
            taylorseer=cfg.enable_taylorseer,
            taylorseer_order=cfg.taylorseer_order,
        )

    def _step_overrides(self) -> dict[str, Any]:
        """What the step-level cache takes beyond vLLM-Omni's fields: TaylorSeer (without DBCache) and rtol."""
        cfg = self.config
        out: dict[str, Any] = {}
        if cfg.enable_taylorseer and "db_cache" not in cfg.ditcache_stack:
            out.update(taylorseer=True, taylorseer_order=cfg.taylorseer_order)
        if cfg.ditcache_rtol is not None:
            out["rtol"] = float(cfg.ditcache_rtol)
        return out

    def _apply(self, name: str, module: nn.Module) -> None:
        cfg = self.config
        steps = cfg.num_inference_steps
        if "tea_cache" in cfg.ditcache_stack:
            tea = _tea_to_ditcache(TeaCacheConfig.from_diffusion_config(cfg), steps, self._step_overrides())
            ditcache.apply_teacache_hook(module, tea)
        if "mag_cache" in cfg.ditcache_stack:
            mag = _mag_to_ditcache(MagCacheConfig.from_diffusion_config(cfg), self._step_overrides())
            ditcache.apply_magcache_hook(module, mag)
        if "db_cache" in cfg.ditcache_stack:
            ditcache.apply_dbcache_hook(module, self.dbcache_config(steps))

    def _refresh_module(self, name: str, module: nn.Module, num_steps: int) -> None:
        if "db_cache" in self.config.ditcache_stack and self.config.scm_steps_mask_policy is not None:
            wanted = self.dbcache_config(num_steps)
            runtime = ditcache.get_cache_runtime(module)
            current = None if runtime is None else runtime.get("dbcache")
            if current is not None and current.config != wanted:
                ditcache.remove_cache(module, "dbcache")
                ditcache.apply_dbcache_hook(module, wanted)
        ditcache.refresh(module, num_steps)
