"""TeaCache (Liu et al., CVPR 2025, arXiv 2411.19108) as a cache middleware.

The published algorithm (TeaCache4FLUX; paper Eq. 4-7), per CFG branch:

* the first step is always computed (``warmup_steps``), and the last one too when the step count is known
  (``force_last_step``);
* otherwise ``x = mean|m_t - m_{t-1}| / mean|m_{t-1}|`` where ``m`` is the modulated input of the first block
  (the denominator is the *previous* step's);
* ``acc += poly(x)`` with the model's 4th-order polynomial; while ``acc < rel_l1_thresh`` the step is skipped,
  otherwise it is computed and ``acc`` resets to 0;
* ``m_{t-1}`` is updated on every step, skipped or not;
* a computed step stores the residual of the whole block stack (output - input) for both streams; a skipped step
  adds it to its input instead of running the blocks. Embeddings and the head always run.

Integrations differ on details; each is an explicit option here with the reference behaviour as default:
``abs_rescaled`` (ComfyUI / vLLM-Omni take ``abs()`` of the rescaled distance), ``force_last_step``,
``max_consecutive_skips`` and ``warmup_steps``.

Coefficients come from, in order: ``coefficients`` (one polynomial for every branch), ``profile`` (a calibrated
"teacache" profile written by ``ditcache calibrate``: a pooled polynomial and, when fitted, one per CFG branch),
``model`` (a published preset, see ``ditcache.presets.teacache``), or the preset inferred from the module's class.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from ditcache.caches.reuse import FORECAST_TARGETS, ForecastSettings, StepReuse, settle_forecast
from ditcache.caches.taylorseer import FORECAST_METHODS
from ditcache.caches.tolerance import ErrorControl
from ditcache.core.branch import named_role
from ditcache.core.cache import CacheMiddleware, CallNextBlocks, FinalOutput
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.extractor import Extractor, get_extractor
from ditcache.core.log import get_logger
from ditcache.core.metrics import rel_l1
from ditcache.core.runtime import apply_cache, get_cache_runtime, resolve_module
from ditcache.core.validators import (
    StrictConfig,
    coerce_config,
    finite,
    int_ge,
    is_bool,
    non_empty_str,
    one_of,
    optional,
    plain_scalar,
)
from ditcache.presets.teacache import TEACACHE_PRESETS, TeaCachePreset, infer_teacache_model
from ditcache.profiles import Profile, ProfileError, find_profile, load_profile, profile_path, profile_reference

__all__ = ["TeaCache", "TeaCacheConfig", "apply_teacache_hook", "profile_coefficients"]

_log = get_logger("ditcache.caches.teacache")


def _coefficients(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)):  # "12345" would otherwise convert digit by digit
            raise TypeError
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(
            f"TeaCacheConfig.coefficients: expected 5 numbers (highest power first), got {value!r}"
        ) from None
    return out


def _check_coefficients(inst: Any, attribute: attrs.Attribute[Any], value: tuple[float, ...] | None) -> None:
    if value is None:
        return
    if len(value) != 5:
        raise ValueError(
            f"TeaCacheConfig.coefficients: expected exactly 5 numbers [c4, c3, c2, c1, c0] (4th-order polynomial, "
            f"highest power first), got {len(value)}"
        )
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"TeaCacheConfig.coefficients: every coefficient must be finite, got {value!r}")


def _c_profile(value: Any) -> str | None:
    return profile_reference(value, "TeaCacheConfig.profile")


def _check_profile(inst: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    try:
        profile_path(value)
    except ProfileError as exc:
        raise ValueError(f"TeaCacheConfig.{exc}") from None


_DEFAULT_THRESH = 0.2
RAW_DISTANCE = (0.0, 0.0, 0.0, 1.0, 0.0)
"""The identity polynomial: TeaCache accumulates the raw relative L1 distance of its indicator."""

RESCALINGS = ("monotone", "published", "abs")
"""How TeaCache maps the indicator distance ``x`` to what it accumulates (see :class:`TeaCacheConfig.rescale`)."""


@attrs.frozen(kw_only=True)
class TeaCacheConfig(StrictConfig):
    """Settings of TeaCache. Frozen and validated; unknown keys are refused by :meth:`from_dict`.

    ``None`` for ``indicator``, ``warmup_steps`` and ``force_last_step`` means "what the model's preset says"
    (the reference: first step computed, last step forced).
    """

    rel_l1_thresh: float | None = attrs.field(
        default=None, converter=plain_scalar, validator=optional(finite(gt=0), f"{_DEFAULT_THRESH} without rtol")
    )
    """Threshold on the accumulated rescaled distance; larger skips more (FLUX: 0.25 -> ~1.5x, 0.6 -> ~2x). Its
    meaning depends on the model; ``rtol`` is the setting that transfers. None (the default) means 0.2, and stays
    None under ``rtol``."""
    rtol: float | None = attrs.field(default=None, converter=plain_scalar, validator=optional(finite(gt=0, lt=1)))
    """Error tolerance instead of a threshold (``ditcache.caches.tolerance``): the relative L1 error a skipped step
    may make, measured by the cache itself on computed steps (0.05: 5%; smaller is closer to the uncached model).
    The threshold on the accumulated distance then adapts online, per branch and generation. Exclusive with
    ``rel_l1_thresh``. When the model's coefficients are only borrowed from another model (no published set), the
    raw distance is accumulated instead of the borrowed polynomial."""
    model: str | None = attrs.field(
        default=None,
        validator=optional(
            one_of(
                TEACACHE_PRESETS,
                label="model",
                hint="or leave it None to infer it from the module, or pass coefficients=...",
            )
        ),
    )
    """Preset key (see ``ditcache.presets.teacache.TEACACHE_PRESETS``); inferred from the module when None."""
    coefficients: tuple[float, ...] | None = attrs.field(
        default=None, converter=_coefficients, validator=_check_coefficients
    )
    """Explicit polynomial ``[c4, c3, c2, c1, c0]``, overriding the preset's."""
    profile: str | None = attrs.field(default=None, converter=_c_profile, validator=_check_profile)
    """Name or path of a calibrated ``"teacache"`` profile (``ditcache calibrate``; see ``ditcache.profiles``). It
    gives the coefficients, one polynomial per CFG branch when the profile has per-branch fits (each branch uses
    the fit of its role ``ctx.role``: named branches by name, ``uncond*``/``negative*`` the ``uncond`` fit,
    unnamed ones by their order in the run, as calibration assigned them), and the indicator they were fitted on.
    Exclusive with ``coefficients``; with ``model`` the preset still gives the warm-up and last-step settings.
    Loaded when the cache is applied."""
    indicator: str | None = attrs.field(default=None, validator=optional(non_empty_str))
    """``extra_states`` key of the indicator tensor; None uses the preset's (normally the modulated input)."""
    num_inference_steps: int | None = attrs.field(default=None, converter=plain_scalar, validator=optional(int_ge(1)))
    """Steps per generation, when known up front (``ditcache.refresh`` can set it per run instead)."""
    warmup_steps: int | None = attrs.field(default=None, converter=plain_scalar, validator=optional(int_ge(0)))
    """Steps always computed at the start of a generation (reference: 1, Wan ret-mode: 5)."""
    force_last_step: bool | None = attrs.field(default=None, converter=plain_scalar, validator=optional(is_bool))
    """Always compute the last step when the step count is known (reference: True)."""
    max_consecutive_skips: int | None = attrs.field(
        default=None, converter=plain_scalar, validator=optional(int_ge(1), "no cap")
    )
    """Cap on skips in a row (None: no cap, as in the reference)."""
    rescale: str = attrs.field(default="monotone", validator=one_of(RESCALINGS))
    """How the distance ``x`` is rescaled before it is accumulated: ``"monotone"`` (default) the polynomial made
    never negative and never decreasing over ``x >= 0`` (an initial descent is flattened to its bottom, later dips
    are held at the previous high, negative values become 0; see :meth:`ResolvedTeaCache.rescale`), so a larger
    change never makes a step more skippable; ``"published"`` the polynomial as published (the reference; it goes
    below zero outside its fitted range, e.g. Wan 2.1 1.3B's at ``x = 0.31``); ``"abs"`` its absolute value
    (``abs_rescaled=True``)."""
    abs_rescaled: bool = attrs.field(default=False, converter=plain_scalar, validator=is_bool)
    """Accumulate ``abs(poly(x))`` instead of ``poly(x)`` (ComfyUI-TeaCache, vLLM-Omni); the same as
    ``rescale="abs"``."""
    taylorseer: bool = attrs.field(default=False, converter=plain_scalar, validator=is_bool)
    """Forecast the reused residual with TaylorSeer (the flat spelling of ``forecast``; see
    ``ditcache.caches.taylorseer``)."""
    taylorseer_order: int = attrs.field(default=1, converter=plain_scalar, validator=int_ge(0))
    """TaylorSeer order (``forecast.order``)."""
    taylorseer_method: str = attrs.field(default="taylor", validator=one_of(FORECAST_METHODS))
    """``"taylor"`` (published expansion) or ``"newton"`` (exact for polynomials up to the order)."""
    taylorseer_target: str = attrs.field(default="residual", validator=one_of(FORECAST_TARGETS))
    """What is forecast on skipped steps: ``"residual"`` (the blocks' residual; the head still runs) or ``"output"``
    (the model's output itself, skipping the head too, as diffusers' TaylorSeer lite). Needs ``taylorseer=True``."""
    _forecast: ForecastSettings | None = attrs.field(default=None)
    """``forecast=``: the forecasting settings as one :class:`~ditcache.caches.reuse.ForecastSettings` (or a dict of
    its fields); the same as ``taylorseer=True`` with the ``taylorseer_*`` settings. Read it with :meth:`forecast`."""

    def __attrs_post_init__(self) -> None:
        settle_forecast(self)
        if self.abs_rescaled and self.rescale == "published":
            raise ValueError(
                "TeaCacheConfig.rescale: 'published' and abs_rescaled=True disagree; use rescale='abs' alone"
            )
        if self.abs_rescaled or self.rescale == "abs":
            object.__setattr__(self, "rescale", "abs")
            object.__setattr__(self, "abs_rescaled", True)
        if self.profile is not None and self.coefficients is not None:
            raise ValueError(
                "TeaCacheConfig.profile: give either coefficients or profile, not both (each gives the polynomial)"
            )
        if self.rtol is not None and self.rel_l1_thresh is not None:
            raise ValueError(
                "TeaCacheConfig.rtol: give either rtol (an error tolerance that adapts the threshold) or "
                f"rel_l1_thresh (a fixed threshold), not both; got rtol={self.rtol!r}, "
                f"rel_l1_thresh={self.rel_l1_thresh!r}"
            )
        if self.rtol is None and self.rel_l1_thresh is None:
            object.__setattr__(self, "rel_l1_thresh", _DEFAULT_THRESH)

    def forecast(self) -> ForecastSettings | None:
        """The forecasting settings, or None when TaylorSeer is off."""
        return self._forecast

    def resolve(self, module: nn.Module | None) -> ResolvedTeaCache:
        """Combine this config with the model's preset or its profile."""
        if self.profile is not None:
            return self._resolve_profile(self.profile)
        key, exact = self.model, True
        if key is None and self.coefficients is None:
            if module is None:
                raise ValueError("TeaCacheConfig.model: give a model key or coefficients when no module is known")
            key, exact = infer_teacache_model(module)
        preset = TEACACHE_PRESETS[key] if key is not None else None
        if self.coefficients is not None:
            return self._resolved(preset, self.coefficients, preset=None, source="user coefficients")
        assert preset is not None and key is not None
        if not exact and self.rtol is not None:
            _log.info(
                "teacache.rtol_raw_distance",
                model_class=type(module).__name__,
                note=f"no published coefficients for this class ({key!r} would be borrowed); with rtol the raw "
                "distance is accumulated and the threshold adapts to it",
            )
            return self._resolved(preset, RAW_DISTANCE, preset=None, source="raw distance (rtol, no published set)")
        if not exact:
            _log.warning(
                "teacache.coefficients_borrowed",
                model_class=type(module).__name__,
                preset=key,
                note="the module matches no published checkpoint; calibrate coefficients for it, or use rtol",
            )
        return self._resolved(preset, preset.coefficients, preset=key, source=preset.source)

    def _resolved(
        self, settings: TeaCachePreset | None, coefficients: tuple[float, ...], /, **fields: Any
    ) -> ResolvedTeaCache:
        forecast = self.forecast()
        return ResolvedTeaCache(
            thresh=_DEFAULT_THRESH if self.rel_l1_thresh is None else float(self.rel_l1_thresh),
            coefficients=tuple(coefficients),
            indicator=self.indicator if self.indicator is not None else (settings.indicator if settings else None),
            warmup_steps=self.warmup_steps
            if self.warmup_steps is not None
            else (settings.warmup_steps if settings else 1),
            force_last_step=self.force_last_step
            if self.force_last_step is not None
            else (settings.force_last_step if settings else True),
            max_consecutive_skips=self.max_consecutive_skips,
            abs_rescaled=self.abs_rescaled,
            rescaling=self.rescale,
            rtol=self.rtol,
            order=forecast.order if forecast is not None else 0,
            **fields,
        )

    def _resolve_profile(self, profile_ref: str) -> ResolvedTeaCache:
        try:
            where = str(find_profile(profile_ref, "teacache"))
            profile = load_profile(profile_ref, kind="teacache")
            pooled, branches, indicator = profile_coefficients(profile, where)
        except ProfileError as exc:
            raise type(exc)(f"TeaCacheConfig.profile: {str(exc).removeprefix('profile: ')}") from None
        preset = TEACACHE_PRESETS[self.model] if self.model is not None else None
        if self.indicator is not None and self.indicator != indicator:
            _log.warning(
                "teacache.indicator_mismatch",
                profile=where,
                fitted_on=indicator or "modulated input",
                configured=self.indicator,
                note="the coefficients were fitted on another indicator; calibrate with the one you use",
            )
        resolved = self._resolved(preset, pooled, preset=None, source=f"profile {where}", branch_coefficients=branches)
        return resolved if self.indicator is not None else attrs.evolve(resolved, indicator=indicator)


