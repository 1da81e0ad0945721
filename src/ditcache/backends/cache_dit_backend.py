"""cache-dit backend: vLLM-Omni's ``vllm_omni.diffusion.cache.cache_dit_backend`` on the real cache-dit library.

DBCache, SCM masks and TaylorSeer come from cache-dit itself (``BlockAdapter``, ``ForwardPattern``,
``ParamsModifier``, ``DBCacheConfig``, ``TaylorSeerCalibratorConfig``, ``steps_mask``, ``refresh_context``,
``summary``, ``disable_cache``). This module only decides what to wrap and when to refresh:

* the generic enabler builds a ``BlockAdapter`` from the transformer's :class:`CacheDiTAdapterConfig`
  (``ditcache.backends.cache_dit_adapters``); a transformer without one falls back to cache-dit's own registry;
* :data:`CUSTOM_DIT_ENABLERS`, keyed by pipeline class name, handles the odd pipelines; Wan 2.2 caches one or both
  experts and refreshes each with its share of the request's steps (split at the pipeline's ``boundary_ratio``);
* every refresh rebuilds the cache contexts for the request's step count, with the SCM mask for that count when
  cache-dit's ``steps_mask`` can build one (a plain, mask-free schedule otherwise), the force-refresh hint re-armed,
  and the model's declared config overrides applied again.

Fixes of vLLM-Omni PR #2527's review: per-model overrides (``cache_config_overrides``; FLUX.2 [klein]
``Fn_compute_blocks=2``, also on SCM refresh), ``check_forward_pattern`` passed to the ``BlockAdapter``, and the
pipeline accessor not hard-coded to ``pipeline.transformer`` (``pipeline._dit_modules`` or
``ditcache.backends.base.PIPELINE_DIT_MODULES``). ``cache_dit`` and ``BlockAdapter`` are module globals looked up
at call time, so they can be patched.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import cache_dit
from cache_dit import BlockAdapter, DBCacheConfig, ForwardPattern, ParamsModifier, TaylorSeerCalibratorConfig
from torch import nn

from ditcache.backends.base import (
    CacheBackend,
    coerce_cache_config,
    dit_module_names,
    no_dit_module_error,
    split_inference_steps,
)
from ditcache.backends.cache_dit_adapters import (
    ADAPTER_CONFIGS,
    CONTROLNET_REFUSAL,
    CacheDiTAdapterConfig,
    find_adapter_config,
    refusal_reason,
)
from ditcache.backends.data import DiffusionCacheConfig
from ditcache.caches.step_masks import preset_available
from ditcache.core.log import get_logger

__all__ = [
    "CUSTOM_DIT_ENABLERS",
    "WAN22_LOW_NOISE_OVERRIDES",
    "CacheDiTAdapterConfig",
    "CacheDiTBackend",
    "ModuleSnapshot",
    "RefreshCacheContextFunc",
    "build_cache_context_refresh",
    "cache_summary",
    "default_get_pipeline_transformer",
    "enable_cache_for_dit",
    "enable_cache_for_wan22",
    "may_enable_cache_dit",
    "scm_supported",
]

logger = get_logger("ditcache.backends.cache_dit")

scm_supported = preset_available
"""Whether cache-dit's ``steps_mask`` builds masks for a step count (4, 6 or at least 8): the rule of
:func:`ditcache.caches.step_masks.preset_available`, under this module's old name."""

RefreshCacheContextFunc: TypeAlias = Callable[[Any, int, bool], None]
"""``refresh(pipeline, num_inference_steps, verbose)``: rebuild the cache contexts for a new request."""

WAN22_LOW_NOISE_OVERRIDES: dict[str, Any] = {"max_warmup_steps": 2, "max_cached_steps": 20}
"""cache-dit settings of Wan 2.2's low-noise expert (vLLM-Omni's values: it runs few of the steps)."""


# ---------------------------------------------------------------------------------------------- configs
def default_get_pipeline_transformer(pipeline: Any) -> Any:
    """The pipeline's main DiT: the first of its DiT modules (``transformer`` unless it declares others)."""
    names = dit_module_names(pipeline)
    if not names:
        raise no_dit_module_error(pipeline, "cache_dit")
    return operator.attrgetter(names[0])(pipeline)


