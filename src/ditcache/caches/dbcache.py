"""DBCache, Dual Block Cache (cache-dit), as a block-level cache middleware.

Per CFG branch and per transformer call (``N`` blocks, ``Fn`` first and ``Bn`` last compute blocks):

1. the first ``Fn`` blocks always run: ``h_F, e_F = blocks[:Fn](h_0, e_0)`` and ``r_F = h_F - h_0``;
2. the gates decide, in cache-dit's ``can_cache`` order (first match wins):

   a. warm-up: ``step in range(0, W, I)`` computes (``W`` is capped at the mask's leading 1s when a step mask is
      set); ``force_last_step`` also computes the generation's last step when the step count is known;
   b. step computation mask: a ``1`` step computes; a ``0`` step with the ``"static"`` policy is cached with no
      test (``"dynamic"``: it goes on to the gates below);
   c. ``max_cached_steps``: that many cached steps in this generation -> compute;
   d. ``max_continuous_cached_steps``: that many cached steps in a row just before this one -> compute;
   e. ``max_accumulated_residual_diff_threshold``: the sum of the positive differences measured so far reached
      it -> compute;
   f. ``residual_diff_threshold <= 0`` never caches; nothing stored yet (step 0) computes; ``>= 1`` always caches
      without measuring;
   g. otherwise ``diff = mean|r_F - r_F'| / mean|r_F'|`` where ``r_F'`` is the ``r_F`` of the last *computed*
      step (it is not updated on cached steps), and the step is cached iff ``diff < residual_diff_threshold``
      (strictly);

3. cached: ``h = h_F + R_M`` and ``e = e_F + E_M`` with the middle blocks' residuals of the last computed step (or
   their TaylorSeer forecast), then the last ``Bn`` blocks run;
4. computed: ``r_F`` becomes the reference; the middle blocks run through the rest of the middleware stack
   (``call_next`` with the ``[Fn, N - Bn)`` slice), ``R_M = h_M - h_F`` and ``E_M = e_M - e_F`` are stored (none for
   a stream the blocks leave unchanged), then the last ``Bn`` blocks run.

The block stack of the context is sliced relative to what this middleware receives, so an outer middleware may hand
it a narrowed stack. ``Fn + Bn`` reaching the model's block count (no middle block left to cache) is refused when
the cache is applied; a call whose narrowed stack has no middle block computes it all and is recorded as computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from ditcache.caches.reuse import ForecastSettings, ResidualCache, settle_forecast
from ditcache.caches.step_masks import SCM_POLICIES, SCM_PRESETS, leading_compute_steps, resolve_mask, validate_mask
from ditcache.caches.taylorseer import FORECAST_METHODS
from ditcache.core.cache import CacheMiddleware, CallNextBlocks
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.extractor import Extractor
from ditcache.core.metrics import rel_l1
from ditcache.core.runtime import apply_cache
from ditcache.core.validators import (
    StrictConfig,
    accept_aliases,
    coerce_config,
    finite,
    int_ge,
    is_bool,
    one_of,
    optional,
    plain_scalar,
)

__all__ = ["DBCache", "DBCacheConfig", "apply_dbcache_hook"]


# ---------------------------------------------------------------------------------------------------- validators
def _unlimited(value: Any) -> Any:
    """cache-dit's ``-1`` (no limit) as None; NumPy scalars as Python ints."""
    value = plain_scalar(value)
    return None if (type(value) is int and value == -1) else value


def _mask_converter(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value in SCM_PRESETS):
        return value
    return validate_mask(value, "DBCacheConfig.steps_computation_mask")


