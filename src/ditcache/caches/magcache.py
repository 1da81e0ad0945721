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

import datetime
import math
import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, overload

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ditcache.caches.reuse import ForecastSettings, StepReuse
from ditcache.core.branch import ROLES, named_role
from ditcache.core.cache import CacheMiddleware, CallNextBlocks, FinalOutput
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.extractor import Extractor
from ditcache.core.log import get_logger
from ditcache.core.runtime import apply_cache
from ditcache.core.validators import check_keys, coerce_config, is_bool
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


# ---------------------------------------------------------------------------------------------- curve helpers
def _check_curve(ratios: Any, name: str) -> tuple[float, ...]:
    if isinstance(ratios, (str, bytes)) or isinstance(ratios, Mapping):
        raise TypeError(f"{name}: expected a sequence of positive numbers, got {type(ratios).__name__}")
    try:
        values = tuple(float(v) for v in ratios)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a sequence of positive numbers, got {ratios!r}") from None
    if not values:
        raise ValueError(f"{name}: expected at least one ratio, got an empty sequence")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"{name}: every ratio must be a finite number > 0, got {bad[:3]}")
    return values


def resample_ratios(ratios: Sequence[float], num_steps: int) -> tuple[float, ...]:
    """Resample a per-branch curve to ``num_steps`` entries by nearest index.

    ``out[i] = ratios[round(i * (L - 1) / (num_steps - 1))]`` with ``L = len(ratios)``, rounding half to even
    (as ``numpy.round`` in MagCache's ``nearest_interp`` and ``torch.round`` in diffusers); the index is
    computed exactly (rational arithmetic), so no float error can move it. ``num_steps == 1`` takes the last
    entry. A curve already of length ``num_steps`` is returned unchanged.
    """
    curve = _check_curve(ratios, "ratios")
    _check_int(num_steps, "num_steps", 1)
    n = len(curve)
    if n == num_steps:
        return curve
    if num_steps == 1:
        return (curve[-1],)
    return tuple(curve[round(Fraction(i * (n - 1), num_steps - 1))] for i in range(num_steps))


def split_interleaved(ratios: Sequence[float]) -> dict[str, tuple[float, ...]]:
    """Split a curve recorded with interleaved cond/uncond entries: ``{"cond": [0::2], "uncond": [1::2]}``."""
    curve = _check_curve(ratios, "ratios")
    if len(curve) % 2:
        raise ValueError(f"ratios: an interleaved cond/uncond curve has an even length, got {len(curve)}")
    return {"cond": curve[0::2], "uncond": curve[1::2]}


def magcache_retention_steps(retention_ratio: float, num_steps: int) -> int:
    """Steps always computed at the start: ``int(retention_ratio * num_steps + 0.5)``.

    This is MagCache4FLUX's and diffusers' rounding (round half up of ``R * N``; 0.1 x 28 -> 3, 0.2 x 50 -> 10).
    MagCache4Wan truncates ``int(R * 2N)`` over interleaved forwards instead, which gives the same count for
    its published settings.
    """
    _check_ratio(retention_ratio, "retention_ratio")
    _check_int(num_steps, "num_steps", 1)
    return int(retention_ratio * num_steps + 0.5)


@attrs.frozen
class MagCacheSchedule(Sequence[bool]):
    """The per-step decisions of MagCache for one branch: ``schedule[t]`` is True when step ``t`` computes.

    A sequence of booleans with the resampled ratios and accumulated errors alongside; ``str(schedule)`` shows
    it compactly (``C`` = compute, ``-`` = reuse the cached residual).
    """

    compute: tuple[bool, ...]
    """Per step: True to run the blocks, False to reuse the cached residual."""
    ratios: tuple[float, ...]
    """The curve resampled to the step count (``ratios[t]`` is ``gamma_t``)."""
    accumulated_error: tuple[float, ...]
    """Per step: the accumulated error the decision compared with the threshold (0.0 inside the retention
    window and on the first step)."""
    retention_steps: int
    """Leading steps always computed."""
    threshold: float
    max_skip_steps: int

    @overload
    def __getitem__(self, index: int) -> bool: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bool]: ...
    def __getitem__(self, index: int | slice) -> bool | Sequence[bool]:
        return self.compute[index]

    def __len__(self) -> int:
        return len(self.compute)

    def __iter__(self) -> Iterator[bool]:
        return iter(self.compute)

    @property
    def computed_steps(self) -> list[int]:
        """Indices of the steps that run the blocks."""
        return [t for t, c in enumerate(self.compute) if c]

    @property
    def skipped_steps(self) -> list[int]:
        """Indices of the steps that reuse the cached residual."""
        return [t for t, c in enumerate(self.compute) if not c]

    @property
    def pattern(self) -> str:
        """One character per step: ``C`` computes, ``-`` reuses."""
        return "".join("C" if c else "-" for c in self.compute)

    def __str__(self) -> str:
        return f"{len(self.computed_steps)}/{len(self)} steps computed: {self.pattern}"


