"""vLLM-Omni's ``MagCacheConfig`` and ``apply_mag_cache_hook``, translated to ditcache's MagCache.

The fields are vLLM-Omni's (``threshold=0.24``, ``max_skip_steps=5``, ``retention_ratio=0.1``,
``num_inference_steps=28``, ``mag_ratios``, ``mag_calibrate``, ``transformer_type``) with the same checks. The
differences: without ``mag_ratios`` the published curve of the module's model is used (vLLM-Omni has curves for
FLUX.1 and FLUX.2 only and raises otherwise), the curve is resampled for each request's step count
(``refresh``), state is kept per CFG branch, and a skipped step adds the cached residual once (vLLM-Omni issue
#5560). ``apply_magcache_hook`` (ditcache's spelling) is the same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

import ditcache
from ditcache.backends.data import DiffusionCacheConfig
from ditcache.core.validators import finite, int_ge

__all__ = ["MagCacheConfig", "apply_mag_cache_hook", "apply_magcache_hook", "to_ditcache"]

DEFAULT_NUM_INFERENCE_STEPS = 28
"""vLLM-Omni's step count when none is known before the first refresh."""


@dataclass
class MagCacheConfig:
    """MagCache settings in vLLM-Omni's shape (validated when built)."""

    threshold: float = 0.24
    max_skip_steps: int = 5
    retention_ratio: float = 0.1
    num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS
    mag_ratios: list[float] | None = None
    mag_calibrate: bool = False
    transformer_type: str | None = None

    def __post_init__(self) -> None:
        finite(gt=0).check(self.threshold, "MagCacheConfig.threshold")
        int_ge(1).check(self.max_skip_steps, "MagCacheConfig.max_skip_steps")
        finite(gt=0, lt=1).check(self.retention_ratio, "MagCacheConfig.retention_ratio")
        int_ge(1).check(self.num_inference_steps, "MagCacheConfig.num_inference_steps")
        if self.mag_ratios is not None:
            self.mag_ratios = [float(v) for v in self.mag_ratios]

    @classmethod
    def from_diffusion_config(cls, config: DiffusionCacheConfig, transformer_type: str | None = None) -> MagCacheConfig:
        """The MagCache part of a :class:`DiffusionCacheConfig`."""
        return cls(
            threshold=float(config.mag_threshold),
            max_skip_steps=config.mag_max_skip_steps,
            retention_ratio=float(config.mag_retention_ratio),
            num_inference_steps=config.num_inference_steps or DEFAULT_NUM_INFERENCE_STEPS,
            mag_ratios=None if config.mag_ratios is None else list(config.mag_ratios),
            mag_calibrate=config.mag_calibrate,
            transformer_type=transformer_type,
        )


def to_ditcache(config: MagCacheConfig, overrides: Mapping[str, Any] | None = None) -> ditcache.MagCacheConfig:
    """The equivalent :class:`ditcache.MagCacheConfig`; ``overrides`` sets further fields of
    :class:`ditcache.MagCacheConfig` (e.g. ``taylorseer``); an ``rtol`` there replaces the threshold."""
    extra = dict(overrides or {})
    if extra.get("rtol") is None:  # an error tolerance replaces the threshold
        extra["threshold"] = float(config.threshold)
    return ditcache.MagCacheConfig(
        max_skip_steps=config.max_skip_steps,
        retention_ratio=float(config.retention_ratio),
        num_inference_steps=config.num_inference_steps,
        mag_ratios=None if config.mag_ratios is None else tuple(config.mag_ratios),
        calibrate=config.mag_calibrate,
        **extra,
    )


def apply_mag_cache_hook(
    module: nn.Module,
    config: MagCacheConfig | ditcache.MagCacheConfig | Mapping[str, Any] | None = None,
    strategy: Any = None,
) -> ditcache.MagCache:
    """Apply MagCache to ``module`` (vLLM-Omni's signature); returns the MagCache middleware in effect.

    ``strategy`` (vLLM-Omni's per-model residual layout) must be None: ditcache's extractor of the model gives
    the layout. Raises ValueError for a ``transformer_type`` that is not the module's class or a model ditcache
    has no extractor for.
    """
    if strategy is not None:
        raise ValueError(
            "strategy: ditcache takes the block layout from the model's extractor; pass strategy=None (register an "
            "extractor with ditcache.register_extractor for a new model)"
        )
    if isinstance(config, MagCacheConfig):
        if config.transformer_type is not None and config.transformer_type != type(module).__name__:
            raise ValueError(
                f"MagCacheConfig.transformer_type: {config.transformer_type!r} does not match the module's class "
                f"{type(module).__name__!r}; leave it None to use the module's own"
            )
        config = to_ditcache(config)
    return ditcache.apply_magcache_hook(module, config)


apply_magcache_hook = apply_mag_cache_hook
"""ditcache's spelling of :func:`apply_mag_cache_hook`."""