# ---------------------------------------------------------------------------------------------------- config
@accept_aliases
@attrs.frozen(kw_only=True)
class DBCacheConfig(StrictConfig):
    """Settings of DBCache. Frozen and validated; unknown keys are refused by :meth:`from_dict`.

    Defaults are cache-dit 1.5.3's ``DBCacheConfig`` defaults (F8B0, W8, R0.08, no caps), except
    ``force_last_step`` (cache-dit caches the last step when the test allows it; set it False to match).
    cache-dit's spellings are accepted too, by the constructor and :meth:`from_dict`: ``Fn_compute_blocks``,
    ``Bn_compute_blocks``, and ``-1`` (no limit) for ``max_cached_steps`` and ``max_continuous_cached_steps``.
    """

    __setting_aliases__: ClassVar[Mapping[str, str]] = {
        "Fn_compute_blocks": "fn_compute_blocks",
        "Bn_compute_blocks": "bn_compute_blocks",
    }

    fn_compute_blocks: int = attrs.field(default=8, converter=plain_scalar, validator=int_ge(1))
    """``Fn``: first blocks always computed; the residual of their output is the cache's indicator."""
    bn_compute_blocks: int = attrs.field(default=0, converter=plain_scalar, validator=int_ge(0))
    """``Bn``: last blocks always computed, also on cached steps (they refine the approximated hidden states)."""
    residual_diff_threshold: float = attrs.field(
        default=0.08,
        converter=plain_scalar,
        validator=finite(
            hint="<= 0: never cache, >= 1: always cache, in between: cache while the residual difference is below it"
        ),
    )
    """``R``: cache while the rel-L1 difference of the ``Fn`` residual is strictly below it; ``<= 0`` never caches,
    ``>= 1`` always caches (after the gates) without measuring. Trained models: 0.08-0.24 (cache-dit benchmarks)."""
    max_warmup_steps: int = attrs.field(default=8, converter=plain_scalar, validator=int_ge(0))
    """``W``: the steps ``range(0, W, warmup_interval)`` are always computed."""
    warmup_interval: int = attrs.field(default=1, converter=plain_scalar, validator=int_ge(1))
    """``I``: with ``I > 1`` only every ``I``-th warm-up step is forced; the others are tested like later steps."""
    max_cached_steps: int | None = attrs.field(
        default=None, converter=_unlimited, validator=optional(int_ge(0), "no limit; -1 too")
    )
    """``M``: at most this many cached steps per branch and generation (None or -1: no limit; 0: never cache)."""
    max_continuous_cached_steps: int | None = attrs.field(
        default=None, converter=_unlimited, validator=optional(int_ge(0), "no limit; -1 too")
    )
    """``MC``: at most this many cached steps in a row (None or -1: no limit; 0: never cache)."""
    max_accumulated_residual_diff_threshold: float | None = attrs.field(
        default=None, converter=plain_scalar, validator=optional(finite(gt=0))
    )
    """Budget: once the measured differences of this generation (computed and cached steps) sum to this, every
    further step is computed. None: no budget."""
    steps_computation_mask: str | tuple[int, ...] | None = attrs.field(default=None, converter=_mask_converter)
    """Step computation mask: a preset (``"slow"``, ``"medium"``, ``"fast"``, ``"ultra"``, fitted to the step
    count), or one 0/1 entry per step (1: compute; 0: may cache). See :mod:`ditcache.caches.step_masks`."""
    steps_computation_policy: str = attrs.field(default="dynamic", validator=one_of(SCM_POLICIES))
    """What a mask ``0`` means: ``"dynamic"`` (the threshold test and caps still decide) or ``"static"`` (cache
    without any test)."""
    num_inference_steps: int | None = attrs.field(
        default=None, converter=plain_scalar, validator=optional(int_ge(1), "unknown")
    )
    """Steps per generation when known up front (``ditcache.refresh(module, num_inference_steps=N)`` sets it per
    run instead). Needed by mask presets and by ``force_last_step``."""
    force_last_step: bool = attrs.field(default=True, converter=plain_scalar, validator=is_bool)
    """Always compute the last step when the step count is known."""
    taylorseer: bool = attrs.field(default=False, converter=plain_scalar, validator=is_bool)
    """Forecast the middle-block residual with TaylorSeer on cached steps instead of reusing the last one (the flat
    spelling of ``forecast``)."""
    taylorseer_order: int = attrs.field(default=1, converter=plain_scalar, validator=int_ge(0))
    """Order of the TaylorSeer expansion (1 or 2 are usual)."""
    taylorseer_derivative_delay: int = attrs.field(default=3, converter=plain_scalar, validator=int_ge(0))
    """Updates fewer than this many steps after a generation's first step form no derivatives. 3 reproduces
    cache-dit (order 1 from step 3 on, order 2 from step 4 on); 0 forms them as soon as two updates exist."""
    taylorseer_method: str = attrs.field(default="taylor", validator=one_of(FORECAST_METHODS))
    """``"taylor"``: the published expansion (cache-dit's); ``"newton"``: divided-difference extrapolation, exact for
    polynomials up to the order (see :mod:`ditcache.caches.taylorseer`)."""
    taylorseer_encoder: bool = attrs.field(default=True, converter=plain_scalar, validator=is_bool)
    """Also forecast the encoder (text) stream's residual (cache-dit's ``enable_encoder_calibrator``)."""
    _forecast: ForecastSettings | None = attrs.field(default=None)
    """``forecast=``: the forecasting settings as one :class:`~ditcache.caches.reuse.ForecastSettings` (or a dict of
    its fields; its ``derivative_delay`` defaults to 3 here); the same as ``taylorseer=True`` with the
    ``taylorseer_*`` settings. Read it with :meth:`forecast`."""

    def __attrs_post_init__(self) -> None:
        settle_forecast(self, derivative_delay=3, block_level=True)

    def forecast(self) -> ForecastSettings | None:
        """The forecasting settings of the middle-block residual, or None when TaylorSeer is off."""
        return self._forecast

    def check_blocks(self, num_blocks: int, model: str = "the model", *, allow_no_middle: bool = False) -> None:
        """Raise ValueError if ``Fn + Bn`` exceeds ``num_blocks``, or (unless ``allow_no_middle``) equals it: then
        no block is left to cache and every step would run every block."""
        fn, bn = self.fn_compute_blocks, self.bn_compute_blocks
        if fn + bn < num_blocks or (fn + bn == num_blocks and allow_no_middle):
            return  # the usual case: checked on every call, so no message is built for it
        allowed = (
            f"allowed: fn_compute_blocks >= 1, bn_compute_blocks >= 0 and fn_compute_blocks + bn_compute_blocks "
            f"<= {num_blocks - 1} (at least one middle block to cache)"
        )
        if fn + bn > num_blocks:
            raise ValueError(
                f"DBCacheConfig.fn_compute_blocks + bn_compute_blocks: {fn} + {bn} = {fn + bn} exceeds the "
                f"{num_blocks} blocks of {model}; {allowed}"
            )
        raise ValueError(
            f"DBCacheConfig.fn_compute_blocks + bn_compute_blocks: {fn} + {bn} = {fn + bn} covers all "
            f"{num_blocks} blocks of {model}, so no block is left to cache; {allowed}"
        )

    @property
    def tag(self) -> str:
        """A cache-dit style summary, e.g. ``DBCache_F1B0_W4I1M0MC0_R0.3``."""
        m = self.max_cached_steps if self.max_cached_steps is not None else 0
        mc = self.max_continuous_cached_steps if self.max_continuous_cached_steps is not None else 0
        out = (
            f"DBCache_F{self.fn_compute_blocks}B{self.bn_compute_blocks}_W{self.max_warmup_steps}"
            f"I{self.warmup_interval}M{m}MC{mc}_R{self.residual_diff_threshold}"
        )
        if self.steps_computation_mask is not None:
            mask = self.steps_computation_mask
            out += f"_SCM{mask if isinstance(mask, str) else ''.join(map(str, mask))}_{self.steps_computation_policy}"
        if self.taylorseer:
            out += f"_T1O{self.taylorseer_order}" + ("_newton" if self.taylorseer_method == "newton" else "")
        return out