def _profile_polynomial(value: Any, field: str, where: str) -> tuple[float, ...]:
    try:
        coefficients = _coefficients(value)
        _check_coefficients(None, attrs.fields(TeaCacheConfig).coefficients, coefficients)
    except (TypeError, ValueError) as exc:
        message = str(exc).replace("TeaCacheConfig.coefficients", f"data.{field}")
        raise ProfileError(f"profile {where}: {message}") from None
    if coefficients is None:
        raise ProfileError(f"profile {where}: data.{field} is missing; expected 5 numbers [c4, c3, c2, c1, c0]")
    return coefficients


def profile_coefficients(
    profile: Profile, where: str = "<profile>"
) -> tuple[tuple[float, ...], dict[str, tuple[float, ...]], str | None]:
    """The polynomials of a ``"teacache"`` profile, validated: ``(pooled, per_branch, indicator)``.

    ``data.coefficients`` is the pooled fit (5 numbers, highest power first); ``data.branches`` optionally maps
    ``"cond"``/``"uncond"`` to ``{"coefficients": [...], ...}``; ``data.indicator`` is the ``extra_states`` key the
    fit used (None or absent: the modulated input). Raises :class:`~ditcache.profiles.ProfileError` naming the field.
    """
    if profile.kind != "teacache":
        raise ProfileError(f"profile {where}: is a {profile.kind!r} profile, expected a 'teacache' profile")
    data = profile.data
    pooled = _profile_polynomial(data.get("coefficients"), "coefficients", where)
    branches: dict[str, tuple[float, ...]] = {}
    raw = data.get("branches") or {}
    if not isinstance(raw, dict):
        raise ProfileError(
            f"profile {where}: data.branches must be a dict of per-branch fits, got {type(raw).__name__}"
        )
    for role, fit in raw.items():
        if role not in ("cond", "uncond"):
            raise ProfileError(
                f"profile {where}: data.branches has unknown branch {role!r}; allowed: ['cond', 'uncond']"
            )
        if not isinstance(fit, dict):
            raise ProfileError(f"profile {where}: data.branches.{role} must be a dict with 'coefficients'")
        branches[role] = _profile_polynomial(fit.get("coefficients"), f"branches.{role}.coefficients", where)
    indicator = data.get("indicator")
    if indicator is not None and (not isinstance(indicator, str) or not indicator):
        raise ProfileError(f"profile {where}: data.indicator must be a non-empty string or null, got {indicator!r}")
    return pooled, branches, indicator


