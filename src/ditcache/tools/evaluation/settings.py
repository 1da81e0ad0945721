"""What every configuration of an evaluation is run with (:class:`EvalSettings`) and the configurations themselves
(:class:`Method`; :func:`ours` builds one from ditcache cache configs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from torch import nn

from ditcache.bundled import get_bundled_model
from ditcache.core.validators import check_keys

__all__ = ["TIMERS", "BeforeRun", "EvalSettings", "InstallFn", "Method", "config_params", "ours"]

TIMERS = ("wall", "cpu")
"""How runs are timed: ``"wall"`` (``time.perf_counter``) or ``"cpu"`` (``time.process_time``: the CPU time of
this process, all threads; steadier than wall time on a busy machine, meaningful on the CPU only)."""


# ---------------------------------------------------------------------------------------------- settings
def _labels(value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or isinstance(value, Mapping):
        raise TypeError(f"EvalSettings.labels: expected a sequence of class labels (ints), got {value!r}")
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(f"EvalSettings.labels: expected a sequence of class labels (ints), got {value!r}") from None
    return out  # type: ignore[return-value]


def _check_model(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    try:
        get_bundled_model(value)
    except ValueError as exc:
        raise ValueError(f"EvalSettings.{exc}") from None


def _check_labels(inst: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ValueError("EvalSettings.labels: expected at least one label")
    top = get_bundled_model(inst.model).null_label - 1  # the model is validated first (field order)
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top]
    if bad:
        raise ValueError(
            f"EvalSettings.labels: allowed values are the {inst.model} model's labels 0..{top}, got {bad[:3]}"
        )


def _int_at_least(low: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"EvalSettings.{attribute.name}: expected an int >= {low}, got {value!r}")

    return check


def _check_guidance(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"EvalSettings.guidance_scale: expected None (no guidance) or a number > 0, got {value!r}")
    if value == 1.0:
        raise ValueError("EvalSettings.guidance_scale: 1.0 is the same as no guidance; pass None instead")


def _check_shift(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"EvalSettings.shift: expected a finite number > 0, got {value!r}")


def _check_timer(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in TIMERS:
        raise ValueError(f"EvalSettings.timer: expected one of {list(TIMERS)}, got {value!r}")


@attrs.frozen(kw_only=True)
class EvalSettings:
    """What every configuration of one evaluation is run with."""

    model: str = attrs.field(default="digits", validator=_check_model)
    """The bundled model sampled (a key of :data:`ditcache.bundled.BUNDLED_MODELS`)."""
    labels: tuple[int, ...] = attrs.field(default=tuple(range(10)), converter=_labels, validator=_check_labels)
    """One image per label (``0..null_label - 1`` of the model; digits 0-9 for ``"digits"``), generated as one
    batch."""
    seed: int = attrs.field(default=0, validator=_int_at_least(0))
    """Seed of the initial noise."""
    num_steps: int = attrs.field(default=50, validator=_int_at_least(2))
    """Euler steps per generation."""
    guidance_scale: float | None = attrs.field(default=3.0, validator=_check_guidance)
    """Classifier-free guidance scale (a separate ``"uncond"`` call per step), or None for no guidance."""
    shift: float = attrs.field(default=1.0, validator=_check_shift)
    """Static sigma-schedule shift of the sampler (1.0: uniform steps)."""
    repeats: int = attrs.field(default=3, validator=_int_at_least(1))
    """Timed runs of every configuration; the fastest counts."""
    timer: str = attrs.field(default="wall", validator=_check_timer)
    """``"wall"`` or ``"cpu"`` (see :data:`TIMERS`)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalSettings:
        """Build from a mapping; an unknown key is an error naming the allowed ones."""
        check_keys(cls, data)
        return cls(**data)

    @property
    def guided(self) -> bool:
        """Whether every step makes a second, ``"uncond"`` transformer call."""
        return self.guidance_scale is not None

    @property
    def branches(self) -> tuple[str, ...]:
        """The CFG branches, in the order the sampler calls them within a step."""
        return ("cond", "uncond") if self.guided else ("cond",)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values."""
        out = attrs.asdict(self)
        out["labels"] = list(self.labels)
        return out


# ---------------------------------------------------------------------------------------------- methods
BeforeRun = Callable[[], None]
"""Called before every sampling run of a configuration (e.g. a peer's explicit cache reset)."""

InstallFn = Callable[[Any, EvalSettings], "BeforeRun | None"]
"""Installs a configuration on a fresh model copy (a bundled model, with ``.transformer``); returns what to call
before each run, or None."""


def _no_install(model: Any, settings: EvalSettings) -> None:
    return None


def _check_origin(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("ours", "peer", "baseline"):
        raise ValueError(f"Method.origin: expected 'ours', 'peer' or 'baseline', got {value!r}")


def _check_name(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"Method.{attribute.name}: expected a non-empty string, got {value!r}")


@attrs.frozen
class Method:
    """One configuration to evaluate: a name, where it comes from, its settings and how to install it."""

    name: str = attrs.field(validator=_check_name)
    """Unique label (table rows, JSON keys, plot labels)."""
    origin: str = attrs.field(validator=_check_origin)
    """``"ours"`` (a ditcache cache), ``"peer"`` (diffusers, cache-dit) or ``"baseline"`` (uncached)."""
    family: str = attrs.field(validator=_check_name)
    """Group for plots and tables, e.g. ``"magcache"``, ``"diffusers-fbc"``."""
    params: dict[str, Any] = attrs.field(factory=dict)
    """JSON-ready settings (what the results report)."""
    install: InstallFn = attrs.field(default=_no_install, eq=False, repr=False)
    """Applies the configuration to ``model.transformer`` of a fresh copy."""


def config_params(config: Any) -> dict[str, Any]:
    """The fields of an attrs config that differ from a default-built config of its class (so a default that the
    config settles after construction, such as TeaCache's threshold, counts as a default), as JSON-ready values."""
    reference = type(config)()
    out: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        if field.name.startswith("_"):  # a private field mirrors public ones (the nested forecast: taylorseer_*)
            continue
        value = getattr(config, field.name)
        if value == getattr(reference, field.name):
            continue
        if isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def ours(name: str, *configs: Any, family: str | None = None) -> Method:
    """A ditcache configuration: the caches of ``configs`` applied in order to ``model.transformer``.

    Each config is a :class:`~ditcache.TeaCacheConfig`, :class:`~ditcache.MagCacheConfig` or
    :class:`~ditcache.DBCacheConfig`; two of them stack (a step-level cache over DBCache). ``family`` defaults to
    the cache names joined by ``+`` (outermost first).
    """
    from ditcache.caches.dbcache import DBCacheConfig, apply_dbcache_hook
    from ditcache.caches.magcache import MagCacheConfig, apply_magcache_hook
    from ditcache.caches.teacache import TeaCacheConfig, apply_teacache_hook

    appliers: list[tuple[str, Callable[[nn.Module, Any], Any]]] = []
    for cfg in configs:
        if isinstance(cfg, TeaCacheConfig):
            appliers.append(("teacache", apply_teacache_hook))
        elif isinstance(cfg, MagCacheConfig):
            appliers.append(("magcache", apply_magcache_hook))
        elif isinstance(cfg, DBCacheConfig):
            appliers.append(("dbcache", apply_dbcache_hook))
        else:
            raise TypeError(
                f"configs: expected TeaCacheConfig, MagCacheConfig or DBCacheConfig instances, got {type(cfg).__name__}"
            )
    if not configs:
        raise ValueError("configs: give at least one cache config")
    names = [n for n, _ in appliers]
    params = {n: config_params(cfg) for n, cfg in zip(names, configs)}

    def install(model: Any, settings: EvalSettings) -> None:
        for (_, apply), cfg in zip(appliers, configs):
            apply(model.transformer, cfg)
        return None  # the sampler refreshes the caches with the step count before every run

    return Method(name, "ours", family or "+".join(names), params, install)