# ---------------------------------------------------------------------------------------------------- state
@attrs.define
class _DBState:
    reuse: ResidualCache
    """The middle blocks' residuals of the last computed step (and their forecasters)."""
    fn_residual: torch.Tensor | None = None
    cached_steps: int = 0
    streak: int = 0
    last_cached_step: int | None = None
    accumulated_diff: float = 0.0
    resolved: bool = False
    mask: tuple[int, ...] | None = None
    warmup_steps: int = 0


class DBCache(CacheMiddleware[_DBState]):
    """The DBCache middleware. Create it with :func:`apply_dbcache_hook`."""

    name = "dbcache"
    level = "block"

    config: DBCacheConfig

    def __init__(self, config: DBCacheConfig) -> None:
        if not isinstance(config, DBCacheConfig):
            raise TypeError(f"config: expected a DBCacheConfig, got {type(config).__name__}")
        super().__init__(config)

    def bind(self, module: nn.Module, num_blocks: int) -> None:
        """Refuse ``Fn + Bn`` reaching the model's block count when the cache is applied (no block left to cache)."""
        self.config.check_blocks(num_blocks, type(module).__name__)

    def new_state(self) -> _DBState:
        return _DBState(ResidualCache(self.config.forecast()))

    def _resolve(self, ctx: CacheContext, state: _DBState) -> None:
        """Fit the step mask and the warm-up to this generation (once, at its first call)."""
        cfg = self.config
        num_steps = ctx.num_steps if ctx.num_steps is not None else cfg.num_inference_steps
        mask = resolve_mask(cfg.steps_computation_mask, num_steps)
        if mask is not None and num_steps is not None and len(mask) != num_steps:
            raise ValueError(
                f"DBCacheConfig.steps_computation_mask: the mask has {len(mask)} entries but the generation has "
                f"{num_steps} steps; give one entry per step or a preset name {list(SCM_PRESETS)}"
            )
        state.mask = mask
        warmup = cfg.max_warmup_steps
        if mask is not None:  # cache-dit caps the warm-up at the mask's leading computed steps
            warmup = min(warmup, leading_compute_steps(mask))
        state.warmup_steps = warmup
        state.resolved = True

    def decide(self, ctx: CacheContext, state: _DBState, fn_residual: torch.Tensor) -> tuple[bool, float | None, str]:
        """Return ``(cache, diff, reason)`` for this call without changing the state (except the diff budget)."""
        cfg = self.config
        step = ctx.step
        if step < state.warmup_steps and step % cfg.warmup_interval == 0:
            return False, None, "warmup"
        if cfg.force_last_step and ctx.num_steps is not None and ctx.is_last_step:
            return False, None, "last_step"
        has_cache = (
            state.fn_residual is not None
            and state.reuse.hidden is not None
            and state.fn_residual.shape == fn_residual.shape
        )
        mask = state.mask
        if mask is not None:
            if step < len(mask) and mask[step] == 1:
                return False, None, "mask_compute"
            if cfg.steps_computation_policy == "static":
                return (True, None, "mask_static") if has_cache else (False, None, "no_reference")
        if cfg.max_cached_steps is not None and state.cached_steps >= cfg.max_cached_steps:
            return False, None, "max_cached_steps"
        if cfg.max_continuous_cached_steps is not None and state.streak >= cfg.max_continuous_cached_steps:
            return False, None, "max_continuous_cached_steps"
        budget = cfg.max_accumulated_residual_diff_threshold
        if budget is not None and state.accumulated_diff >= budget:
            return False, None, "accumulated_diff_budget"
        threshold = float(cfg.residual_diff_threshold)
        if threshold <= 0.0:
            return False, None, "threshold_never"
        if state.fn_residual is None:
            return False, None, "no_reference"
        if threshold >= 1.0:
            return (True, None, "threshold_always") if has_cache else (False, None, "shape_changed")
        if not has_cache:
            return False, None, "shape_changed"
        diff = rel_l1(fn_residual, state.fn_residual, ctx.reducer)
        if diff > 0.0:
            state.accumulated_diff += diff
        return diff < threshold, diff, "diff"

    def process(self, ctx: CacheContext, call_next: CallNextBlocks) -> BlockOutput:
        cfg = self.config
        blocks = ctx.blocks
        n = len(blocks)
        fn, bn = cfg.fn_compute_blocks, cfg.bn_compute_blocks
        cfg.check_blocks(n, "this call's block stack", allow_no_middle=True)
        state = self.state(ctx)
        if not state.resolved:
            self._resolve(ctx, state)
        # cache-dit's streak counts cached steps immediately before this one.
        if state.last_cached_step is None or state.last_cached_step != ctx.step - 1:
            state.streak = 0

        h0, e0 = ctx.hidden_states, ctx.encoder_hidden_states
        h_f, e_f = blocks[:fn](h0, e0)
        fn_residual = h_f - h0
        if fn + bn >= n:  # a narrowed stack with no middle block: nothing to skip, so nothing is cached
            cache, diff, reason = False, None, "no_middle_blocks"
        else:
            cache, diff, reason = self.decide(ctx, state, fn_residual)

        if cache:
            hidden, encoder = state.reuse.apply(ctx.step, h_f, e_f)
            state.cached_steps += 1
            state.streak += 1
            state.last_cached_step = ctx.step
        else:
            state.fn_residual = fn_residual
            hidden, encoder = call_next(
                ctx.evolve(hidden_states=h_f, encoder_hidden_states=e_f, blocks=blocks[fn : n - bn])
            )
            state.reuse.store(ctx.step, h_f, e_f, hidden, encoder)
        if bn:
            hidden, encoder = blocks[n - bn :](hidden, encoder)
        self.record(ctx, not cache, diff=diff, reason=reason)
        return hidden, encoder


def apply_dbcache_hook(
    module: nn.Module,
    cfg: DBCacheConfig | Mapping[str, Any] | None = None,
    *,
    extractor: Extractor | str | None = None,
) -> DBCache:
    """Accelerate ``module`` with DBCache: the one-line entry point.

    ``cfg`` is a :class:`DBCacheConfig`, a dict of its fields, or None for the defaults (cache-dit's: F8B0, W8,
    R0.08). Raises ValueError when ``Fn + Bn`` exceeds the model's block count. Returns the DBCache middleware in
    effect (its :meth:`~ditcache.core.cache.CacheMiddleware.stats` list what was cached).
    """
    config = coerce_config(DBCacheConfig, cfg)
    return apply_cache(module, DBCache(config), extractor=extractor, num_inference_steps=config.num_inference_steps)