def branch_coefficient_role(branch: Hashable) -> str | None:
    """The per-branch fit a branch's *name* selects, None for an automatic branch (kept for callers of the old
    name; :func:`ditcache.core.branch.named_role` is the rule, and the cache itself reads ``ctx.role``)."""
    return named_role(branch)


@attrs.frozen
class ResolvedTeaCache:
    """A TeaCacheConfig made concrete for one module."""

    thresh: float
    """The fixed threshold (unused under :attr:`rtol`)."""
    coefficients: tuple[float, ...]
    indicator: str | None
    warmup_steps: int
    force_last_step: bool
    max_consecutive_skips: int | None
    abs_rescaled: bool
    preset: str | None
    source: str
    rescaling: str = "monotone"
    """One of :data:`RESCALINGS` (see :attr:`TeaCacheConfig.rescale`)."""
    branch_coefficients: dict[str, tuple[float, ...]] = attrs.field(factory=dict)
    """Per-branch polynomials of a calibrated profile (``"cond"``, ``"uncond"``); empty: one for every branch."""
    rtol: float | None = None
    """The error tolerance (:attr:`TeaCacheConfig.rtol`); None: the fixed threshold :attr:`thresh` decides."""
    order: int = 0
    """Order of what is reused (the TaylorSeer order, 0 without forecasting), for the error control."""

    def coefficients_for(self, role: str | None) -> tuple[float, ...]:
        """The polynomial of a branch role (see :func:`branch_coefficient_role`); the pooled one by default."""
        if role is None:
            return self.coefficients
        return self.branch_coefficients.get(role, self.coefficients)

    def rescale(self, x: float, role: str | None = None) -> float:
        """The rescaled distance of ``role`` at ``x >= 0`` (Horner's rule in float64, as ``numpy.poly1d``), as
        :attr:`rescaling` says: the polynomial itself (``"published"``), its absolute value (``"abs"``), or
        (``"monotone"``) ``max(0, max of poly over [a, max(x, a)])``, where ``a`` is the bottom of the polynomial's
        initial descent (its first local minimum when it falls from 0, else 0): never negative, never decreasing,
        and equal to the polynomial wherever it rises to a new high."""
        coefficients = self.coefficients_for(role)
        y = _horner(coefficients, x)
        if self.rescaling == "published":
            return y
        if self.rescaling == "abs":
            return abs(y)
        start, peaks = _monotone_shape(coefficients)
        if start is None:  # falls from x = 0 without a bottom: never positive for x >= 0
            return 0.0
        x = max(x, start)
        best = max(_horner(coefficients, start), _horner(coefficients, x))
        for peak in peaks:
            if peak >= x:
                break
            best = max(best, _horner(coefficients, peak))
        return max(0.0, best)


