"""MagCache (Ma et al., NeurIPS 2025, arXiv 2506.09045) as a cache middleware.

The published algorithm (``MagCache4FLUX/magcache_flux.py``, ``MagCache4Wan2.1/magcache_generate.py``; paper
§3.2-3.3), per CFG branch, for step ``t`` of ``N``:

* ``gamma_t`` is the offline magnitude ratio ``mean_tokens(||r_t||_2 / ||r_{t-1}||_2)`` of the block-stack
  residual ``r_t = blocks(x_t) - x_t``, recorded once per checkpoint (``ditcache.presets.magcache``) or calibrated
  (``MagCacheConfig(calibrate=True)``), resampled to ``N`` steps by nearest index;
* the first ``int(retention_ratio * N + 0.5)`` steps are always computed (the retention window) and leave the
  accumulators alone;
* afterwards ``ratio *= gamma_t``, ``skipped += 1``, ``error += |1 - ratio|``: the step is skipped while
  ``error <= threshold`` and ``skipped <= max_skip_steps``; otherwise it is computed and the three accumulators
  reset to ``(1.0, 0, 0.0)``;
* a computed step stores the residual of the whole block stack (output - input; the encoder stream's too when
  the blocks change it); a skipped step adds it to its input instead of running the blocks. Embeddings and the
  head always run. There is no forced last step: the falling ratios at the end of the curve force computes.

The decisions depend only on ``(ratios, threshold, max_skip_steps, retention_ratio, N)``:
:func:`magcache_schedule` computes them up front, and the middleware follows that schedule; the only runtime
condition is that a residual of the right shape exists (the first step of a generation always computes).

Choices where the integrations differ are documented in ``docs/magcache.md``: ``<=`` as in MagCache4FLUX and
diffusers (MagCache4Wan uses ``<``), retention rounded as ``int(R * N + 0.5)`` (FLUX, diffusers; Wan counts
forwards and truncates), no forced compute at FLUX step 11 (MagCache4FLUX forces it; diffusers does not), and
float64 accumulators (diffusers accumulates in float32).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from ditcache.caches.magcache_calibration import MagCacheCalibration
from ditcache.caches.magcache_schedule import (
    MagAccumulator,
    MagCacheSchedule,
    check_curve,
    magcache_retention_steps,
    magcache_schedule,
    resample_ratios,
    split_interleaved,
)
from ditcache.caches.reuse import FORECAST_TARGETS, ForecastSettings, StepReuse, settle_forecast
from ditcache.caches.taylorseer import FORECAST_METHODS
from ditcache.caches.tolerance import ErrorControl
from ditcache.core.branch import ROLES, Role, named_role
from ditcache.core.cache import CacheMiddleware, CallNextBlocks, FinalOutput
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.extractor import Extractor
from ditcache.core.log import get_logger
from ditcache.core.metrics import residual_metrics
from ditcache.core.runtime import apply_cache, resolve_module
from ditcache.core.validators import (
    StrictConfig,
    coerce_config,
    finite,
    int_ge,
    is_bool,
    one_of,
    optional,
    plain_scalar,
)
from ditcache.presets.magcache import MAG_RATIO_PRESETS, infer_magcache_model
from ditcache.profiles import Profile, ProfileError, find_profile, load_profile, profile_reference, save_profile

__all__ = [
    "MagCache",
    "MagCacheConfig",
    "MagCacheSchedule",
    "ResolvedMagCache",
    "apply_magcache_hook",
    "branch_role",
    "magcache_retention_steps",
    "magcache_schedule",
    "profile_curves",
    "resample_ratios",
    "residual_metrics",
    "split_interleaved",
]

_log = get_logger("ditcache.caches.magcache")


def branch_role(branch: Hashable) -> str:
    """The curve a branch *named* ``branch`` uses (:func:`ditcache.core.branch.named_role`; ``"cond"`` when the
    name says nothing). Running caches read the role the step clock stamped on ``ctx.role`` instead."""
    return named_role(branch) or "cond"


def _c_ratios(value: Any) -> tuple[float, ...] | None:
    return None if value is None else check_curve(value, "MagCacheConfig.mag_ratios")


def _c_profile(value: Any) -> str | None:
    return profile_reference(value, "MagCacheConfig.profile")


# ---------------------------------------------------------------------------------------------- config
_DEFAULT_THRESHOLD = 0.06


@attrs.frozen(kw_only=True)
class MagCacheConfig(StrictConfig):
    """Settings of MagCache. Frozen and validated; unknown keys are refused by :meth:`from_dict`.

    The curve comes from, in order: ``mag_ratios`` (one curve for every branch), ``profile`` (a calibrated
    profile, per-branch curves), ``model`` (a published preset, see ``ditcache.presets.magcache``), or the preset
    inferred from the module's class. ``calibrate=True`` measures a curve instead of skipping anything.
    The defaults (0.06, 3, 0.2) are diffusers'; each preset lists its authors' recommended settings.
    """

    threshold: float | None = attrs.field(
        default=None, converter=plain_scalar, validator=optional(finite(gt=0), f"{_DEFAULT_THRESHOLD} without rtol")
    )
    """Accumulated-error threshold ``E``; a step is skipped while the error is ``<=`` it. Larger skips more. None
    (the default) means 0.06, and stays None under ``rtol``."""
    max_skip_steps: int = attrs.field(default=3, converter=plain_scalar, validator=int_ge(1))
    """``K``: at most this many steps skipped in a row."""
    retention_ratio: float = attrs.field(default=0.2, converter=plain_scalar, validator=finite(ge=0, lt=1))
    """Fraction of leading steps always computed: the first ``int(retention_ratio * N + 0.5)``."""
    num_inference_steps: int | None = attrs.field(default=None, converter=plain_scalar, validator=optional(int_ge(1)))
    """Steps per generation when known up front; ``ditcache.refresh(module, n)`` or a pipeline's
    ``cache_context(num_inference_steps=...)`` sets it per run and takes precedence."""
    model: str | None = attrs.field(
        default=None,
        validator=optional(
            one_of(
                MAG_RATIO_PRESETS,
                label="model",
                hint="or leave it None to infer it from the module, or pass mag_ratios=... or profile=...",
            )
        ),
    )
    """Preset key (``ditcache.presets.magcache.MAG_RATIO_PRESETS``); inferred from the module when None. With
    ``mag_ratios``, ``profile`` or ``calibrate`` it only names the model (in logs and calibrated profiles)."""
    mag_ratios: tuple[float, ...] | None = attrs.field(default=None, converter=_c_ratios)
    """An explicit curve (positive numbers, padding ``1.0`` first) for every branch, overriding the preset."""
    profile: str | None = attrs.field(default=None, converter=_c_profile)
    """Name or path of a calibrated MagCache profile (``ditcache.profiles``), giving per-branch curves."""
    rtol: float | None = attrs.field(default=None, converter=plain_scalar, validator=optional(finite(gt=0, lt=1)))
    """Error tolerance instead of ``threshold`` (``ditcache.caches.tolerance``): the relative L1 error a skipped
    step may make, measured by the cache itself on computed steps (0.05: 5%). The threshold on the accumulated
    error then adapts online, per branch and generation; ``max_skip_steps`` and the retention window still apply,
    and the schedule is no longer known before the run. Exclusive with ``threshold`` and ``calibrate``."""
    calibrate: bool = attrs.field(default=False, converter=plain_scalar, validator=is_bool)
    """Measure the ratios instead of skipping; read them with :meth:`MagCache.calibration_profile`."""
    taylorseer: bool = attrs.field(default=False, converter=plain_scalar, validator=is_bool)
    """Forecast the reused residual with TaylorSeer (the flat spelling of ``forecast``; see
    ``ditcache.caches.taylorseer``); the schedule is unchanged."""
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

    def forecast(self) -> ForecastSettings | None:
        """The forecasting settings, or None when TaylorSeer is off."""
        return self._forecast

    def __attrs_post_init__(self) -> None:
        settle_forecast(self)
        if self.mag_ratios is not None and self.profile is not None:
            raise ValueError(
                "MagCacheConfig.mag_ratios: give either mag_ratios or profile, not both (each is a full curve)"
            )
        if self.rtol is None and self.threshold is None:
            object.__setattr__(self, "threshold", _DEFAULT_THRESHOLD)
        if self.rtol is not None and self.threshold is not None:
            raise ValueError(
                "MagCacheConfig.rtol: give either rtol (an error tolerance that adapts the threshold) or threshold "
                f"(a fixed one), not both; got rtol={self.rtol!r}, threshold={self.threshold!r}"
            )
        if self.rtol is not None and self.calibrate:
            raise ValueError("MagCacheConfig.rtol: a calibration run never skips; do not pass rtol with calibrate=True")
        if self.calibrate and (self.mag_ratios is not None or self.profile is not None):
            raise ValueError(
                "MagCacheConfig.calibrate: a calibration run measures the ratios and never skips; do not pass "
                "mag_ratios or profile with calibrate=True"
            )

    def resolve(self, module: nn.Module | None = None) -> ResolvedMagCache:
        """Combine this config with the curve it names (preset, explicit ratios, profile or inferred preset)."""
        if self.calibrate:
            return self._resolved({}, None, "calibration run", self.model)
        if self.mag_ratios is not None:
            return self._resolved({"cond": self.mag_ratios}, None, "user mag_ratios", self.model)
        if self.profile is not None:
            profile = load_profile(self.profile, kind="magcache")
            where = str(find_profile(self.profile, "magcache"))
            return self._resolved(profile_curves(profile, where), None, f"profile {where}", self.model or profile.model)
        key, exact = self.model, True
        if key is None:
            if module is None:
                raise ValueError(
                    "MagCacheConfig.model: give a model key, mag_ratios or a profile when no module is known"
                )
            key, exact = infer_magcache_model(module)
            if not exact:
                _log.warning(
                    "magcache.ratios_borrowed",
                    model_class=type(module).__name__,
                    preset=key,
                    note="the module matches no published checkpoint; calibrate a profile for it",
                )
        preset = MAG_RATIO_PRESETS[key]
        if "a14b" in key:
            _log.warning(
                "magcache.moe_curve",
                preset=key,
                note="this curve spans both experts of Wan 2.2 A14B with one step counter; on a single expert "
                "the step index does not match the curve",
            )
        return self._resolved(preset.curves(), key, preset.source, key)

    def _resolved(
        self, curves: dict[str, tuple[float, ...]], preset: str | None, source: str, model: str | None
    ) -> ResolvedMagCache:
        return ResolvedMagCache(
            threshold=_DEFAULT_THRESHOLD if self.threshold is None else float(self.threshold),
            max_skip_steps=self.max_skip_steps,
            retention_ratio=float(self.retention_ratio),
            curves=curves,
            calibrate=self.calibrate,
            preset=preset,
            source=source,
            model=model,
        )

    def schedule(
        self, num_steps: int | None = None, *, module: nn.Module | None = None, branch: Hashable = "cond"
    ) -> MagCacheSchedule:
        """The schedule this config gives ``branch`` (a name: ``"cond"``, ``"uncond"``, ...) for a run of
        ``num_steps`` steps (default :attr:`num_inference_steps`); ``module`` is needed only to infer the model."""
        _no_schedule_under_rtol(self.rtol)
        return self.resolve(module).schedule(_steps_or_error(num_steps, self.num_inference_steps), branch_role(branch))


def _no_schedule_under_rtol(rtol: float | None) -> None:
    if rtol is not None:
        raise ValueError(
            f"MagCacheConfig.rtol: with rtol={rtol!r} the decisions adapt to errors measured during the run, so no "
            "schedule exists before it; read the decisions after the run with stats(), or set threshold instead"
        )


def _steps_or_error(num_steps: int | None, fallback: int | None) -> int:
    steps = num_steps if num_steps is not None else fallback
    if steps is None:
        raise ValueError(
            "num_inference_steps: MagCache needs the number of denoising steps to resample its ratios, and none is "
            "known (no MagCacheConfig(num_inference_steps=...), no earlier ditcache.refresh, and the pipeline passed "
            "none through cache_context); call ditcache.refresh(model, num_inference_steps=...) before the run, or "
            "pass MagCacheConfig(num_inference_steps=...). Nothing was computed or cached."
        )
    return steps  # validated where it was given (config, refresh, cache_context) and by magcache_schedule


def profile_curves(profile: Profile, where: str = "<profile>") -> dict[str, tuple[float, ...]]:
    """The per-branch curves of a MagCache profile (``data["curves"]``), validated."""
    curves = profile.data.get("curves")
    if not isinstance(curves, dict) or "cond" not in curves:
        raise ProfileError(f"profile {where}: data.curves must be a dict with at least a 'cond' curve")
    out: dict[str, tuple[float, ...]] = {}
    for role, values in curves.items():
        if role not in ROLES:
            raise ProfileError(f"profile {where}: data.curves has unknown branch {role!r}; allowed: {list(ROLES)}")
        try:
            out[role] = check_curve(values, f"data.curves.{role}")
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"profile {where}: {exc}") from None
    return out


@attrs.frozen
class ResolvedMagCache:
    """A MagCacheConfig made concrete: settings plus the raw (not yet resampled) curve of each branch role."""

    threshold: float
    max_skip_steps: int
    retention_ratio: float
    curves: dict[str, tuple[float, ...]]
    """``"cond"`` (always, unless calibrating) and optionally ``"uncond"``."""
    calibrate: bool
    preset: str | None
    source: str
    model: str | None

    def curve(self, role: str) -> tuple[float, ...]:
        """The raw curve of a role (``"uncond"`` falls back to ``"cond"`` for single-curve sources)."""
        if self.calibrate:
            raise ValueError("MagCacheConfig.calibrate: a calibration run has no schedule (it never skips)")
        return self.curves.get(role) or self.curves["cond"]

    def schedule(self, num_steps: int, role: str = "cond") -> MagCacheSchedule:
        """:func:`magcache_schedule` for a role's curve."""
        return magcache_schedule(self.curve(role), self.threshold, self.max_skip_steps, self.retention_ratio, num_steps)


