"""vLLM-Omni's ``TeaCacheConfig`` and ``apply_teacache_hook``, translated to ditcache's TeaCache.

``TeaCacheConfig(rel_l1_thresh=0.2, coefficients=None, transformer_type=None)`` keeps vLLM-Omni's fields. The
differences: ``transformer_type`` defaults to None, meaning "the module's own class" (vLLM-Omni defaults to the
Qwen-Image coefficients whatever the module); when given, it must name the module's class. The decision rule is
vLLM-Omni's (``abs()`` of the rescaled distance, strict ``<``), with ditcache's per-CFG-branch state and, when the
step count is known (``refresh``), the last step always computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

import ditcache
from ditcache.backends.data import DiffusionCacheConfig
from ditcache.core.validators import Rule, finite

__all__ = ["TeaCacheConfig", "apply_teacache_hook", "to_ditcache"]

_CLASS_NAME = Rule(lambda v: v is None or (isinstance(v, str) and bool(v)), "a class name or None")


@dataclass
class TeaCacheConfig:
    """TeaCache settings in vLLM-Omni's shape (validated when built)."""

    rel_l1_thresh: float = 0.2
    """Threshold on the accumulated rescaled relative L1 distance (> 0); larger skips more."""
    coefficients: list[float] | None = None
    """Rescale polynomial (5 numbers, highest power first); None: the published preset of the module's model."""
    transformer_type: str | None = None
    """Class name of the transformer the config is for; None: whatever module it is applied to."""

    def __post_init__(self) -> None:
        finite(gt=0).check(self.rel_l1_thresh, "TeaCacheConfig.rel_l1_thresh")
        if self.coefficients is not None and len(list(self.coefficients)) != 5:
            raise ValueError(
                f"TeaCacheConfig.coefficients: expected 5 numbers (highest power first), got {self.coefficients!r}"
            )
        _CLASS_NAME.check(self.transformer_type, "TeaCacheConfig.transformer_type")

    @classmethod
    def from_diffusion_config(cls, config: DiffusionCacheConfig, transformer_type: str | None = None) -> TeaCacheConfig:
        """The TeaCache part of a :class:`DiffusionCacheConfig`."""
        thresh = 0.2 if config.rel_l1_thresh is None else float(config.rel_l1_thresh)
        coefficients = None if config.coefficients is None else [float(c) for c in config.coefficients]
        return cls(rel_l1_thresh=thresh, coefficients=coefficients, transformer_type=transformer_type)


def to_ditcache(
    config: TeaCacheConfig, num_inference_steps: int | None = None, overrides: Mapping[str, Any] | None = None
) -> ditcache.TeaCacheConfig:
    """The equivalent :class:`ditcache.TeaCacheConfig` (vLLM-Omni's ``abs()`` rule); ``overrides`` sets further
    fields of :class:`ditcache.TeaCacheConfig` (e.g. ``taylorseer``); an ``rtol`` there replaces the threshold."""
    extra = dict(overrides or {})
    if extra.get("rtol") is None:  # an error tolerance replaces the threshold
        extra["rel_l1_thresh"] = float(config.rel_l1_thresh)
    return ditcache.TeaCacheConfig(
        coefficients=None if config.coefficients is None else tuple(config.coefficients),
        abs_rescaled=True,
        num_inference_steps=num_inference_steps,
        **extra,
    )


def apply_teacache_hook(
    module: nn.Module, config: TeaCacheConfig | ditcache.TeaCacheConfig | Mapping[str, Any] | None = None
) -> ditcache.TeaCache:
    """Apply TeaCache to ``module`` (vLLM-Omni's signature); returns the TeaCache middleware in effect.

    ``config`` is vLLM-Omni's :class:`TeaCacheConfig`, a :class:`ditcache.TeaCacheConfig`, a dict of the latter's
    fields, or None. Raises ValueError for a ``transformer_type`` that is not the module's class or a model
    ditcache has no extractor for.
    """
    if isinstance(config, TeaCacheConfig):
        if config.transformer_type is not None and config.transformer_type != type(module).__name__:
            raise ValueError(
                f"TeaCacheConfig.transformer_type: {config.transformer_type!r} does not match the module's class "
                f"{type(module).__name__!r}; leave it None to use the module's own"
            )
        config = to_ditcache(config)
    return ditcache.apply_teacache_hook(module, config)
