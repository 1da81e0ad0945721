"""``DiffusionCacheConfig``: the flat cache configuration every serving backend reads.

The fields, their names and their defaults are vLLM-Omni's (``vllm_omni.diffusion.data.DiffusionCacheConfig``), so
an engine's ``cache_config`` dict carries over unchanged. Unlike vLLM-Omni, the config is strict:

* an unknown or misspelled key (in the constructor or :meth:`DiffusionCacheConfig.from_dict`) is a ValueError
  naming the key and the closest valid ones (vLLM-Omni stores it silently, so ``{"threshold": 0.06}`` never
  reaches MagCache's ``mag_threshold``);
* every value is checked, with the field named, when the config is built and again when a backend is enabled
  (the config is a mutable dataclass, as vLLM-Omni's is).

Two fields are ditcache's own: ``ditcache_stack``, the caches the ``"ditcache"`` backend stacks, and
``ditcache_rtol``, an error tolerance for its step-level cache; the other backends refuse a set ``ditcache_rtol``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ditcache.core.validators import Rule, check_keys, closest_names, finite, int_ge, is_bool, one_of, optional

__all__ = ["DITCACHE_STACK_CACHES", "DiffusionCacheConfig"]

SCM_MASK_POLICIES = ("slow", "medium", "fast", "ultra")
"""cache-dit's step-computation-mask presets (``scm_steps_mask_policy``)."""
SCM_STEPS_POLICIES = ("dynamic", "static")
FORCE_REFRESH_POLICIES = ("once", "repeat")
DITCACHE_STACK_CACHES = ("tea_cache", "mag_cache", "db_cache")
"""What ``ditcache_stack`` may list: at most one step-level cache (TeaCache or MagCache) and DBCache."""


