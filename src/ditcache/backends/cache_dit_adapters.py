"""Declarative cache-dit adapter configs: which block lists of a transformer cache-dit wraps, and how.

diffusers' transformer classes carry no cache-dit declaration (vLLM-Omni puts a ``_cache_dit_adapter_config``
class attribute on its own model classes), so ditcache keeps a table keyed by class name. Each entry is one line;
an entry was added only after running cache-dit's DBCache through it on a tiny random model of the class and
checking that a never-caching setting reproduces the model's native output exactly, that a permissive one caches
steps, and that disabling restores the native forward (``tests/backends/test_backend_adapter_table.py``). Classes
cache-dit cannot serve exactly are listed in :data:`REFUSED` with the reason, and the backend refuses them at enable.
A pipeline with a ``controlnet`` component is refused too (:data:`CONTROLNET_REFUSAL`).

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
from cache_dit.caching.patch_functors import (
    BriaFiboPatchFunctor,
    ChromaPatchFunctor,
    DiTPatchFunctor,
    ErnieImagePatchFunctor,
    HiDreamPatchFunctor,
    PatchFunctor,
    WanVACEPatchFunctor,
)

__all__ = [
    "ADAPTER_CONFIGS",
    "CONTROLNET_REFUSAL",
    "OVERRIDABLE_FIELDS",
    "PIPELINE_ADAPTER_CONFIGS",
    "REFUSED",
    "CacheDiTAdapterConfig",
    "find_adapter_config",
    "refusal_reason",
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
        patch_functor: a cache-dit ``PatchFunctor`` that rewrites the transformer's forward (and some block
            forwards) before caching, for models whose block loop does per-block work cache-dit's fused blocks
            cannot repeat (e.g. Chroma's per-block modulation slices, HiDream's per-block text tokens). It patches
            the transformer when the ``BlockAdapter`` is built; the backend's ``disable`` restores the forwards.
    """

    block_forward_patterns: dict[str, ForwardPattern]
    has_separate_cfg: bool = False
    cached_adapter_cls: type | None = None
    check_forward_pattern: bool = True
    cache_config_overrides: Mapping[str, Any] = field(default_factory=dict)
    patch_functor: PatchFunctor | None = None

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
        if self.patch_functor is not None and not isinstance(self.patch_functor, PatchFunctor):
            raise TypeError(
                "CacheDiTAdapterConfig.patch_functor: expected a cache_dit PatchFunctor instance (e.g. "
                f"ChromaPatchFunctor()) or None, got {self.patch_functor!r}"
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
_Cfg = CacheDiTAdapterConfig

# Recurring block-list shapes (attribute -> pattern). Pattern_0: (h, e) -> (h, e); Pattern_1: (h, e) -> (e, h);
# Pattern_2: (h, e) -> h; Pattern_3: h -> h (other arguments passed through).
_TB0, _TB1, _TB2, _TB3 = ({"transformer_blocks": p} for p in (_P0, _P1, _P2, _P3))
_BLOCKS2, _BLOCKS3, _LAYERS3 = {"blocks": _P2}, {"blocks": _P3}, {"layers": _P3}
_DUAL_P0 = {"transformer_blocks": _P0, "single_transformer_blocks": _P0}  # HunyuanVideo-style double+single
_DUAL_P1 = {"transformer_blocks": _P1, "single_transformer_blocks": _P1}  # Flux-style double+single
_DUAL_P1_P3 = {"transformer_blocks": _P1, "single_transformer_blocks": _P3}  # single blocks on the joint sequence

_FLUX2 = _Cfg(_DUAL_P1_P3)

ADAPTER_CONFIGS: dict[str, CacheDiTAdapterConfig] = {
    # Flux-style double + single streams
    "FluxTransformer2DModel": _Cfg(_DUAL_P1),
    "Flux2Transformer2DModel": _FLUX2,
    "BriaTransformer2DModel": _Cfg(_DUAL_P1),
    "LongCatImageTransformer2DModel": _Cfg(_DUAL_P1, has_separate_cfg=True),
    "OvisImageTransformer2DModel": _Cfg(_DUAL_P1, has_separate_cfg=True),
    "BriaFiboTransformer2DModel": _Cfg(_DUAL_P1, check_forward_pattern=False, patch_functor=BriaFiboPatchFunctor()),
    "ChromaTransformer2DModel": _Cfg(_DUAL_P1_P3, has_separate_cfg=True, patch_functor=ChromaPatchFunctor()),
    "AuraFlowTransformer2DModel": _Cfg({"joint_transformer_blocks": _P1, "single_transformer_blocks": _P3}),
    "HiDreamImageTransformer2DModel": _Cfg(
        {"double_stream_blocks": _P0, "single_stream_blocks": _P3}, patch_functor=HiDreamPatchFunctor()
    ),
    # HunyuanVideo-style double + single streams
    "HunyuanVideoTransformer3DModel": _Cfg(_DUAL_P0),
    "HunyuanVideoFramepackTransformer3DModel": _Cfg(_DUAL_P0),
    "HunyuanImageTransformer2DModel": _Cfg(_DUAL_P0, has_separate_cfg=True),
    "MotifVideoTransformer3DModel": _Cfg(_DUAL_P0),
    # one list of joint (hidden, encoder) blocks
    "SD3Transformer2DModel": _Cfg(_TB1),
    "QwenImageTransformer2DModel": _Cfg(_TB1, has_separate_cfg=True),
    "CogVideoXTransformer3DModel": _Cfg(_TB0),
    "CogView3PlusTransformer2DModel": _Cfg(_TB0),
    "CogView4Transformer2DModel": _Cfg(_TB0, has_separate_cfg=True),
    "EasyAnimateTransformer3DModel": _Cfg(_TB0),
    "HunyuanVideo15Transformer3DModel": _Cfg(_TB0, has_separate_cfg=True),
    "MochiTransformer3DModel": _Cfg(_TB0),
    "JoyImageEditTransformer3DModel": _Cfg({"double_blocks": _P0}, has_separate_cfg=True),
    "JoyImageEditPlusTransformer3DModel": _Cfg({"double_blocks": _P0}),
    # blocks that return the hidden states only (cross-attention to a fixed encoder sequence)
    "AllegroTransformer3DModel": _Cfg(_TB2),
    "CosmosTransformer3DModel": _Cfg(_TB2, has_separate_cfg=True),
    "LTXVideoTransformer3DModel": _Cfg(_TB2),
    "NucleusMoEImageTransformer2DModel": _Cfg(_TB2, has_separate_cfg=True),
    "WanTransformer3DModel": _Cfg(_BLOCKS2, has_separate_cfg=True),
    "WanVACETransformer3DModel": _Cfg(_BLOCKS2, has_separate_cfg=True, patch_functor=WanVACEPatchFunctor()),
    "ChronoEditTransformer3DModel": _Cfg(_BLOCKS2, has_separate_cfg=True),
    "HeliosTransformer3DModel": _Cfg(_BLOCKS2, has_separate_cfg=True),
    "AnyFlowTransformer3DModel": _Cfg(_BLOCKS2),
    # hidden states only in and out (the conditioning passes through as other arguments)
    "PixArtTransformer2DModel": _Cfg(_TB3),
    "SanaTransformer2DModel": _Cfg(_TB3),
    "SanaVideoTransformer3DModel": _Cfg(_TB3),
    "StableAudioDiTModel": _Cfg(_TB3),
    "StableAudio3DiTModel": _Cfg(_TB3),
    "MiniMaxMusic3Transformer1DModel": _Cfg(_TB3),
    "Krea2Transformer2DModel": _Cfg(_TB3, has_separate_cfg=True),
    "DiTTransformer2DModel": _Cfg(_TB3, patch_functor=DiTPatchFunctor()),
    "SkyReelsV2Transformer3DModel": _Cfg(_BLOCKS3, has_separate_cfg=True),
    "PRXTransformer2DModel": _Cfg(_BLOCKS3),
    "LongCatAudioDiTTransformer": _Cfg(_BLOCKS3, has_separate_cfg=True),
    "Lumina2Transformer2DModel": _Cfg(_LAYERS3),
    "LuminaNextDiT2DModel": _Cfg(_LAYERS3),
    "OmniGenTransformer2DModel": _Cfg(_LAYERS3),
    "Ideogram4Transformer2DModel": _Cfg(_LAYERS3),
    # blocks whose first argument is not named hidden_states: no signature check
    "ZImageTransformer2DModel": _Cfg(_LAYERS3, check_forward_pattern=False),
    "ErnieImageTransformer2DModel": _Cfg(_LAYERS3, check_forward_pattern=False, patch_functor=ErnieImagePatchFunctor()),
    "Kandinsky5Transformer3DModel": _Cfg(
        {"visual_transformer_blocks": _P3}, has_separate_cfg=True, check_forward_pattern=False
    ),
}
"""Transformer class name -> its cache-dit adapter config (diffusers classes verified on tiny models)."""

PIPELINE_ADAPTER_CONFIGS: dict[str, CacheDiTAdapterConfig] = {
    # FLUX.2 [klein] loses quality with one Fn block (vLLM-Omni's pre-#2527 enabler; lost in #2527, review item 1).
    "Flux2KleinPipeline": dataclasses.replace(_FLUX2, cache_config_overrides={"Fn_compute_blocks": 2}),
}
"""Pipeline class name -> adapter config, for pipelines that need more than their transformer's entry."""


REFUSED: dict[str, str] = {
    "AceStepTransformer1DModel": "its forward reads self.layers[0].self_attn (an AttributeError on cache-dit's "
    "fused block list) and gives its sliding- and full-attention layers different masks inside the block loop, "
    "which cache-dit's fused blocks (one call's arguments for all layers) cannot reproduce",
    "ConsisIDTransformer3DModel": "its face-identity cross-attention runs inside the block loop every "
    "cross_attn_interval blocks; cache-dit's fused blocks skip it, so the output differs from the native forward "
    "even when no step is cached",
    "WanAnimateTransformer3DModel": "its face-adapter cross-attention is added inside the block loop every "
    "inject_face_latents_blocks blocks; cache-dit's fused blocks skip it, so the output differs from the native "
    "forward even when no step is cached",
}
"""Covered transformer classes cache-dit cannot serve exactly: class name -> reason (refused at enable)."""

CONTROLNET_REFUSAL = (
    "ControlNet residuals are added to the hidden states block by block inside the transformer's block loop; "
    "cache-dit's fused blocks run the whole list with the first block's arguments, so the residuals are lost or "
    "misplaced and the output differs from the native forward even when no step is cached (SD3 crashes)"
)
"""Why a pipeline with a ``controlnet`` component is refused at enable."""


def refusal_reason(transformer: Any) -> str | None:
    """Why cache-dit cannot serve ``transformer``'s class (:data:`REFUSED`), or None. A transformer that declares
    its own ``_cache_dit_adapter_config`` (vLLM-Omni models) is never refused."""
    if isinstance(getattr(type(transformer), "_cache_dit_adapter_config", None), CacheDiTAdapterConfig):
        return None
    return REFUSED.get(type(transformer).__name__)


def find_adapter_config(transformer: Any, pipeline: Any = None) -> CacheDiTAdapterConfig | None:
    """The adapter config for ``transformer`` in ``pipeline`` (see the module docstring), or None."""
    declared = getattr(type(transformer), "_cache_dit_adapter_config", None)
    if isinstance(declared, CacheDiTAdapterConfig):
        return declared
    if pipeline is not None and type(pipeline).__name__ in PIPELINE_ADAPTER_CONFIGS:
        return PIPELINE_ADAPTER_CONFIGS[type(pipeline).__name__]
    return ADAPTER_CONFIGS.get(type(transformer).__name__)
