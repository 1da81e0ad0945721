"""Declarative cache-dit adapter configs: which block lists of a transformer cache-dit wraps, and how.

diffusers' transformer classes carry no cache-dit declaration (vLLM-Omni puts a ``_cache_dit_adapter_config``
class attribute on its own model classes), so ditcache keeps a table keyed by class name. Each entry is one line;
an entry was added only after running cache-dit's DBCache through it on a tiny random model of the class and
checking that a never-caching setting reproduces the model's native output exactly (``tests/backends``).

Lookup order for a pipeline's transformer (:func:`find_adapter_config`): a ``_cache_dit_adapter_config``
attribute on the transformer (vLLM-Omni models), then :data:`PIPELINE_ADAPTER_CONFIGS` by the pipeline's class
(per-pipeline overrides, e.g. FLUX.2 [klein] needs ``Fn_compute_blocks=2``), then :data:`ADAPTER_CONFIGS` by the
transformer's class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cache_dit import DBCacheConfig, ForwardPattern

__all__ = [
    "ADAPTER_CONFIGS",
    "OVERRIDABLE_FIELDS",
    "PIPELINE_ADAPTER_CONFIGS",
    "CacheDiTAdapterConfig",
    "find_adapter_config",
]

OVERRIDABLE_FIELDS = frozenset(f.name for f in dataclasses.fields(DBCacheConfig)) - {
    "cache_type",
    "num_inference_steps",
    "steps_computation_mask",
}
"""The cache-dit ``DBCacheConfig`` fields a model may override (the per-request ones are set by ``refresh``)."""


@dataclass(frozen=True)
class CacheDiTAdapterConfig:
    """How cache-dit wraps one transformer class (vLLM-Omni's fields, plus ``cache_config_overrides``).

    Attributes:
        block_forward_patterns: block-list attribute name on the transformer -> cache-dit ``ForwardPattern``, in
            the order the forward runs them.
        has_separate_cfg: the pipeline calls the transformer once for cond and once for uncond per step.
        cached_adapter_cls: a custom cache-dit ``CachedAdapter`` whose ``apply`` replaces ``cache_dit.enable_cache``.
        check_forward_pattern: let cache-dit check the block signatures against the patterns.
        cache_config_overrides: cache-dit ``DBCacheConfig`` fields this model always uses, whatever the request's
            config (applied at enable and again at every refresh, SCM included).
    """

    block_forward_patterns: dict[str, ForwardPattern]
    has_separate_cfg: bool = False
    cached_adapter_cls: type | None = None
    check_forward_pattern: bool = True
    cache_config_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        patterns = self.block_forward_patterns
        if not isinstance(patterns, Mapping) or not patterns:
            raise ValueError(
                "CacheDiTAdapterConfig.block_forward_patterns: expected a non-empty dict of block-list attribute "
                f"-> cache_dit.ForwardPattern, got {patterns!r}"
            )
        for attr, pattern in patterns.items():
            if not isinstance(attr, str) or not isinstance(pattern, ForwardPattern):
                raise ValueError(
                    f"CacheDiTAdapterConfig.block_forward_patterns: {attr!r} -> {pattern!r}; expected a block-list "
                    f"attribute name -> one of {[p.name for p in ForwardPattern]}"
                )
        unknown = sorted(set(self.cache_config_overrides) - OVERRIDABLE_FIELDS)
        if unknown:
            raise ValueError(
                f"CacheDiTAdapterConfig.cache_config_overrides: unknown cache-dit field(s) {unknown}; allowed: "
                f"{sorted(OVERRIDABLE_FIELDS)}"
            )
        for name in ("has_separate_cfg", "check_forward_pattern"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"CacheDiTAdapterConfig.{name}: expected True or False, got {getattr(self, name)!r}")


_P0, _P1, _P2, _P3 = (
    ForwardPattern.Pattern_0,
    ForwardPattern.Pattern_1,
    ForwardPattern.Pattern_2,
    ForwardPattern.Pattern_3,
)

_FLUX2 = CacheDiTAdapterConfig({"transformer_blocks": _P1, "single_transformer_blocks": _P3})

ADAPTER_CONFIGS: dict[str, CacheDiTAdapterConfig] = {
    "FluxTransformer2DModel": CacheDiTAdapterConfig({"transformer_blocks": _P1, "single_transformer_blocks": _P1}),
    "Flux2Transformer2DModel": _FLUX2,
    "QwenImageTransformer2DModel": CacheDiTAdapterConfig({"transformer_blocks": _P1}, has_separate_cfg=True),
    "WanTransformer3DModel": CacheDiTAdapterConfig({"blocks": _P2}, has_separate_cfg=True),
    "SD3Transformer2DModel": CacheDiTAdapterConfig({"transformer_blocks": _P1}),
    "CogView4Transformer2DModel": CacheDiTAdapterConfig({"transformer_blocks": _P0}, has_separate_cfg=True),
    "LTXVideoTransformer3DModel": CacheDiTAdapterConfig({"transformer_blocks": _P2}),
}
"""Transformer class name -> its cache-dit adapter config (diffusers classes verified on tiny models)."""

PIPELINE_ADAPTER_CONFIGS: dict[str, CacheDiTAdapterConfig] = {
    # FLUX.2 [klein] loses quality with one Fn block (vLLM-Omni's pre-#2527 enabler; lost in #2527, review item 1).
    "Flux2KleinPipeline": dataclasses.replace(_FLUX2, cache_config_overrides={"Fn_compute_blocks": 2}),
}
"""Pipeline class name -> adapter config, for pipelines that need more than their transformer's entry."""


def find_adapter_config(transformer: Any, pipeline: Any = None) -> CacheDiTAdapterConfig | None:
    """The adapter config for ``transformer`` in ``pipeline`` (see the module docstring), or None."""
    declared = getattr(type(transformer), "_cache_dit_adapter_config", None)
    if isinstance(declared, CacheDiTAdapterConfig):
        return declared
    if pipeline is not None and type(pipeline).__name__ in PIPELINE_ADAPTER_CONFIGS:
        return PIPELINE_ADAPTER_CONFIGS[type(pipeline).__name__]
    return ADAPTER_CONFIGS.get(type(transformer).__name__)