def magcache_schedule(
    ratios: Sequence[float],
    threshold: float,
    max_skip_steps: int,
    retention_ratio: float,
    num_steps: int,
) -> MagCacheSchedule:
    """MagCache's compute/skip decision for every step of one branch, computed up front.

    ``ratios`` is one branch's curve (padding ``1.0`` first, any length: it is resampled with
    :func:`resample_ratios`; split interleaved curves with :func:`split_interleaved` first). Step 0 always
    computes (nothing is cached yet); steps before ``int(retention_ratio * num_steps + 0.5)`` compute without
    touching the accumulators; then ``ratio *= gamma_t``, ``k += 1``, ``error += |1 - ratio|``, and the step is
    skipped iff ``error <= threshold and k <= max_skip_steps``, else computed with the accumulators reset.
    The accumulation is in float64, as MagCache's numpy code.
    """
    _check_threshold(threshold, "threshold")
    _check_int(max_skip_steps, "max_skip_steps", 1)
    retention = magcache_retention_steps(retention_ratio, num_steps)
    curve = resample_ratios(ratios, num_steps)
    acc_ratio, acc_steps, acc_err = 1.0, 0, 0.0
    compute: list[bool] = []
    errors: list[float] = []
    for t in range(num_steps):
        err_seen = 0.0
        if t >= retention:
            acc_ratio *= curve[t]
            acc_steps += 1
            acc_err += abs(1.0 - acc_ratio)
            err_seen = acc_err
            if t > 0 and acc_err <= threshold and acc_steps <= max_skip_steps:
                compute.append(False)
                errors.append(err_seen)
                continue
            acc_ratio, acc_steps, acc_err = 1.0, 0, 0.0
        compute.append(True)
        errors.append(err_seen)
    return MagCacheSchedule(
        compute=tuple(compute),
        ratios=curve,
        accumulated_error=tuple(errors),
        retention_steps=retention,
        threshold=float(threshold),
        max_skip_steps=max_skip_steps,
    )


def branch_role(branch: Hashable) -> str:
    """The curve a branch *named* ``branch`` uses (:func:`ditcache.core.branch.named_role`; ``"cond"`` when the
    name says nothing). Running caches read the role the step clock stamped on ``ctx.role`` instead."""
    return named_role(branch) or "cond"