@dataclass
class DiffusionCacheConfig:
    """The cache settings of one pipeline, for every backend (vLLM-Omni's fields and defaults, validated).

    TeaCache reads ``rel_l1_thresh`` and ``coefficients``; MagCache the ``mag_*`` fields; cache-dit (and the
    DBCache of the ``"ditcache"`` backend) ``Fn_compute_blocks`` to ``force_refresh_step_policy``;
    ``num_inference_steps`` is the step count assumed until the first ``refresh``. The ``step_cache_*`` and
    ``velocity_*`` fields are accepted for compatibility (vLLM-Omni's DreamZero-only StepCache) and validated,
    but no ditcache backend reads them.
    """

    rel_l1_thresh: float | None = 0.2
    """TeaCache threshold on the accumulated rescaled distance (> 0); None: 0.2."""
    coefficients: list[float] | None = None
    """TeaCache rescale polynomial, 5 numbers, highest power first; None: the model's published preset."""
    mag_threshold: float = 0.24
    """MagCache accumulated-error threshold (> 0)."""
    mag_max_skip_steps: int = 5
    """MagCache: at most this many skipped steps in a row (>= 1)."""
    mag_retention_ratio: float = 0.1
    """MagCache: fraction of leading steps always computed, in (0, 1)."""
    mag_ratios: list[float] | None = None
    """MagCache magnitude-ratio curve; None: the model's published preset, resampled per request."""
    mag_calibrate: bool = False
    """MagCache: measure the ratios instead of skipping."""
    Fn_compute_blocks: int = 1
    """DBCache: first blocks always computed (>= 1)."""
    Bn_compute_blocks: int = 0
    """DBCache: last blocks always computed (>= 0)."""
    max_warmup_steps: int = 4
    """DBCache: leading steps always computed (>= 0)."""
    max_cached_steps: int = -1
    """DBCache: cap on cached steps per request (-1: no cap)."""
    residual_diff_threshold: float = 0.24
    """DBCache: cache while the relative L1 change of the first blocks' residual is below it."""
    max_continuous_cached_steps: int = 3
    """DBCache: cap on cached steps in a row (-1: no cap)."""
    enable_taylorseer: bool = False
    """Forecast cached residuals with TaylorSeer."""
    taylorseer_order: int = 1
    """TaylorSeer order (>= 1)."""
    scm_steps_mask_policy: str | None = None
    """Step computation mask preset: None, "slow", "medium", "fast" or "ultra"."""
    scm_steps_policy: str = "dynamic"
    """What a 0 in the mask means: "dynamic" (the threshold still decides) or "static" (always cache)."""
    num_inference_steps: int | None = None
    """The step count assumed until the first ``refresh`` (MagCache: 28 when None, as vLLM-Omni)."""
    force_refresh_step_hint: int | None = None
    """cache-dit: step at which the cache context is refreshed within a request (>= 1)."""
    force_refresh_step_policy: str = "once"
    """cache-dit: "once" or "repeat" (every ``force_refresh_step_hint`` steps)."""
    step_cache_dit_enabled: bool = True
    velocity_sim_thresholds: list[float] = field(default_factory=lambda: [0.95, 0.93])
    velocity_skip_countdowns: list[int] = field(default_factory=lambda: [4, 2])
    step_cache_dit_min_history: int = 2
    step_cache_dit_max_history: int = 2
    ditcache_stack: list[str] = field(default_factory=lambda: ["tea_cache", "db_cache"])
    """ditcache backend only: the caches to stack, from ``"tea_cache"`` / ``"mag_cache"`` (at most one) and
    ``"db_cache"``; TaylorSeer comes from ``enable_taylorseer``."""
    ditcache_rtol: float | None = None
    """ditcache backend only: an error tolerance in (0, 1) for the step-level cache of ``ditcache_stack`` in place
    of ``rel_l1_thresh`` / ``mag_threshold`` (``ditcache.caches.tolerance``: the same setting on every model)."""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        """The keys a config dict may use."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiffusionCacheConfig:
        """Build from a dict; an unknown key is a ValueError naming it and the closest valid keys."""
        if not isinstance(data, Mapping):
            raise TypeError(f"DiffusionCacheConfig: expected a dict of cache settings, got {type(data).__name__}")
        check_keys(cls, data, cls.field_names())
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    def __getattr__(self, name: str) -> Any:
        # Only called for missing attributes: name the closest fields instead of storing or returning extras.
        if name.startswith("_"):
            raise AttributeError(name)
        hint = closest_names(name, self.field_names())
        raise AttributeError(
            f"DiffusionCacheConfig has no setting {name!r}"
            + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else "")
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every value; raise ValueError (or TypeError) naming the field and what it allows."""
        _check(self, "rel_l1_thresh", optional(finite(gt=0)))
        if self.coefficients is not None:
            values = _numbers(self, "coefficients")
            if len(values) != 5:
                raise ValueError(
                    f"DiffusionCacheConfig.coefficients: expected 5 numbers [c4, c3, c2, c1, c0] (highest power "
                    f"first), got {len(values)}"
                )
        _check(self, "mag_threshold", finite(gt=0))
        _check(self, "mag_max_skip_steps", int_ge(1))
        _check(self, "mag_retention_ratio", finite(gt=0, lt=1))
        if self.mag_ratios is not None:
            ratios = _numbers(self, "mag_ratios")
            if not ratios or any(v <= 0 for v in ratios):
                raise ValueError(
                    f"DiffusionCacheConfig.mag_ratios: expected a non-empty list of positive numbers, got {ratios!r}"
                )
        _check(self, "mag_calibrate", is_bool)
        if self.mag_calibrate and self.mag_ratios is not None:
            raise ValueError(
                "DiffusionCacheConfig.mag_calibrate: a calibration run measures the ratios; unset mag_ratios"
            )
        _check(self, "Fn_compute_blocks", int_ge(1))
        _check(self, "Bn_compute_blocks", int_ge(0))
        _check(self, "max_warmup_steps", int_ge(0))
        _check(self, "max_cached_steps", int_ge(-1))
        _check(self, "max_continuous_cached_steps", int_ge(-1))
        _check(self, "residual_diff_threshold", finite())
        _check(self, "enable_taylorseer", is_bool)
        _check(self, "taylorseer_order", int_ge(1))
        _check(self, "scm_steps_mask_policy", one_of((None, *SCM_MASK_POLICIES)))
        _check(self, "scm_steps_policy", one_of(SCM_STEPS_POLICIES))
        _check(self, "num_inference_steps", optional(int_ge(1)))
        _check(self, "force_refresh_step_hint", optional(int_ge(1)))
        _check(self, "force_refresh_step_policy", one_of(FORCE_REFRESH_POLICIES))
        _check(self, "step_cache_dit_enabled", is_bool)
        sims = _numbers(self, "velocity_sim_thresholds")
        counts = self.velocity_skip_countdowns
        if not isinstance(counts, (list, tuple)) or not all(_is_int(c) and c >= 1 for c in counts):
            raise ValueError(
                f"DiffusionCacheConfig.velocity_skip_countdowns: expected a list of ints >= 1, got {counts!r}"
            )
        if len(sims) != len(counts):
            raise ValueError(
                "DiffusionCacheConfig.velocity_sim_thresholds: must have as many entries as velocity_skip_countdowns "
                f"({len(sims)} != {len(counts)})"
            )
        _check(self, "step_cache_dit_min_history", int_ge(1))
        _check(self, "step_cache_dit_max_history", int_ge(1))
        stack = self.ditcache_stack
        if isinstance(stack, str) or not isinstance(stack, (list, tuple)) or not stack:
            raise ValueError(
                f"DiffusionCacheConfig.ditcache_stack: expected a non-empty list from {list(DITCACHE_STACK_CACHES)}, "
                f"got {stack!r}"
            )
        for name in stack:
            if name not in DITCACHE_STACK_CACHES:
                hint = closest_names(str(name), DITCACHE_STACK_CACHES)
                raise ValueError(
                    f"DiffusionCacheConfig.ditcache_stack: unknown cache {name!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; allowed: {list(DITCACHE_STACK_CACHES)}"
                )
        if len(set(stack)) != len(stack):
            raise ValueError(f"DiffusionCacheConfig.ditcache_stack: a cache is listed twice in {list(stack)}")
        if "tea_cache" in stack and "mag_cache" in stack:
            raise ValueError(
                "DiffusionCacheConfig.ditcache_stack: 'tea_cache' and 'mag_cache' are both step-level caches; list "
                "at most one of them (over 'db_cache')"
            )
        _check(self, "ditcache_rtol", optional(finite(gt=0, lt=1)))
        if self.ditcache_rtol is not None and not {"tea_cache", "mag_cache"} & set(stack):
            raise ValueError(
                "DiffusionCacheConfig.ditcache_rtol: a tolerance for the step-level cache, and ditcache_stack "
                f"{list(stack)} has none; add 'tea_cache' or 'mag_cache', or unset ditcache_rtol"
            )


def _strict_init(init: Any) -> Any:
    @functools.wraps(init)
    def __init__(self: DiffusionCacheConfig, *args: Any, **kwargs: Any) -> None:
        check_keys(DiffusionCacheConfig, kwargs, DiffusionCacheConfig.field_names())
        init(self, *args, **kwargs)

    return __init__


DiffusionCacheConfig.__init__ = _strict_init(DiffusionCacheConfig.__init__)  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------- validators
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _name(cfg: Any, name: str) -> str:
    return f"{type(cfg).__name__}.{name}"


def _check(cfg: Any, name: str, rule: Rule) -> None:
    rule.check(getattr(cfg, name), _name(cfg, name))


def _numbers(cfg: Any, name: str) -> list[float]:
    value = getattr(cfg, name)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(_is_number(v) for v in value):
        raise ValueError(f"{_name(cfg, name)}: expected a list of numbers, got {value!r}")
    out = [float(v) for v in value]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{_name(cfg, name)}: every number must be finite, got {value!r}")
    return out