def _horner(coefficients: tuple[float, ...], x: float) -> float:
    y = 0.0
    for c in coefficients:
        y = y * x + c
    return y


@functools.lru_cache(maxsize=64)
def _monotone_shape(coefficients: tuple[float, ...]) -> tuple[float | None, tuple[float, ...]]:
    """Where the monotone rescaling starts rising (the first local minimum when the polynomial falls from
    ``x = 0``, else 0; None when it falls without a bottom) and its local maxima after that, ascending."""
    poly = np.poly1d(coefficients)
    if poly.order == 0:
        return 0.0, ()
    d1, d2 = poly.deriv(), poly.deriv(2)
    roots = sorted(float(r.real) for r in np.atleast_1d(d1.roots) if abs(r.imag) < 1e-9 and r.real > 0)
    start: float | None = 0.0
    if d1(0.0) < 0:
        minima = [r for r in roots if d2(r) > 0]
        start = minima[0] if minima else None
    if start is None:
        return None, ()
    return start, tuple(r for r in roots if r > start and d2(r) < 0)


@attrs.define
class _TeaState:
    reuse: StepReuse
    control: ErrorControl | None = None
    previous_indicator: torch.Tensor | None = None
    accumulated: float = 0.0
    consecutive_skips: int = 0


class TeaCache(CacheMiddleware[_TeaState]):
    """The TeaCache middleware. Create it with :func:`apply_teacache_hook`."""

    name = "teacache"
    level = "step"

    def __init__(self, config: TeaCacheConfig, resolved: ResolvedTeaCache) -> None:
        super().__init__(config)
        self.resolved = resolved

    def new_state(self) -> _TeaState:
        r = self.resolved
        control = ErrorControl(r.rtol, r.order) if r.rtol is not None else None
        return _TeaState(StepReuse(self.config.forecast()), control)

    def _indicator(self, ctx: CacheContext) -> torch.Tensor:
        key = self.resolved.indicator
        if key is None:
            return ctx.modulated_input
        value = ctx.extra_states.get(key)
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"TeaCacheConfig.indicator: {key!r} is not a tensor in this model's extra_states; "
                f"available: {sorted(k for k, v in ctx.extra_states.items() if isinstance(v, torch.Tensor))}"
            )
        return value

    def _forced(self, ctx: CacheContext) -> bool:
        """Whether the step is computed whatever the indicator says: warm-up, or the last step when forced."""
        r = self.resolved
        return ctx.step < r.warmup_steps or (r.force_last_step and ctx.is_last_step)

    def decide(self, ctx: CacheContext, state: _TeaState, indicator: torch.Tensor) -> tuple[bool, float, float | None]:
        """Return ``(skip, accumulated, distance)`` without changing the state: ``accumulated`` is the value the
        step reached (a skip carries it on, a compute resets it), ``distance`` None when none was measured.

        With a fixed threshold the distance is measured only on steps that may skip; under ``rtol`` on every step
        after the first, so that a computed step's measured error has the accumulated value it belongs to."""
        r = self.resolved
        control = state.control
        forced = self._forced(ctx) or not state.reuse.usable_for(ctx)
        previous = state.previous_indicator
        if previous is None or previous.shape != indicator.shape or (forced and control is None):
            return False, 0.0, None
        distance = rel_l1(indicator, previous, ctx.reducer)
        accumulated = state.accumulated + r.rescale(distance, ctx.role if r.branch_coefficients else None)
        under = accumulated < r.thresh if control is None else control.allows(accumulated)
        capped = r.max_consecutive_skips is not None and state.consecutive_skips >= r.max_consecutive_skips
        return not forced and under and not capped, accumulated, distance

    def process(self, ctx: CacheContext, call_next: CallNextBlocks) -> BlockOutput | FinalOutput:
        state = self.state(ctx)
        indicator = self._indicator(ctx)
        skip, accumulated, distance = self.decide(ctx, state, indicator)
        control = state.control
        error: float | None = None
        if skip:
            result = state.reuse.reuse(ctx)
            state.consecutive_skips += 1
        else:
            # Under rtol a computed step also measures the error a skip would have made, and the threshold adapts.
            measure = control is not None and distance is not None
            result, error = state.reuse.compute_measured(ctx, call_next, measure=measure)
            if control is not None and error is not None:
                control.observe(accumulated, error, may_raise=not self._forced(ctx))
            state.consecutive_skips = 0
        state.accumulated = accumulated if skip else 0.0
        state.previous_indicator = indicator
        info = {} if control is None else {"threshold": control.threshold, "measured_error": error}
        self.record(ctx, not skip, distance=distance, accumulated=accumulated, **info)
        return result