def _effective(cache_config: DiffusionCacheConfig, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    values = {
        "Fn_compute_blocks": cache_config.Fn_compute_blocks,
        "Bn_compute_blocks": cache_config.Bn_compute_blocks,
        "max_warmup_steps": cache_config.max_warmup_steps,
        "max_cached_steps": cache_config.max_cached_steps,
        "max_continuous_cached_steps": cache_config.max_continuous_cached_steps,
        "residual_diff_threshold": cache_config.residual_diff_threshold,
        "force_refresh_step_hint": cache_config.force_refresh_step_hint,
        "force_refresh_step_policy": cache_config.force_refresh_step_policy,
    }
    values.update(overrides or {})
    return values


def _build_db_cache_config(
    cache_config: DiffusionCacheConfig, overrides: Mapping[str, Any] | None = None
) -> DBCacheConfig:
    """The enable-time cache-dit config (the step count comes with the first refresh)."""
    return DBCacheConfig(num_inference_steps=None, **_effective(cache_config, overrides))


def _resolve_calibrator_config(cache_config: DiffusionCacheConfig) -> TaylorSeerCalibratorConfig | None:
    if not cache_config.enable_taylorseer:
        return None
    return TaylorSeerCalibratorConfig(taylorseer_order=cache_config.taylorseer_order)


def _check_block_counts(transformer: nn.Module, blocks: list[Any], values: Mapping[str, Any]) -> None:
    # cache-dit asserts these at the first forward; refuse them at enable instead.
    fn, bn = values["Fn_compute_blocks"], values["Bn_compute_blocks"]
    for b in blocks:
        n = len(b)
        if fn > n or bn > n:
            raise ValueError(
                f"cache_dit: Fn_compute_blocks={fn} / Bn_compute_blocks={bn} exceed a block list of "
                f"{type(transformer).__name__} with {n} blocks; allowed: Fn_compute_blocks in [1, {n}], "
                f"Bn_compute_blocks in [0, {n}]"
            )


def build_block_adapter(transformer: nn.Module, adapter_config: CacheDiTAdapterConfig, **kwargs: Any) -> Any:
    """A ``BlockAdapter`` for ``transformer`` from its adapter config (missing block lists: ValueError).

    With a ``patch_functor`` in the config, building the adapter patches the transformer's forwards (cache-dit
    applies the functor in ``BlockAdapter.__post_init__``); :class:`ModuleSnapshot` undoes that.
    """
    names = list(adapter_config.block_forward_patterns)
    missing = [n for n in names if not isinstance(getattr(transformer, n, None), nn.ModuleList)]
    if missing:
        lists = [n for n, m in transformer.named_children() if isinstance(m, nn.ModuleList)]
        raise ValueError(
            f"cache_dit: {type(transformer).__name__} has no block list(s) {missing} declared by its "
            f"CacheDiTAdapterConfig; its ModuleLists: {lists}"
        )
    return BlockAdapter(
        transformer=transformer,
        blocks=[getattr(transformer, n) for n in names],
        forward_pattern=list(adapter_config.block_forward_patterns.values()),
        has_separate_cfg=adapter_config.has_separate_cfg,
        check_forward_pattern=adapter_config.check_forward_pattern,
        patch_functor=adapter_config.patch_functor,
        **kwargs,
    )


_MISSING = object()
_PATCH_ATTRS = ("forward", "_is_patched", "_orig_forward")
"""Instance attributes cache-dit's patch functors set on a transformer and its blocks (and that cache-dit's
``disable_cache`` leaves behind)."""


class ModuleSnapshot:
    """The instance-level forwards, patch flags and child modules of a module tree, to restore after cache-dit.

    cache-dit's ``disable_cache`` puts back the forward it found at enable, which is the patch functor's forward
    when a functor ran; block forwards patched by a functor stay patched. :meth:`restore` returns every module of
    the tree to the snapshot: each ``forward`` / ``_is_patched`` / ``_orig_forward`` instance attribute as it was
    (removed when it was absent) and each child module (block lists included) the very object it was, in the
    same order (so ``named_modules``, ``parameters`` and ``state_dict`` keep theirs).
    """

    def __init__(self, root: nn.Module) -> None:
        self._entries = [
            (m, {a: m.__dict__.get(a, _MISSING) for a in _PATCH_ATTRS}, dict(m._modules)) for m in root.modules()
        ]

    def restore(self) -> None:
        for module, attrs, children in self._entries:
            for name, value in attrs.items():
                if value is _MISSING:
                    module.__dict__.pop(name, None)
                else:
                    module.__dict__[name] = value
            now = module._modules
            # cache-dit swaps the block lists during each forward (unittest.mock.patch.object, whose exit deletes
            # and re-adds the attribute), which moves them to the end of ``_modules``: restore the order too.
            if list(now) != list(children) or any(now[k] is not v for k, v in children.items()):
                module._modules.clear()
                module._modules.update(children)


# ---------------------------------------------------------------------------------------------- refresh
def build_cache_context_refresh(
    cache_config: DiffusionCacheConfig,
    get_pipeline_transformer: Callable[[Any], Any] = default_get_pipeline_transformer,
    *,
    cache_config_overrides: Mapping[str, Any] | None = None,
) -> RefreshCacheContextFunc:
    """The refresh function of one transformer: rebuild its cache contexts for ``num_inference_steps`` steps.

    With an SCM policy and a step count ``steps_mask`` supports, the context gets that mask; for other step counts
    it gets a mask equivalent to no mask (the warm-up computed, every later step left to the threshold test), so a
    mask from an earlier request never leaks into this one. The force-refresh hint and the model's overrides are
    passed again every time.
    """
    overrides = dict(cache_config_overrides or {})

    def refresh(pipeline: Any, num_inference_steps: int, verbose: bool = True) -> None:
        transformer = get_pipeline_transformer(pipeline)
        n = num_inference_steps
        fields: dict[str, Any] = {"num_inference_steps": n}
        policy = cache_config.scm_steps_mask_policy
        if policy is not None:
            if preset_available(n):
                fields["steps_computation_mask"] = cache_dit.steps_mask(mask_policy=policy, total_steps=n)
                fields["steps_computation_policy"] = cache_config.scm_steps_policy
            else:
                warmup = min(int(overrides.get("max_warmup_steps", cache_config.max_warmup_steps)), n)
                fields["steps_computation_mask"] = [1] * warmup + [0] * (n - warmup)
                fields["steps_computation_policy"] = "dynamic"
                logger.warning(
                    "cache_dit.scm_skipped",
                    num_inference_steps=n,
                    policy=policy,
                    note="cache-dit has SCM masks for 4, 6 and >= 8 steps; this request runs without a mask",
                )
        if cache_config.force_refresh_step_hint is not None:
            fields["force_refresh_step_hint"] = cache_config.force_refresh_step_hint
            fields["force_refresh_step_policy"] = cache_config.force_refresh_step_policy
        fields.update(overrides)
        cache_dit.refresh_context(transformer, cache_config=DBCacheConfig().reset(**fields), verbose=verbose)

    return refresh


def _combine(funcs: list[RefreshCacheContextFunc]) -> RefreshCacheContextFunc:
    def refresh(pipeline: Any, num_inference_steps: int, verbose: bool = True) -> None:
        for func in funcs:
            func(pipeline, num_inference_steps, verbose)

    return refresh


# ---------------------------------------------------------------------------------------------- enablers
def enable_cache_for_dit(
    pipeline: Any,
    cache_config: Any,
    block_adapter: Any | None = None,
    adapter_cls: type | None = None,
    *,
    get_pipeline_transformer: Callable[[Any], Any] = default_get_pipeline_transformer,
    cache_config_overrides: Mapping[str, Any] | None = None,
) -> RefreshCacheContextFunc:
    """Enable cache-dit on one DiT of ``pipeline``; returns its refresh function.

    ``block_adapter`` is the ``BlockAdapter`` to cache (None: cache-dit's registry for the transformer's class);
    ``adapter_cls`` a custom ``CachedAdapter`` whose ``apply`` replaces ``cache_dit.enable_cache``;
    ``cache_config_overrides`` the model's fixed cache-dit settings.
    """
    config = coerce_cache_config(cache_config)
    transformer = get_pipeline_transformer(pipeline)
    db_cache_config = _build_db_cache_config(config, cache_config_overrides)
    calibrator_config = _resolve_calibrator_config(config)
    target = transformer if block_adapter is None else block_adapter
    if adapter_cls is not None:
        adapter_cls.apply(target, cache_config=db_cache_config, calibrator_config=calibrator_config)  # type: ignore[attr-defined]
    else:
        cache_dit.enable_cache(target, cache_config=db_cache_config, calibrator_config=calibrator_config)
    return build_cache_context_refresh(config, get_pipeline_transformer, cache_config_overrides=cache_config_overrides)


def enable_cache_for_wan22(pipeline: Any, cache_config: Any) -> RefreshCacheContextFunc:
    """Enable cache-dit on a Wan 2.1/2.2 pipeline with one or two transformers (the experts of Wan 2.2 A14B).

    Both experts are wrapped by one ``BlockAdapter`` (``blocks``, Pattern_2, separate CFG) with a
    ``ParamsModifier`` each (the low-noise expert uses :data:`WAN22_LOW_NOISE_OVERRIDES`). The refresh splits
    the request's steps at ``boundary_ratio`` and refreshes each expert with its own count (and SCM mask).
    """
    config = coerce_cache_config(cache_config)
    db = _build_db_cache_config(config)
    calibrator = _resolve_calibrator_config(config)
    t1 = pipeline.transformer
    t2 = getattr(pipeline, "transformer_2", None)
    transformers = [t1] if t2 is None else [t1, t2]
    for t in transformers:
        _check_block_counts(t, [t.blocks], _effective(config, WAN22_LOW_NOISE_OVERRIDES if t is t2 else None))
    if t2 is None:
        adapter = BlockAdapter(
            transformer=t1,
            blocks=[t1.blocks],
            forward_pattern=[ForwardPattern.Pattern_2],
            params_modifiers=[ParamsModifier(cache_config=db, calibrator_config=calibrator)],
            has_separate_cfg=True,
        )
        cache_dit.enable_cache(adapter, cache_config=db, calibrator_config=calibrator)
        return build_cache_context_refresh(config, lambda p: p.transformer)
    modifiers = [
        ParamsModifier(
            cache_config=DBCacheConfig().reset(
                max_warmup_steps=config.max_warmup_steps, max_cached_steps=config.max_cached_steps
            ),
            calibrator_config=calibrator,
        ),
        ParamsModifier(cache_config=DBCacheConfig().reset(**WAN22_LOW_NOISE_OVERRIDES), calibrator_config=calibrator),
    ]
    adapter = BlockAdapter(
        transformer=[t1, t2],
        blocks=[t1.blocks, t2.blocks],
        forward_pattern=[ForwardPattern.Pattern_2, ForwardPattern.Pattern_2],
        params_modifiers=modifiers,
        has_separate_cfg=True,
    )
    cache_dit.enable_cache(adapter, cache_config=db, calibrator_config=calibrator)
    high_refresh = build_cache_context_refresh(config, lambda p: p.transformer)
    low_refresh = build_cache_context_refresh(
        config, lambda p: p.transformer_2, cache_config_overrides=WAN22_LOW_NOISE_OVERRIDES
    )

    def refresh(p: Any, num_inference_steps: int, verbose: bool = True) -> None:
        high, low = split_inference_steps(p, num_inference_steps)
        # An expert that runs no step this request is left alone (it is refreshed before it runs again).
        if high:
            high_refresh(p, high, verbose)
        if low:
            low_refresh(p, low, verbose)

    return refresh


CUSTOM_DIT_ENABLERS: dict[str, Callable[[Any, Any], RefreshCacheContextFunc]] = {
    "WanPipeline": enable_cache_for_wan22,
    "WanImageToVideoPipeline": enable_cache_for_wan22,
    "Wan22Pipeline": enable_cache_for_wan22,
    "Wan22I2VPipeline": enable_cache_for_wan22,
    "Wan22TI2VPipeline": enable_cache_for_wan22,
}
"""Pipeline class name -> enabler ``(pipeline, cache_config) -> refresh function`` for pipelines the generic
path cannot serve. Add an entry to support a new odd pipeline."""


# ---------------------------------------------------------------------------------------------- backend
class CacheDiTBackend(CacheBackend):
    """cache-dit (DBCache, SCM, TaylorSeer) on a pipeline's DiT(s).

    Attributes:
        _refresh_func: the refresh function of the pipeline (all its DiTs), set by :meth:`enable`.
        _last_num_inference_steps: the step count of the last refresh.
    """

    name = "cache_dit"

    def __init__(self, cache_config: DiffusionCacheConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__(cache_config)
        self._refresh_func: RefreshCacheContextFunc | None = None
        self._cache_targets: list[Any] = []
        self._snapshots: list[ModuleSnapshot] = []

    @staticmethod
    def maybe_build_block_adapter(pipeline: Any, transformer: Any = None) -> Any | None:
        """The ``BlockAdapter`` of the pipeline's transformer from its adapter config, or None without one."""
        transformer = default_get_pipeline_transformer(pipeline) if transformer is None else transformer
        adapter_config = find_adapter_config(transformer, pipeline)
        return None if adapter_config is None else build_block_adapter(transformer, adapter_config)

    @staticmethod
    def maybe_get_cached_adapter_cls(pipeline: Any, transformer: Any = None) -> type | None:
        """The custom ``CachedAdapter`` declared in the transformer's adapter config, or None."""
        transformer = default_get_pipeline_transformer(pipeline) if transformer is None else transformer
        adapter_config = find_adapter_config(transformer, pipeline)
        return None if adapter_config is None else adapter_config.cached_adapter_cls

    def enable(self, pipeline: Any) -> None:
        """Enable cache-dit on the pipeline's DiT(s). A bad config or an unsupported transformer raises here,
        with the pipeline left uncached."""
        if self.enabled:
            self.disable(pipeline)
        self.config.validate()
        if self.config.mag_calibrate:
            raise ValueError("DiffusionCacheConfig.mag_calibrate: is a MagCache setting; cache_dit cannot calibrate")
        pipeline_name = type(pipeline).__name__
        names = dit_module_names(pipeline)
        if not names:
            raise no_dit_module_error(pipeline, self.name)
        if getattr(pipeline, "controlnet", None) is not None:
            raise ValueError(
                f"cache_dit: pipeline {pipeline_name} has a controlnet, which cache-dit cannot serve: "
                f"{CONTROLNET_REFUSAL}; use the ditcache backend"
            )
        custom = pipeline_name in CUSTOM_DIT_ENABLERS
        if not custom:  # the generic path caches the declared DiTs, or ``transformer`` only
            names = dit_module_names(pipeline, default=("transformer",))
        targets = [operator.attrgetter(n)(pipeline) for n in names]
        for name, target in zip(names, targets, strict=True):
            reason = refusal_reason(target)
            if reason is not None:
                raise ValueError(
                    f"cache_dit: {type(target).__name__} (pipeline {pipeline_name}.{name}) is refused: {reason}; "
                    "use the ditcache backend"
                )
        self._snapshots = [ModuleSnapshot(t) for t in targets if isinstance(t, nn.Module)]
        try:
            if custom:
                self._refresh_func = CUSTOM_DIT_ENABLERS[pipeline_name](pipeline, self.config)
                self._cache_targets = targets
            else:
                self._refresh_func = _combine([self._enable_one(pipeline, name) for name in names])
        except BaseException:
            self._disable_targets(targets)
            self._restore_snapshots()
            self._cache_targets = []
            self._refresh_func = None
            raise
        self.enabled = True
        logger.info("cache_dit.enabled", pipeline=pipeline_name, modules=list(names))

    def _enable_one(self, pipeline: Any, name: str) -> RefreshCacheContextFunc:
        transformer = operator.attrgetter(name)(pipeline)
        self._cache_targets.append(transformer)
        adapter_config = find_adapter_config(transformer, pipeline)
        overrides = None if adapter_config is None else dict(adapter_config.cache_config_overrides)
        values = _effective(self.config, overrides)
        if adapter_config is None:
            adapter = None
            adapter_cls = None
            if not any(type(transformer).__name__.startswith(p) for p in cache_dit.supported_pipelines()[1]):
                raise ValueError(
                    f"cache_dit: no CacheDiTAdapterConfig for {type(transformer).__name__} (pipeline "
                    f"{type(pipeline).__name__}) and cache-dit's registry does not know it; declared: "
                    f"{sorted(ADAPTER_CONFIGS)}; add one to ditcache.backends.cache_dit_adapters.ADAPTER_CONFIGS "
                    "or an enabler to CUSTOM_DIT_ENABLERS"
                )
        else:
            adapter = build_block_adapter(transformer, adapter_config)
            adapter_cls = adapter_config.cached_adapter_cls
            _check_block_counts(transformer, list(adapter.blocks), values)
        return enable_cache_for_dit(
            pipeline,
            self.config,
            adapter,
            adapter_cls,
            get_pipeline_transformer=operator.attrgetter(name),
            cache_config_overrides=overrides,
        )

    def _ready(self) -> bool:
        return self.enabled and self._refresh_func is not None

    def _refresh(self, pipeline: Any, num_inference_steps: int, verbose: bool) -> None:
        """Rebuild the cache contexts for the request's step count (every request: this also clears the previous
        request's cached residuals; cache-dit's automatic refresh is off by one step)."""
        assert self._refresh_func is not None
        self._refresh_func(pipeline, num_inference_steps, verbose)

    def disable(self, pipeline: Any) -> None:
        """Remove cache-dit from the pipeline's DiTs: cache-dit's ``disable_cache``, then every module of each DiT
        back to its state before :meth:`enable` (forwards a patch functor replaced, block lists)."""
        try:
            self._disable_targets(self._cache_targets)
            self._restore_snapshots()
        finally:
            self._snapshots = []
            self._cache_targets = []
            self._refresh_func = None
            self.enabled = False

    def _restore_snapshots(self) -> None:
        for snapshot in self._snapshots:
            snapshot.restore()
        self._snapshots = []

    @staticmethod
    def _disable_targets(targets: list[Any]) -> None:
        for target in targets:
            if getattr(target, "_is_cached", False):
                cache_dit.disable_cache(target)
            # cache-dit leaves the original forward behind as an instance attribute; drop it so the module is
            # exactly as before (its class's forward).
            forward = getattr(target, "__dict__", {}).get("forward")
            if getattr(forward, "__self__", None) is target and getattr(forward, "__func__", None) is getattr(
                type(target), "forward", None
            ):
                del target.__dict__["forward"]

    def stats(self, pipeline: Any) -> dict[str, list[Any]]:
        """Per cached DiT, cache-dit's ``CacheStats`` (``cached_steps``, ``residual_diffs``, ...), no logging."""
        out: dict[str, list[Any]] = {}
        for name in dit_module_names(pipeline):
            module = operator.attrgetter(name)(pipeline)
            if getattr(module, "_is_cached", False):
                out[name] = cache_dit.summary(module, details=True, logging=False)
        return out


def cache_summary(pipeline: Any, details: bool = True) -> None:
    """Log cache-dit's summary for each cached DiT of the pipeline (a warning, not an error, when there is none)."""
    found = False
    for name in dit_module_names(pipeline):
        module = operator.attrgetter(name)(pipeline)
        if getattr(module, "_is_cached", False):
            found = True
            cache_dit.summary(module, details=details)
    if not found:
        logger.warning("cache_dit.summary_skipped", pipeline=type(pipeline).__name__, reason="no cached DiT module")


def may_enable_cache_dit(pipeline: Any, od_config: Any) -> CacheDiTBackend | None:
    """Enable cache-dit when ``od_config.cache_backend`` is ``"cache_dit"`` (``"cache-dit"`` accepted too);
    returns the enabled backend or None. ``od_config`` is an object or a dict with ``cache_backend`` and
    ``cache_config``."""

    def get(key: str) -> Any:
        return od_config.get(key) if isinstance(od_config, Mapping) else getattr(od_config, key, None)

    if get("cache_backend") not in ("cache_dit", "cache-dit"):
        return None
    backend = CacheDiTBackend(get("cache_config"))
    backend.enable(pipeline)
    return backend