# ---------------------------------------------------------------------------------------------- validators
def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _check_threshold(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")


def _check_ratio(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")


def _v_threshold(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_threshold(value, f"MagCacheConfig.{attribute.name}")


def _v_max_skip(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_int(value, f"MagCacheConfig.{attribute.name}", 1)


def _v_retention(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_ratio(value, f"MagCacheConfig.{attribute.name}")


def _v_steps(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        try:
            _check_int(value, f"MagCacheConfig.{attribute.name}", 1)
        except ValueError:
            raise ValueError(f"MagCacheConfig.{attribute.name}: expected an int >= 1 or None, got {value!r}") from None


def _v_model(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value not in MAG_RATIO_PRESETS:
        raise ValueError(
            f"MagCacheConfig.model: unknown model {value!r}; allowed values: {sorted(MAG_RATIO_PRESETS)} "
            "(or leave it None to infer it from the module, or pass mag_ratios=... or profile=...)"
        )


def _c_ratios(value: Any) -> tuple[float, ...] | None:
    return None if value is None else _check_curve(value, "MagCacheConfig.mag_ratios")


def _c_profile(value: Any) -> str | None:
    return profile_reference(value, "MagCacheConfig.profile")


# ---------------------------------------------------------------------------------------------- config
@attrs.frozen(kw_only=True)
class MagCacheConfig:
    """Settings of MagCache. Frozen and validated; unknown keys are refused by :meth:`from_dict`.

    The curve comes from, in order: ``mag_ratios`` (one curve for every branch), ``profile`` (a calibrated
    profile, per-branch curves), ``model`` (a published preset, see ``ditcache.presets.magcache``), or the preset
    inferred from the module's class. ``calibrate=True`` measures a curve instead of skipping anything.
    The defaults (0.06, 3, 0.2) are diffusers'; each preset lists its authors' recommended settings.
    """

    threshold: float = attrs.field(default=0.06, validator=_v_threshold)
    """Accumulated-error threshold ``E``; a step is skipped while the error is ``<=`` it. Larger skips more."""
    max_skip_steps: int = attrs.field(default=3, validator=_v_max_skip)
    """``K``: at most this many steps skipped in a row."""
    retention_ratio: float = attrs.field(default=0.2, validator=_v_retention)
    """Fraction of leading steps always computed: the first ``int(retention_ratio * N + 0.5)``."""
    num_inference_steps: int | None = attrs.field(default=None, validator=_v_steps)
    """Steps per generation when known up front; ``ditcache.refresh(module, n)`` or a pipeline's
    ``cache_context(num_inference_steps=...)`` sets it per run and takes precedence."""
    model: str | None = attrs.field(default=None, validator=_v_model)
    """Preset key (``ditcache.presets.magcache.MAG_RATIO_PRESETS``); inferred from the module when None. With
    ``mag_ratios``, ``profile`` or ``calibrate`` it only names the model (in logs and calibrated profiles)."""
    mag_ratios: tuple[float, ...] | None = attrs.field(default=None, converter=_c_ratios)
    """An explicit curve (positive numbers, padding ``1.0`` first) for every branch, overriding the preset."""
    profile: str | None = attrs.field(default=None, converter=_c_profile)
    """Name or path of a calibrated MagCache profile (``ditcache.profiles``), giving per-branch curves."""
    calibrate: bool = attrs.field(default=False, validator=is_bool)
    """Measure the ratios instead of skipping; read them with :meth:`MagCache.calibration_profile`."""
    taylorseer: bool = attrs.field(default=False, validator=is_bool)
    """Forecast the reused residual with TaylorSeer instead of reusing the last one (see
    ``ditcache.caches.taylorseer``); the schedule is unchanged."""
    taylorseer_order: int = attrs.field(default=1)
    """TaylorSeer order (validated by :class:`~ditcache.caches.reuse.ForecastSettings`)."""
    taylorseer_method: str = attrs.field(default="taylor")
    """``"taylor"`` (published expansion) or ``"newton"`` (exact for polynomials up to the order)."""
    taylorseer_target: str = attrs.field(default="residual")
    """What is forecast on skipped steps: ``"residual"`` (the blocks' residual; the head still runs) or ``"output"``
    (the model's output itself, skipping the head too, as diffusers' TaylorSeer lite). Needs ``taylorseer=True``."""

    def forecast(self) -> ForecastSettings | None:
        """The forecasting settings, or None when TaylorSeer is off."""
        if not self.taylorseer:
            return None
        return ForecastSettings(self.taylorseer_order, self.taylorseer_method, self.taylorseer_target)

    def __attrs_post_init__(self) -> None:
        try:
            ForecastSettings(self.taylorseer_order, self.taylorseer_method, self.taylorseer_target)
        except ValueError as exc:
            raise ValueError(f"MagCacheConfig.{exc}") from None
        if self.taylorseer_target == "output" and not self.taylorseer:
            raise ValueError(
                "MagCacheConfig.taylorseer_target: 'output' forecasts with TaylorSeer; set taylorseer=True "
                "(taylorseer_order=0 reuses the last output)"
            )
        if self.mag_ratios is not None and self.profile is not None:
            raise ValueError(
                "MagCacheConfig.mag_ratios: give either mag_ratios or profile, not both (each is a full curve)"
            )
        if self.calibrate and (self.mag_ratios is not None or self.profile is not None):
            raise ValueError(
                "MagCacheConfig.calibrate: a calibration run measures the ratios and never skips; do not pass "
                "mag_ratios or profile with calibrate=True"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MagCacheConfig:
        """Build from a mapping; an unknown key is an error naming the allowed ones."""
        check_keys(cls, data)
        return cls(**data)

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
            threshold=float(self.threshold),
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
        return self.resolve(module).schedule(_steps_or_error(num_steps, self.num_inference_steps), branch_role(branch))


def _steps_or_error(num_steps: int | None, fallback: int | None) -> int:
    steps = num_steps if num_steps is not None else fallback
    if steps is None:
        raise ValueError(
            "num_inference_steps: MagCache needs the number of denoising steps to resample its ratios; pass "
            "MagCacheConfig(num_inference_steps=...) or call ditcache.refresh(module, num_inference_steps=...) "
            "before the run"
        )
    _check_int(steps, "num_inference_steps", 1)
    return steps


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
            out[role] = _check_curve(values, f"data.curves.{role}")
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
class _CalibrationRecord:
    branch: str
    role: str
    ratios: list[float] = attrs.field(factory=list)
    std: list[float] = attrs.field(factory=list)
    cosine_distance: list[float] = attrs.field(factory=list)


@attrs.define
class _MagState:
    reuse: StepReuse
    role: str | None = None
    calibration_residual: torch.Tensor | None = None


def residual_metrics(current: torch.Tensor, previous: torch.Tensor) -> tuple[float, float, float]:
    """MagCache's calibration metrics of two consecutive residuals, in float32 over the last dim (tokens):
    ``(mean(|r_t| / |r_{t-1}|), std(|r_t| / |r_{t-1}|), mean(1 - cos(r_t, r_{t-1})))``. One host sync.

    As MagCache's calibration code, without diffusers' ``+1e-8`` in the denominator (a zero norm is clamped to
    the smallest normal float32 instead); ``std`` is torch's unbiased one (0.0 for a single token).
    """
    cur = current.float()
    prev = previous.float()
    ratio = torch.linalg.vector_norm(cur, dim=-1) / torch.linalg.vector_norm(prev, dim=-1).clamp_min(
        torch.finfo(torch.float32).tiny
    )
    std = ratio.std() if ratio.numel() > 1 else torch.zeros((), device=ratio.device)
    cos = (1.0 - F.cosine_similarity(cur, prev, dim=-1, eps=1e-8)).mean()
    mean, sd, cd = torch.stack([ratio.mean(), std, cos]).tolist()
    return float(mean), float(sd), float(cd)


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
        self._calibration: dict[Hashable, _CalibrationRecord] = {}
        self._module_class: str | None = None

    def bind(self, module: nn.Module, num_blocks: int) -> None:
        self._module_class = type(module).__name__

    def new_state(self) -> _MagState:
        return _MagState(StepReuse(self.config.forecast()))

    # ------------------------------------------------------------------ schedule
    def schedule(self, num_steps: int | None = None, branch: Hashable = "cond") -> MagCacheSchedule:
        """The schedule a branch named ``branch`` follows in a run of ``num_steps`` steps (default: the config's
        ``num_inference_steps``). Print it to see which steps will be skipped before running."""
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
        if state.role is None:  # the first call of the generation: the role the step clock gave the branch
            state.role = ctx.role
            if self.resolved.calibrate:
                self._start_calibration(ctx.branch, state.role)
        out: BlockOutput | FinalOutput
        if self.resolved.calibrate:
            out = self._calibration_step(ctx, state, call_next)
        else:
            out = self._cached_step(ctx, state, call_next)
        return out

    def _cached_step(self, ctx: CacheContext, state: _MagState, call_next: CallNextBlocks) -> BlockOutput | FinalOutput:
        assert state.role is not None
        steps = _steps_or_error(ctx.num_steps, self.config.num_inference_steps)
        sched = self._schedule_for(state.role, steps)
        step = ctx.step
        inside = step < len(sched)
        planned = sched.compute[step] if inside else True
        computed = planned or not state.reuse.usable_for(ctx)
        # Skipped: the cached residual (or, with ``taylorseer=True``, its forecast; or the forecast output).
        result = state.reuse.compute(ctx, call_next) if computed else state.reuse.reuse(ctx)
        self.record(
            ctx,
            computed,
            role=state.role,
            planned=planned,
            ratio=sched.ratios[step] if inside else None,
            error=sched.accumulated_error[step] if inside else None,
        )
        return result

    # ------------------------------------------------------------------ calibration
    def _start_calibration(self, branch: Hashable, role: str) -> None:
        records = self._calibration
        if branch in records or any(len(r.ratios) > 1 for r in records.values()):
            records.clear()  # a new calibration run
        records[branch] = _CalibrationRecord(branch=str(branch), role=role)

    def _calibration_step(self, ctx: CacheContext, state: _MagState, call_next: CallNextBlocks) -> BlockOutput:
        h_in = ctx.hidden_states
        hidden, encoder = call_next(ctx)
        residual = hidden - h_in
        previous = state.calibration_residual
        if previous is None or previous.shape != residual.shape:
            ratio, std, cos = 1.0, 0.0, 0.0  # the padding entry: no ratio for the first step
        else:
            ratio, std, cos = residual_metrics(residual, previous)
        record = self._calibration.get(ctx.branch)
        if record is not None:
            record.ratios.append(ratio)
            record.std.append(std)
            record.cosine_distance.append(cos)
        state.calibration_residual = residual
        self.record(ctx, True, role=state.role, ratio=ratio, std=std, cosine_distance=cos)
        return hidden, encoder

    def calibration_profile(self, model: str | None = None, metadata: Mapping[str, Any] | None = None) -> Profile:
        """The ratios measured by the last calibration run, as a ``"magcache"`` :class:`~ditcache.profiles.Profile`.

        ``data`` holds ``num_steps``, per-role ``curves`` (padding ``1.0`` first), ``std`` and
        ``cosine_distance``, and the recorded ``branches``. ``model`` names the profile (default: the config's
        ``model``, else the module's class name). Raises ValueError if nothing was calibrated.
        """
        records = list(self._calibration.values())
        if not records:
            raise ValueError(
                "calibrate: no calibration data; apply MagCache with MagCacheConfig(calibrate=True) and run one "
                "complete generation first"
            )
        by_role: dict[str, _CalibrationRecord] = {}
        branches = []
        for rec in records:
            used = rec.role not in by_role
            if used:
                by_role[rec.role] = rec
            branches.append({"branch": rec.branch, "role": rec.role, "steps": len(rec.ratios), "used": used})
        if "cond" not in by_role:  # only uncond-named branches ran: their curve is the only one there is
            by_role = {"cond": by_role.pop("uncond"), **by_role}
        lengths = {role: len(rec.ratios) for role, rec in by_role.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"calibrate: the branches recorded different step counts {lengths}; run one complete generation "
                "(every branch, every step) before reading the profile"
            )
        num_steps = next(iter(lengths.values()))
        if num_steps < 2:
            raise ValueError(f"calibrate: {num_steps} step recorded; a profile needs a run of at least 2 steps")
        data = {
            "num_steps": num_steps,
            "curves": {role: list(rec.ratios) for role, rec in by_role.items()},
            "std": {role: list(rec.std) for role, rec in by_role.items()},
            "cosine_distance": {role: list(rec.cosine_distance) for role, rec in by_role.items()},
            "branches": branches,
        }
        from ditcache.core.version import VERSION as __version__

        meta: dict[str, Any] = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "module_class": self._module_class,
            "ditcache_version": __version__,
            "torch_version": torch.__version__,
            "metric": "mean_tokens(||r_t||_2 / ||r_{t-1}||_2) of the block-stack residual, float32",
        }
        meta.update(metadata or {})
        name = model or self.config.model or self._module_class
        return Profile(kind="magcache", model=name, data=data, metadata=meta)

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
    middleware = MagCache(config, config.resolve(module))
    return apply_cache(module, middleware, extractor=extractor, num_inference_steps=config.num_inference_steps)