# ---------------------------------------------------------------------------------------------- middleware
@attrs.define
class _MagState:
    reuse: StepReuse
    calibration_residual: torch.Tensor | None = None
    control: ErrorControl | None = None
    acc: MagAccumulator = attrs.field(factory=MagAccumulator)


class MagCache(CacheMiddleware[_MagState]):
    """The MagCache middleware. Create it with :func:`apply_magcache_hook`.

    Per branch and generation it follows :meth:`schedule` for the run's step count and role (``cond`` or
    ``uncond`` curve: by name for named branches, by order of first appearance for automatic ones). In
    calibration mode it computes every step and records the ratios, read back with :meth:`calibration_profile`
    or written with :meth:`save_profile`.
    """

    name = "magcache"
    level = "step"

    def __init__(self, config: MagCacheConfig, resolved: ResolvedMagCache) -> None:
        super().__init__(config)
        self.resolved = resolved
        self._schedules: dict[tuple[str, int], MagCacheSchedule] = {}
        self._calibration = MagCacheCalibration()
        self._module_class: str | None = None

    def bind(self, module: nn.Module, num_blocks: int) -> None:
        self._module_class = type(module).__name__

    def new_state(self) -> _MagState:
        forecast = self.config.forecast()
        rtol = self.config.rtol
        control = None if rtol is None else ErrorControl(rtol, forecast.order if forecast is not None else 0)
        return _MagState(StepReuse(forecast), control=control)

    # ------------------------------------------------------------------ schedule
    def schedule(self, num_steps: int | None = None, branch: Hashable = "cond") -> MagCacheSchedule:
        """The schedule a branch named ``branch`` follows in a run of ``num_steps`` steps (default: the config's
        ``num_inference_steps``). Print it to see which steps will be skipped before running."""
        _no_schedule_under_rtol(self.config.rtol)
        steps = _steps_or_error(num_steps, self.config.num_inference_steps)
        return self._schedule_for(branch_role(branch), steps)

    def _schedule_for(self, role: str, num_steps: int) -> MagCacheSchedule:
        key = (role, num_steps)
        sched = self._schedules.get(key)
        if sched is None:
            sched = self.resolved.schedule(num_steps, role)
            self._schedules[key] = sched
        return sched

    # ------------------------------------------------------------------ the call
    def process(self, ctx: CacheContext, call_next: CallNextBlocks) -> BlockOutput | FinalOutput:
        state = self.state(ctx)
        out: BlockOutput | FinalOutput
        if self.resolved.calibrate:
            out = self._calibration_step(ctx, state, call_next)
        elif state.control is not None:
            out = self._controlled_step(ctx, state, state.control, call_next)
        else:
            out = self._cached_step(ctx, state, call_next)
        return out

    def _cached_step(self, ctx: CacheContext, state: _MagState, call_next: CallNextBlocks) -> BlockOutput | FinalOutput:
        steps = _steps_or_error(ctx.num_steps, self.config.num_inference_steps)
        sched = self._schedule_for(ctx.role, steps)
        step = ctx.step
        inside = step < len(sched)
        planned = sched.compute[step] if inside else True
        computed = planned or not state.reuse.usable_for(ctx)
        # Skipped: the cached residual (or, with ``taylorseer=True``, its forecast; or the forecast output).
        result = state.reuse.compute(ctx, call_next) if computed else state.reuse.reuse(ctx)
        self.record(
            ctx,
            computed,
            role=ctx.role,
            planned=planned,
            ratio=sched.ratios[step] if inside else None,
            error=sched.accumulated_error[step] if inside else None,
        )
        return result

    def _controlled_step(
        self, ctx: CacheContext, state: _MagState, control: ErrorControl, call_next: CallNextBlocks
    ) -> BlockOutput | FinalOutput:
        """A step under ``rtol``: the published accumulation (:class:`MagAccumulator`), online; a step is skipped
        while the accumulated error is under the threshold the error control set (and at most ``max_skip_steps`` in
        a row); a computed step measures the error a skip would have made and adapts the threshold
        (:mod:`ditcache.caches.tolerance`). In the retention window the accumulators stay untouched and a step's own
        ``|1 - ratio|`` is what the measured error is set against; such observations may lower the threshold but
        not raise it. The resampled curve and the retention come from the (memoised) schedule of the role."""
        sched = self._schedule_for(ctx.role, _steps_or_error(ctx.num_steps, self.config.num_inference_steps))
        step, acc = ctx.step, state.acc
        ratio = sched.ratios[step] if step < len(sched.ratios) else None
        retained = ratio is None or step < sched.retention_steps
        usable = state.reuse.usable_for(ctx)
        if ratio is not None and not retained:
            accumulated = acc.add(ratio)
            skip = usable and control.allows(accumulated) and acc.steps <= self.resolved.max_skip_steps
        else:
            accumulated, skip = (0.0 if ratio is None else abs(1.0 - ratio)), False
        measured: float | None = None
        if skip:
            result = state.reuse.reuse(ctx)
        else:
            result, measured = state.reuse.compute_measured(ctx, call_next, measure=usable)
            if measured is not None:
                control.observe(accumulated, measured, may_raise=not retained)
            acc.reset()
        self.record(
            ctx,
            not skip,
            role=ctx.role,
            ratio=ratio,
            error=accumulated,
            threshold=control.threshold,
            measured_error=measured,
        )
        return result

    # ------------------------------------------------------------------ calibration
    def generation_started(self, branch: Hashable, generation: int, role: Role) -> None:
        """Open the branch's slot (the base class) and, in calibration mode, its recording under ``role``."""
        super().generation_started(branch, generation, role)
        if self.resolved.calibrate:
            self._calibration.start(branch, role)

    def _calibration_step(self, ctx: CacheContext, state: _MagState, call_next: CallNextBlocks) -> BlockOutput:
        h_in = ctx.hidden_states
        hidden, encoder = call_next(ctx)
        residual = hidden - h_in
        ratio, std, cos = self._calibration.measure(ctx.branch, residual, state.calibration_residual, ctx.reducer)
        state.calibration_residual = residual
        self.record(ctx, True, role=ctx.role, ratio=ratio, std=std, cosine_distance=cos)
        return hidden, encoder

    def calibration_profile(self, model: str | None = None, metadata: Mapping[str, Any] | None = None) -> Profile:
        """The ratios measured by the last calibration run, as a ``"magcache"`` :class:`~ditcache.profiles.Profile`.

        ``data`` holds ``num_steps``, per-role ``curves`` (padding ``1.0`` first), ``std`` and
        ``cosine_distance``, and the recorded ``branches``. ``model`` names the profile (default: the config's
        ``model``, else the module's class name). Raises ValueError if nothing was calibrated.
        """
        return self._calibration.profile(model or self.config.model or self._module_class, self._module_class, metadata)

    def save_profile(
        self,
        path_or_name: str | os.PathLike[str],
        *,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = True,
    ) -> Path:
        """Write :meth:`calibration_profile` to a path or under a name in the profile directory; returns the
        file. Load it with ``MagCacheConfig(profile=path_or_name)``."""
        return save_profile(self.calibration_profile(model, metadata), path_or_name, overwrite=overwrite)


def apply_magcache_hook(
    module: nn.Module,
    cfg: MagCacheConfig | Mapping[str, Any] | None = None,
    *,
    extractor: Extractor | str | None = None,
) -> MagCache:
    """Accelerate ``module`` with MagCache: the one-line entry point.

    ``cfg`` is a :class:`MagCacheConfig`, a dict of its fields, or None for the defaults; the ratio preset is
    inferred from the module's class when the config names no model, ratios or profile. Returns the MagCache
    middleware in effect (its :meth:`~ditcache.core.cache.CacheMiddleware.stats` list what was skipped; its
    :meth:`~MagCache.schedule` what will be).
    """
    config = coerce_config(MagCacheConfig, cfg)
    module = resolve_module(module, extractor)  # a non-module or a model without extractor fails first
    middleware = MagCache(config, config.resolve(module))
    return apply_cache(module, middleware, extractor=extractor, num_inference_steps=config.num_inference_steps)
