"""The peers' caches as evaluation methods: diffusers' FirstBlockCache, MagCache and TaylorSeer, and cache-dit's
DBCache (with and without its TaylorSeer calibrator), each installed on a fresh copy of the bundled model."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ditcache.bundled import DigitsDiT
from ditcache.tools.evaluation import BeforeRun, EvalSettings, Method

__all__ = ["cache_dit_dbcache", "diffusers_first_block_cache", "diffusers_magcache", "diffusers_taylorseer"]


def _quiet_cache_dit() -> None:
    """cache-dit logs several INFO lines per enable_cache; keep the bench output readable."""
    for name in list(logging.root.manager.loggerDict):
        if name.lower().startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _diffusers_reset(transformer: torch.nn.Module) -> BeforeRun:
    def reset() -> None:
        # What a diffusers pipeline does at the end of every call (maybe_free_model_hooks).
        transformer._reset_stateful_cache()  # type: ignore[operator]

    return reset


def diffusers_first_block_cache(threshold: float) -> Method:
    """diffusers' FirstBlockCache (``apply_first_block_cache``) at ``threshold``."""

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

        apply_first_block_cache(model.transformer, FirstBlockCacheConfig(threshold=threshold))
        return _diffusers_reset(model.transformer)

    return Method(f"diffusers FBC t={threshold:g}", "peer", "diffusers-fbc", {"threshold": threshold}, install)


def diffusers_magcache(curve: Sequence[float], threshold: float, max_skip_steps: int, retention_ratio: float) -> Method:
    """diffusers' MagCache (``apply_mag_cache``) with the magnitude-ratio ``curve`` (one curve for every branch)."""
    ratios = [float(v) for v in curve]

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        from diffusers.hooks import MagCacheConfig as DiffusersMagCacheConfig
        from diffusers.hooks import apply_mag_cache

        cfg = DiffusersMagCacheConfig(
            threshold=threshold,
            max_skip_steps=max_skip_steps,
            retention_ratio=retention_ratio,
            num_inference_steps=settings.num_steps,
            mag_ratios=ratios,
        )
        apply_mag_cache(model.transformer, cfg)
        return _diffusers_reset(model.transformer)

    params = {"threshold": threshold, "max_skip_steps": max_skip_steps, "retention_ratio": retention_ratio}
    name = f"diffusers MagCache t={threshold:g} K={max_skip_steps} r={retention_ratio:g}"
    return Method(name, "peer", "diffusers-magcache", params, install)


_TS_BLOCKS = [r"transformer_blocks\.\d+", r"single_transformer_blocks\.\d+"]


def diffusers_taylorseer(
    cache_interval: int,
    *,
    max_order: int = 1,
    before: int = 3,
    last_step: bool = False,
    mode: str = "attention",
) -> Method:
    """diffusers' TaylorSeer (``apply_taylorseer_cache``), float32 factors.

    ``mode``: ``"attention"`` (the default hooks: attention outputs forecast, the rest of each block runs),
    ``"blocks"`` (whole block outputs forecast) or ``"lite"`` (blocks skipped, the output projection forecast).
    ``before`` is ``disable_cache_before_step``; ``last_step`` sets ``disable_cache_after_step`` to the last step,
    so that it is computed.
    """
    if mode not in ("attention", "blocks", "lite"):
        raise ValueError(f"mode: expected 'attention', 'blocks' or 'lite', got {mode!r}")

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

        cfg = TaylorSeerCacheConfig(
            cache_interval=cache_interval,
            disable_cache_before_step=before,
            disable_cache_after_step=settings.num_steps - 1 if last_step else None,
            max_order=max_order,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=_TS_BLOCKS if mode == "blocks" else None,
            use_lite_mode=mode == "lite",
        )
        apply_taylorseer_cache(model.transformer, cfg)
        return _diffusers_reset(model.transformer)

    params = {
        "cache_interval": cache_interval,
        "max_order": max_order,
        "disable_cache_before_step": before,
        "last_step_computed": last_step,
        "mode": mode,
    }
    name = f"diffusers TaylorSeer {mode} N={cache_interval} O={max_order} B={before}" + (" +last" if last_step else "")
    return Method(name, "peer", f"diffusers-taylorseer-{mode}", params, install)


def cache_dit_dbcache(
    threshold: float,
    *,
    fn: int = 1,
    bn: int = 0,
    warmup: int = 4,
    max_continuous: int | None = None,
    taylorseer_order: int = 0,
) -> Method:
    """cache-dit's DBCache (``cache_dit.enable_cache`` on the transformer; ``refresh_context`` before every run),
    with its TaylorSeer calibrator when ``taylorseer_order > 0``."""

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        import cache_dit
        from cache_dit import DBCacheConfig as CacheDitDBCacheConfig
        from cache_dit import TaylorSeerCalibratorConfig

        _quiet_cache_dit()
        cfg = CacheDitDBCacheConfig(
            Fn_compute_blocks=fn,
            Bn_compute_blocks=bn,
            max_warmup_steps=warmup,
            residual_diff_threshold=threshold,
            max_continuous_cached_steps=-1 if max_continuous is None else max_continuous,
            # The sampler calls cond and uncond separately: without this every call is one step and nothing caches.
            enable_separate_cfg=settings.guided,
            num_inference_steps=settings.num_steps,
        )
        calibrator = TaylorSeerCalibratorConfig(taylorseer_order=taylorseer_order) if taylorseer_order else None
        transformer = model.transformer
        cache_dit.enable_cache(transformer, cache_config=cfg, calibrator_config=calibrator)
        _quiet_cache_dit()

        def refresh() -> None:
            cache_dit.refresh_context(transformer, num_inference_steps=settings.num_steps)

        return refresh

    params = {
        "Fn_compute_blocks": fn,
        "Bn_compute_blocks": bn,
        "max_warmup_steps": warmup,
        "residual_diff_threshold": threshold,
        "max_continuous_cached_steps": max_continuous,
        "taylorseer_order": taylorseer_order,
    }
    name = f"cache-dit DBCache F{fn}B{bn} W{warmup} R={threshold:g}"
    if max_continuous is not None:
        name += f" MC={max_continuous}"
    if taylorseer_order:
        name += f" +TaylorSeer O{taylorseer_order}"
    return Method(name, "peer", "cache-dit-dbcache" + ("-taylorseer" if taylorseer_order else ""), params, install)