def apply_teacache_hook(
    module: nn.Module,
    cfg: TeaCacheConfig | Mapping[str, Any] | None = None,
    *,
    extractor: Extractor | str | None = None,
) -> TeaCache:
    """Accelerate ``module`` with TeaCache: the one-line entry point.

    ``cfg`` is a :class:`TeaCacheConfig`, a dict of its fields, or None for the defaults; the coefficient preset is
    inferred from the module's class when the config names neither a model nor coefficients. Returns the TeaCache
    middleware in effect (its :meth:`~ditcache.core.cache.CacheMiddleware.stats` list what was skipped).
    """
    config = coerce_config(TeaCacheConfig, cfg)
    module = resolve_module(module, extractor)  # a non-module or a model without extractor fails first
    resolved = config.resolve(module)
    _check_indicator(resolved.indicator, module, extractor)
    middleware = TeaCache(config, resolved)
    return apply_cache(module, middleware, extractor=extractor, num_inference_steps=config.num_inference_steps)


def _check_indicator(key: str | None, module: nn.Module, extractor: Extractor | str | None) -> None:
    """Refuse an ``indicator`` the extractor does not produce, when it declares its ``extra_states`` keys."""
    if key is None:
        return
    runtime = get_cache_runtime(module)
    if runtime is not None:
        ext = runtime.extractor
    elif isinstance(extractor, Extractor):
        ext = extractor
    else:
        ext = get_extractor(module if extractor is None else extractor)
    if ext.extra_state_keys is not None and key not in ext.extra_state_keys:
        raise ValueError(
            f"TeaCacheConfig.indicator: {key!r} is not an extra_states key of extractor {ext.name!r}; "
            f"allowed: {sorted(ext.extra_state_keys)} (or None for the modulated input)"
        )
